"""Node tests with real rclpy over DDS: nodes run in this process, each on its own executor thread."""

import subprocess
import sys
import time

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from robot_rl.nodes.policy_node import PolicyNode
from robot_rl.nodes.safety_node import SafetyNode
from robot_rl.nodes.sim_bridge_node import SimBridgeNode
from robot_rl.ros import qos
from robot_rl.ros.spinning import NodeSpinners
from robot_rl.policy.base import ActionChunk
from robot_rl.ros.conversions import chunk_to_msg, image_to_msg, joint_state_msg, to_sec
from tests.helpers import wait_until as wait

NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
HOME = [0.0, 0.0, 0.2, -0.2, 0.0, 0.04]


@pytest.fixture
def ros():
    """``ros(node)`` spins ``node`` on its own thread (``NodeSpinners``: one single-threaded executor per
    node, as each node spins in its own process in production) until the test ends."""
    rclpy.init()
    spinners = NodeSpinners()
    nodes = []

    def add(node):
        nodes.append(node)
        return spinners.add(node)

    yield add
    spinners.shutdown(timeout_s=5.0)
    for node in nodes:
        getattr(node, "close", lambda: None)()
        node.destroy_node()
    rclpy.shutdown()


class FakeRobot:
    """Stands in for the camera driver and the arm: publishes frames and joint states at 20 Hz."""

    def __init__(self, ros, encoding="rgb8"):
        self.node = ros(rclpy.create_node("fake_robot"))
        self.camera = self.node.create_publisher(Image, "/camera/front/color/image_raw", qos.SENSOR_PUB)
        self.joints = self.node.create_publisher(JointState, "/joint_states", qos.SENSOR_PUB)
        self.instruction = self.node.create_publisher(String, "/instruction", qos.LATCHED)
        self.executed: list[JointState] = []
        self.node.create_subscription(JointState, "/safety/command", self.executed.append, qos.COMMAND)
        self.camera_on = True
        self.encoding = encoding
        self.node.create_timer(0.05, self.tick)

    def tick(self):
        now = self.node.get_clock().now().nanoseconds * 1e-9
        self.joints.publish(joint_state_msg(NAMES, HOME, stamp=now))
        if self.camera_on:
            self.camera.publish(image_to_msg(np.zeros((24, 32, 3), np.uint8), now, "front", encoding=self.encoding))


def policy_params():
    return [Parameter("policy", value="random"), Parameter("cameras", value=["front"]),
            Parameter("control_rate_hz", value=20.0), Parameter("chunk_length", value=2)]


def test_commands_flow_and_stale_camera_makes_safety_hold(ros):
    robot = FakeRobot(ros)
    ros(PolicyNode(parameter_overrides=policy_params()))
    ros(SafetyNode(parameter_overrides=[Parameter("control_rate_hz", value=20.0)]))
    robot.instruction.publish(String(data="reach the red cube"))
    wait(lambda: sum(m.header.frame_id == "policy" for m in robot.executed) >= 5, 15, "policy commands")
    robot.camera_on = False
    time.sleep(0.6)  # > max_observation_age + one chunk
    robot.executed.clear()
    # at least 0.5 s of commands (10 at 20 Hz); a loaded CI machine once delivered none in 0.5 s, so
    # this waits for them rather than sleeping a fixed time
    time.sleep(0.5)
    wait(lambda: len(robot.executed) >= 5, 5, "commands while the camera is stale")
    executed = list(robot.executed)
    sources = {m.header.frame_id for m in executed}
    assert sources == {"hold"}, sources
    held = {tuple(m.position) for m in executed}
    assert len(held) == 1  # the arm holds one position
    robot.camera_on = True
    wait(lambda: robot.executed[-1].header.frame_id == "policy", 5, "policy resuming with fresh frames")


def test_composed_safety_takes_chunks_only_from_its_policy_node_and_still_holds_on_a_stale_camera(ros):
    """control_node's wiring: the policy hands its chunks to the safety node by a call; a chunk on
    /policy/trajectory from anyone else (here a rogue publisher) is never executed in that layout."""
    robot = FakeRobot(ros)
    safety = ros(SafetyNode(policy_chunks="direct", parameter_overrides=[Parameter("control_rate_hz", value=20.0)]))
    policy = PolicyNode(parameter_overrides=policy_params())
    policy.chunk_sink = safety.accept_chunk
    ros(policy)
    rogue = ros(rclpy.create_node("rogue"))
    rogue_pub = rogue.create_publisher(JointTrajectory, "/policy/trajectory", qos.COMMAND)
    robot.instruction.publish(String(data="reach the red cube"))
    wait(lambda: sum(m.header.frame_id == "policy" for m in robot.executed) >= 5, 15, "policy commands")
    far = [0.5, 0.5, 0.5, 0.5, 0.5, 0.0]
    for _ in range(5):
        now = rogue.get_clock().now().nanoseconds * 1e-9
        rogue_pub.publish(chunk_to_msg(ActionChunk(now, 0.05, NAMES, np.array([far]))))
        time.sleep(0.05)
    assert all(not np.allclose(m.position, far) for m in robot.executed)
    assert safety.filter.rejected == 0 and policy.chunks >= 5
    robot.camera_on = False
    time.sleep(0.6)  # > max_observation_age + one chunk
    robot.executed.clear()
    wait(lambda: len(robot.executed) >= 5, 5, "commands while the camera is stale")
    assert {m.header.frame_id for m in robot.executed} == {"hold"}


def test_wrong_image_encoding_never_moves_the_arm(ros):
    robot = FakeRobot(ros, encoding="mono16")
    policy = ros(PolicyNode(parameter_overrides=policy_params()))
    ros(SafetyNode(parameter_overrides=[Parameter("control_rate_hz", value=20.0)]))
    robot.instruction.publish(String(data="reach the red cube"))
    wait(lambda: policy.skipped.get("bad input", 0) >= 3, 10, "the policy to refuse the frames")
    assert "mono16" in policy.last_skip and "/camera/front/color/image_raw" in policy.last_skip
    assert all(m.header.frame_id != "policy" for m in robot.executed)
    assert policy.chunks == 0


def test_unknown_instruction_keeps_policy_idle(ros):
    robot = FakeRobot(ros)
    policy = ros(PolicyNode(parameter_overrides=[Parameter("policy", value="oracle"), Parameter("cameras", value=["front"])]))
    robot.instruction.publish(String(data="make me a sandwich"))
    wait(lambda: policy.instruction_error != "", 5, "instruction error")
    assert "unknown task or instruction 'make me a sandwich'" in policy.instruction_error
    time.sleep(0.3)
    assert policy.chunks == 0


def test_sim_bridge_with_gymnasium_world_publishes_the_same_topics(ros):
    frames, states = [], []
    probe = ros(rclpy.create_node("probe"))
    probe.create_subscription(Image, "/camera/pixels_front/color/image_raw", frames.append, qos.SENSOR_SUB)
    probe.create_subscription(JointState, "/joint_states", states.append, qos.SENSOR_SUB)
    bridge = ros(SimBridgeNode(parameter_overrides=[
        Parameter("world", value="gymnasium"),
        Parameter("gym_env_id", value="robot_rl.sim.gym_env:robot_rl/Tabletop-v0"),
        Parameter("control_rate_hz", value=20.0)]))
    wait(lambda: len(frames) >= 3 and len(states) >= 3, 15, "gymnasium frames and joint states")
    assert (frames[-1].height, frames[-1].width, frames[-1].encoding) == (48, 64, "rgb8")
    assert states[-1].name == [f"state_{i}" for i in range(6)]
    assert to_sec(frames[-1].header.stamp) > 0
    assert bridge.world.command_names == [f"action_{i}" for i in range(6)]


@pytest.mark.parametrize("node, args, message", [
    ("sim_bridge_node", ["-p", "task:=stack the blocks"], "unknown task or instruction 'stack the blocks'"),
    ("safety_node", ["-p", "robot_limits_file:=/nonexistent/arm.yaml"], "/nonexistent/arm.yaml does not exist"),
    ("policy_node", ["-p", "policy:=telepathy"], "unknown policy type 'telepathy'"),
    ("policy_node", ["-p", "control_rate_hz:=fast"], "parameter 'control_rate_hz' = 'fast' should be a float"),
    ("control_node", ["-p", "policy:=telepathy"], "unknown policy type 'telepathy'"),
    ("control_node", ["-p", "robot_limits_file:=/nonexistent/arm.yaml"], "/nonexistent/arm.yaml does not exist"),
    ("safety_node", ["-p", "realtime_priority:=99"], "node 'safety': parameter 'realtime_priority' = 99: expected an integer"),
    ("control_node", ["-p", "realtime_priority:=-1"], "parameter 'realtime_priority' = -1: expected an integer"),
])
def test_bad_configuration_exits_non_zero_with_a_clear_message(node, args, message):
    proc = subprocess.run([sys.executable, "-m", f"robot_rl.nodes.{node}", "--ros-args", *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout


class TwoCameras:
    """A sim-like pair of cameras: each tick the front frame, then 10 ms later the wrist frame with the
    same stamp."""

    def __init__(self, ros, rate_hz=20.0):
        self.node = ros(rclpy.create_node("two_cameras"))
        self.pubs = {c: self.node.create_publisher(Image, f"/camera/{c}/color/image_raw", qos.SENSOR_PUB)
                     for c in ("front", "wrist")}
        self.joints = self.node.create_publisher(JointState, "/joint_states", qos.SENSOR_PUB)
        self.instruction = self.node.create_publisher(String, "/instruction", qos.LATCHED)
        self.wrist_on = True
        self.wrist_sent: dict[float, float] = {}  # stamp -> when the wrist frame was published
        self.chunks: list[tuple[float, float]] = []  # (stamp, arrival)
        # a node of its own: the camera node's callbacks are mutually exclusive, and arrival times must
        # not wait for a tick to finish
        self.listener = ros(rclpy.create_node("chunk_listener"))
        self.listener.create_subscription(JointTrajectory, "/policy/trajectory",
                                          lambda m: self.chunks.append((to_sec(m.header.stamp), time.monotonic())), qos.COMMAND)
        self.node.create_timer(1.0 / rate_hz, self.tick)

    def tick(self):
        now = self.node.get_clock().now().nanoseconds * 1e-9
        frame = np.zeros((24, 32, 3), np.uint8)
        self.joints.publish(joint_state_msg(NAMES, HOME, stamp=now))
        self.pubs["front"].publish(image_to_msg(frame, now, "front"))
        if self.wrist_on:
            time.sleep(0.01)
            msg = image_to_msg(frame, now, "wrist")
            self.wrist_sent[to_sec(msg.header.stamp)] = time.monotonic()
            self.pubs["wrist"].publish(msg)


def test_policy_acts_once_per_complete_set_of_frames_and_skips_a_silent_camera(ros):
    cams = TwoCameras(ros)
    policy = ros(PolicyNode(parameter_overrides=[Parameter("policy", value="random"),
                                                 Parameter("cameras", value=["front", "wrist"])]))
    cams.instruction.publish(String(data="reach the red cube"))
    wait(lambda: len(cams.chunks) >= 10, 15, "chunks from two cameras")
    # each chunk waited for the wrist frame of its tick (not the front frame plus an older wrist one).
    # When this 2-core machine stalls the process, deliveries of the two topics can be reordered and a
    # set can pair a front frame with the wrist frame one tick older (still within max_observation_age);
    # that may happen now and then, never more than one tick apart.
    chunks = list(cams.chunks)
    # a chunk may pair this tick's front frame with the previous wrist frame while the tick is still
    # sending its own wrist frame (the 10 ms between them): let that tick finish recording it
    wait(lambda: all(stamp in cams.wrist_sent for stamp, _ in chunks), 1.0, "wrist frames of the chunks' ticks")
    own_tick = 0
    for stamp, arrived in chunks:
        assert stamp in cams.wrist_sent
        own_tick += arrived > cams.wrist_sent[stamp]
        older = [s for s in cams.wrist_sent if s < stamp]
        assert arrived > cams.wrist_sent[stamp] or (older and arrived > cams.wrist_sent[max(older)])
    assert own_tick >= 0.8 * len(cams.chunks)
    stamps = [s for s, _ in cams.chunks]
    assert len(set(stamps)) == len(stamps)
    cams.wrist_on = False
    time.sleep(0.5)  # longer than max_observation_age
    n = len(cams.chunks)
    time.sleep(0.5)
    assert len(cams.chunks) == n, "the policy must not act without the wrist camera"
    assert "no recent frame on /camera/wrist" in policy.last_skip
    cams.wrist_on = True
    wait(lambda: len(cams.chunks) > n + 3, 5, "chunks once the wrist camera is back")


@pytest.mark.parametrize("handoff", ["topic", "direct"])
def test_safety_command_stream_keeps_the_rate_when_chunks_arrive_a_little_late(ros, handoff):
    """Chunks arriving every period, each a few ms later than one period after the last, must not
    let the timer slip a hold command in just before each of them (that doubles the command rate).
    ``direct``: as in control_node, the chunk is handed to the safety node by a call from another
    thread, while the safety node's own timer runs on its executor's thread."""
    period = 0.1
    node = ros(rclpy.create_node("chunk_source"))
    chunks = node.create_publisher(JointTrajectory, "/policy/trajectory", qos.COMMAND)
    joints = node.create_publisher(JointState, "/joint_states", qos.SENSOR_PUB)
    executed: list[tuple[float, str]] = []
    recorder = ros(rclpy.create_node("executed_recorder"))  # not blocked while send() sleeps
    recorder.create_subscription(JointState, "/safety/command",
                             lambda m: executed.append((time.monotonic(), m.header.frame_id)), qos.COMMAND)
    safety = ros(SafetyNode(policy_chunks=handoff, parameter_overrides=[Parameter("control_rate_hz", value=1.0 / period)]))
    sending = {"on": True, "late": 0.0}
    sent: list[tuple[float, float]] = []  # (monotonic time of the chunk's stamp, of its publication)

    def send():
        now, stamped = node.get_clock().now().nanoseconds * 1e-9, time.monotonic()
        joints.publish(joint_state_msg(NAMES, HOME, stamp=now))
        if sending["on"]:
            # alternate 0 and 20 ms of extra delay, like a pipeline whose latency varies
            sending["late"] = 0.020 - sending["late"]
            time.sleep(sending["late"])
            chunk = ActionChunk(now, period, NAMES, np.array([HOME]))
            safety.accept_chunk(chunk) if handoff == "direct" else chunks.publish(chunk_to_msg(chunk))
            sent.append((stamped, time.monotonic()))

    node.create_timer(period, send)
    wait(lambda: sum(s == "policy" for _, s in executed) >= 10, 10, "policy commands")
    start, rejected, first_sent = len(executed), safety.filter.rejected, len(sent)
    time.sleep(3.0)
    window = executed[start:]
    # The source stalls too: a chunk published more than the designed 20 ms (+25 ms) after the previous
    # chunk's point ran out leaves the safety node nothing to send in between; that hold is right.
    chunk_gaps = sum(publish - stamp_before > period + 0.045
                     for (stamp_before, _), (_, publish) in zip(sent[first_sent - 1:], sent[first_sent:]))
    # This 2-core machine now and then stalls the whole test process for a few hundred ms (seen in
    # CI after the MuJoCo tests). A chunk the safety node then rejects as too old is rightly followed
    # by a hold, and a stalled period cannot be made up (so the rate has no lower bound here; `robot-rl
    # bench loop` measures it); any other hold, or a doubled command, is the bug this test is about.
    stale = safety.filter.rejected - rejected
    intervals = np.diff([t for t, _ in window])
    holds = sum(s == "hold" for _, s in window)
    stalls = int(np.sum(intervals > 1.5 * period))  # a chunk late past its point is dropped: a hold
    assert holds <= 2 * (stale + stalls + chunk_gaps), (holds, stale, stalls, chunk_gaps)
    assert len(window) <= 3.0 / period * 1.15, "more commands than control periods: doubled commands"
    # a stall of the recorder's own executor delays the commands it has not yet taken, which then come
    # back to back: each period a long interval swallowed may return as one short interval after it
    swallowed = int(np.sum(np.maximum(0, np.round(intervals[intervals > 1.5 * period] / period) - 1)))
    assert np.sum(intervals < 0.5 * period) <= 1 + 2 * stale + swallowed + stalls, intervals
    sending["on"] = False
    wait(lambda: executed[-1][1] == "hold", 2, "holding once chunks stop")


def test_queue_schedule_publishes_every_period_from_a_worker_thread(ros):
    robot = FakeRobot(ros)
    chunks, received = [], []
    listener = ros(rclpy.create_node("queue_listener"))
    listener.create_subscription(JointTrajectory, "/policy/trajectory",
                                 lambda m: (chunks.append(m), received.append(time.monotonic())), qos.COMMAND)
    policy = ros(PolicyNode(parameter_overrides=[
        Parameter("policy", value="random"), Parameter("cameras", value=["front"]), Parameter("control_rate_hz", value=20.0),
        Parameter("chunk_length", value=8), Parameter("schedule", value="queue"), Parameter("queue_threshold", value=3),
        Parameter("chunk_merge", value="ensemble")]))
    ros(SafetyNode(parameter_overrides=[Parameter("control_rate_hz", value=20.0)]))
    robot.instruction.publish(String(data="reach the red cube"))
    wait(lambda: sum(m.header.frame_id == "policy" for m in robot.executed) >= 10, 15, "policy commands via the queue")
    time.sleep(1.0)
    # Chunks go out every control period, inference only when the queue is low: about every 5 periods
    # with 8-step chunks and a threshold of 3 (tests/policy/test_runner.py checks the rule exactly). A
    # whole-process stall of this 2-core machine drains the queue and costs at most one extra inference
    # each, so stalls are counted from the chunk stream rather than assumed away; an inference every
    # period, the bug this catches, still fails.
    stalls = int(np.sum(np.diff(received) > 1.5 * 0.05))
    assert policy.runner.inferences <= len(chunks) / 4 + 2 * stalls + 2, (policy.runner.inferences, len(chunks), stalls)
    assert all(len(c.points) >= 1 for c in chunks)
    with pytest.raises(ValueError, match="unknown chunk merging 'blend'"):
        PolicyNode(parameter_overrides=[Parameter("policy", value="random"), Parameter("schedule", value="queue"),
                                        Parameter("chunk_merge", value="blend")])
