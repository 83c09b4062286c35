"""Node tests with real rclpy over DDS: nodes run in this process on a multi-threaded executor."""

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from robot_rl.nodes.policy_node import PolicyNode
from robot_rl.nodes.safety_node import SafetyNode
from robot_rl.nodes.sim_bridge_node import SimBridgeNode
from robot_rl.ros import qos
from robot_rl.ros.conversions import image_to_msg, joint_state_msg, to_sec

NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
HOME = [0.0, 0.0, 0.2, -0.2, 0.0, 0.04]


@pytest.fixture
def ros():
    rclpy.init()
    executor = MultiThreadedExecutor(num_threads=4)
    thread = threading.Thread(target=executor.spin, daemon=True)
    nodes = []

    def add(node):
        nodes.append(node)
        executor.add_node(node)
        return node

    thread.start()
    yield add
    executor.shutdown(timeout_sec=1.0)
    for node in nodes:
        getattr(node, "close", lambda: None)()
        node.destroy_node()
    rclpy.shutdown()


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


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
    time.sleep(0.5)
    sources = {m.header.frame_id for m in robot.executed}
    assert sources == {"hold"}, sources
    held = {tuple(m.position) for m in robot.executed}
    assert len(held) == 1  # the arm holds one position
    robot.camera_on = True
    wait(lambda: robot.executed[-1].header.frame_id == "policy", 5, "policy resuming with fresh frames")


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
])
def test_bad_configuration_exits_non_zero_with_a_clear_message(node, args, message):
    proc = subprocess.run([sys.executable, "-m", f"robot_rl.nodes.{node}", "--ros-args", *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
