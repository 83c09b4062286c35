"""The recording side of the learning loop over real DDS: sim bridge, VLA policy, safety, the
simulated human on the teleop node and the episode node write RL episodes into the spool."""

import time

import numpy as np
import rclpy
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float32, String
from trajectory_msgs.msg import JointTrajectory

from robot_rl.data.episodes import list_episodes, read_episode
from robot_rl.learn.ppo import episode_decisions
from robot_rl.nodes.episode_node import EpisodeNode
from robot_rl.nodes.policy_node import PolicyNode
from robot_rl.nodes.safety_node import SafetyNode
from robot_rl.nodes.sim_bridge_node import SimBridgeNode
from robot_rl.nodes.teleop_node import TeleopNode
from robot_rl.policy.base import ActionChunk
from robot_rl.ros import qos
from robot_rl.ros.conversions import chunk_to_msg
from tests.nodes.test_nodes import ros, wait  # noqa: F401 - the fixture


def test_episodes_record_policy_decisions_and_human_takeovers_into_the_spool(ros, tiny_export, tmp_path):
    cams = ["front", "wrist"]
    sim = [Parameter("cameras", value=cams), Parameter("image_width", value=32), Parameter("image_height", value=24),
           Parameter("task", value="reach_cube")]
    ros(SimBridgeNode(parameter_overrides=sim))
    ros(PolicyNode(parameter_overrides=[Parameter("policy", value="vla"), Parameter("policy_path", value=str(tiny_export)),
                                        Parameter("backend", value="torch"), Parameter("explore", value=True)]))
    ros(SafetyNode(parameter_overrides=[Parameter("handover_s", value=0.3)]))
    # a quick-tempered simulated human: any drift over 0.05 rad for 2 ticks and it takes over for 0.6 s, then leaves the policy alone for 1 s
    teleop = ros(TeleopNode(parameter_overrides=[
        Parameter("device", value="scripted"), Parameter("scripted.threshold", value=0.05),
        Parameter("scripted.patience", value=2), Parameter("scripted.takeover_s", value=0.6),
        Parameter("scripted.cooldown_s", value=1.0)]))
    watcher = ros(rclpy.create_node("watcher"))
    executed, events, chunks = [], [], []
    watcher.create_subscription(JointState, "/safety/command", executed.append, qos.EVENTS)
    watcher.create_subscription(String, "/episode/event", lambda m: events.append(m.data), qos.EVENTS)
    watcher.create_subscription(JointTrajectory, "/policy/trajectory", chunks.append, qos.COMMAND)
    # episodes begin once the policy has answered once, as an operator starts recording after the
    # policy's warm-up: its first inference (seconds on a loaded 2-core host, in this one-process
    # graph) would otherwise leave the first episode to the quick-tempered human alone
    wait(lambda: chunks, 60, "the policy's first chunk")
    spool = tmp_path / "spool"
    ros(EpisodeNode(parameter_overrides=[
        Parameter("cameras", value=cams), Parameter("image_width", value=32), Parameter("image_height", value=24),
        Parameter("max_duration_s", value=3.0), Parameter("reset_service", value="/sim/reset"),
        Parameter("spool_dir", value=str(spool)), Parameter("robot", value="sim1")]))

    wait(lambda: len(list_episodes(spool)) >= 2, 60, "two episodes in the spool")
    assert any(e.startswith("ended") and "time_limit" in e for e in events), events
    assert teleop.device.total_interventions >= 1
    sources = {m.header.frame_id for m in executed}
    assert {"policy", "teleop", "handover"} <= sources, sources

    episodes = [read_episode(p) for p in list_episodes(spool)]
    decisions = []
    for ep in episodes:
        assert ep.meta.cameras == cams and ep.images["front"].shape[1:] == (24, 32, 3)
        assert ep.meta.extra["robot"] == "sim1" and ep.meta.task == "reach_cube"
        gaps = np.diff(ep.stamps)
        # 3 s at 10 Hz, less what a loaded host's late timers lose
        assert 12 <= len(ep) <= 40, (len(ep), gaps.round(2).tolist())
        assert gaps.min() >= 0.05 - 1e-3  # never two steps within half a period
        version, obs, chunk = (np.rint(ep.extras[k]).astype(int) for k in ("policy_version", "obs_step", "chunk_step"))
        policy = version >= 0
        assert policy.any() and (version[policy] == 0).all()
        t = np.arange(len(ep))
        assert (obs[policy] <= t[policy]).all() and (chunk[policy] >= 0).all() and (chunk[policy] < 4).all()
        assert not (policy & ep.intervention).any()  # a human step is never a policy decision
        decisions.append(len(episode_decisions(ep, np.zeros(len(ep)), horizon=4, gamma=0.99)))
    assert min(decisions) >= 1 and sum(decisions) >= 3, decisions  # the learner finds chunks to learn from
    assert sum(int(ep.intervention.sum()) for ep in episodes) >= 3


def test_gamepad_through_joy_engages_jogs_and_marks_events_and_episodes_follow_services(ros, tmp_path):
    from sensor_msgs.msg import Joy
    from std_msgs.msg import Bool
    from std_srvs.srv import Trigger

    ros(SimBridgeNode(parameter_overrides=[Parameter("cameras", value=["front"]), Parameter("image_width", value=32),
                                           Parameter("image_height", value=24), Parameter("task", value="reach_cube")]))
    ros(SafetyNode(parameter_overrides=[Parameter("handover_s", value=0.0)]))
    ros(TeleopNode(parameter_overrides=[Parameter("device", value="joy")]))
    spool = tmp_path / "spool"
    ros(EpisodeNode(parameter_overrides=[
        Parameter("cameras", value=["front"]), Parameter("image_width", value=32), Parameter("image_height", value=24),
        Parameter("auto_start", value=False), Parameter("spool_dir", value=str(spool))]))
    pad = ros(rclpy.create_node("gamepad"))
    joy = pad.create_publisher(Joy, "/joy", qos.SENSOR_PUB)
    engaged, commands, events, joints = [], [], [], []
    pad.create_subscription(Bool, "/teleop/engaged", lambda m: engaged.append(m.data), qos.COMMAND)
    pad.create_subscription(JointState, "/teleop/command", commands.append, qos.COMMAND)
    pad.create_subscription(String, "/teleop/event", lambda m: events.append(m.data), qos.EVENTS)
    pad.create_subscription(JointState, "/joint_states", joints.append, qos.SENSOR_SUB)
    start, stop = pad.create_client(Trigger, "/episode/start"), pad.create_client(Trigger, "/episode/stop")
    wait(lambda: joints and start.service_is_ready() and engaged, 20, "graph up")

    def call(client):
        future = client.call_async(Trigger.Request())
        wait(future.done, 10, "service answered")
        return future.result()

    assert not call(stop).success  # nothing recorded yet
    assert call(start).success
    assert not call(start).success  # one episode at a time
    axes, buttons = [0.0] * 8, [0] * 11
    buttons[4], axes[0] = 1, 1.0  # LB held, left stick right: shoulder_pan at 0.6 rad/s
    first = np.array(joints[-1].position)[0]
    t = 0
    while t < 30 and abs(np.array(joints[-1].position)[0] - first) < 0.3:
        joy.publish(Joy(axes=axes, buttons=buttons))
        wait(lambda n=len(commands): len(commands) > n, 5, "a teleop command")
        t += 1
    assert engaged[-1] and abs(np.array(joints[-1].position)[0] - first) >= 0.3  # the human drove the arm
    buttons[4], axes[0] = 0, 0.0
    joy.publish(Joy(axes=axes, buttons=buttons))
    wait(lambda: engaged[-1] is False, 5, "let go: control back to the policy")
    assert "stopped" in call(stop).message
    episodes = list_episodes(spool)
    assert len(episodes) == 1
    ep = read_episode(episodes[0])
    assert ep.intervention.sum() >= 3 and ep.meta.extra["outcome"] == "stopped"
    assert call(start).success
    time.sleep(0.6)  # a few steps (shorter episodes are discarded)
    buttons[0] = 1  # A: success ends the episode
    joy.publish(Joy(axes=axes, buttons=buttons))
    wait(lambda: "success" in events, 5, "the success mark")
    wait(lambda: len(list_episodes(spool)) == 2, 10, "the marked episode in the spool")
    marked = [read_episode(p) for p in list_episodes(spool)][-1]
    assert marked.meta.extra["outcome"] == "success"


def test_the_human_on_stall_reads_sim_progress_and_finishes_what_a_stuck_policy_cannot(ros):  # noqa: F811
    ros(SimBridgeNode(parameter_overrides=[Parameter("cameras", value=["front"]), Parameter("image_width", value=32),
                                           Parameter("image_height", value=24), Parameter("task", value="reach_cube")]))
    ros(SafetyNode(parameter_overrides=[Parameter("handover_s", value=0.0)]))
    teleop = ros(TeleopNode(parameter_overrides=[
        Parameter("device", value="scripted"), Parameter("scripted.trigger", value="stall"),
        Parameter("scripted.stall_s", value=1.0), Parameter("scripted.takeover_s", value=4.0)]))
    policy = ros(rclpy.create_node("stuck_policy"))
    chunks = policy.create_publisher(JointTrajectory, "/policy/trajectory", qos.COMMAND)
    joints, progress, success, seen_before_takeover = [], [], [], []

    def on_engaged(msg):
        if msg.data and not seen_before_takeover:
            seen_before_takeover.append(list(progress))

    policy.create_subscription(JointState, "/joint_states", joints.append, qos.SENSOR_SUB)
    policy.create_subscription(Float32, "/sim/progress", lambda m: progress.append(m.data), qos.SENSOR_SUB)
    policy.create_subscription(Bool, "/teleop/engaged", on_engaged, qos.COMMAND)
    policy.create_subscription(Bool, "/sim/success", lambda m: success.append(m.data), qos.COMMAND)

    def stuck():  # a policy that keeps commanding where the arm was when it first saw it
        if joints:
            now = policy.get_clock().now().nanoseconds * 1e-9
            chunks.publish(chunk_to_msg(ActionChunk(now, 0.1, list(joints[0].name), np.array([joints[0].position] * 4))))

    policy.create_timer(0.1, stuck)
    wait(lambda: len(progress) >= 5, 20, "/sim/progress")
    wait(lambda: seen_before_takeover, 20, "the human taking over a stuck policy")
    before = seen_before_takeover[0]
    assert len(before) >= 5 and max(before) < 0.1  # stuck for a while: no progress before the take-over
    wait(lambda: any(success), 20, "the human finishing the reach")
    assert 0.0 <= min(progress) and max(progress) == 1.0
    assert teleop.device.total_interventions >= 1 and teleop.device.config.trigger == "stall"
