"""The recording side of the learning loop over real DDS: sim bridge, VLA policy, safety, the
simulated human on the teleop node and the episode node write RL episodes into the spool."""

import numpy as np
import rclpy
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from robot_rl.data.episodes import list_episodes, read_episode
from robot_rl.learn.ppo import episode_decisions
from robot_rl.nodes.episode_node import EpisodeNode
from robot_rl.nodes.policy_node import PolicyNode
from robot_rl.nodes.safety_node import SafetyNode
from robot_rl.nodes.sim_bridge_node import SimBridgeNode
from robot_rl.nodes.teleop_node import TeleopNode
from robot_rl.ros import qos
from tests.nodes.test_nodes import ros, wait  # noqa: F401 - the fixture


def test_episodes_record_policy_decisions_and_human_takeovers_into_the_spool(ros, tiny_export, tmp_path):
    cams = ["front", "wrist"]
    sim = [Parameter("cameras", value=cams), Parameter("image_width", value=32), Parameter("image_height", value=24),
           Parameter("task", value="reach_cube")]
    ros(SimBridgeNode(parameter_overrides=sim))
    ros(PolicyNode(parameter_overrides=[Parameter("policy", value="vla"), Parameter("policy_path", value=str(tiny_export)),
                                        Parameter("backend", value="torch"), Parameter("explore", value=True)]))
    ros(SafetyNode(parameter_overrides=[Parameter("handover_s", value=0.3)]))
    # a quick-tempered simulated human: any drift over 0.05 rad for 2 ticks and it takes over for 0.6 s
    teleop = ros(TeleopNode(parameter_overrides=[
        Parameter("device", value="scripted"), Parameter("scripted.threshold", value=0.05),
        Parameter("scripted.patience", value=2), Parameter("scripted.takeover_s", value=0.6),
        Parameter("scripted.cooldown_s", value=0.5)]))
    spool = tmp_path / "spool"
    ros(EpisodeNode(parameter_overrides=[
        Parameter("cameras", value=cams), Parameter("image_width", value=32), Parameter("image_height", value=24),
        Parameter("max_duration_s", value=3.0), Parameter("reset_service", value="/sim/reset"),
        Parameter("spool_dir", value=str(spool)), Parameter("robot", value="sim1")]))
    watcher = ros(rclpy.create_node("watcher"))
    executed, events = [], []
    watcher.create_subscription(JointState, "/safety/command", executed.append, qos.EVENTS)
    watcher.create_subscription(String, "/episode/event", lambda m: events.append(m.data), qos.EVENTS)

    wait(lambda: len(list_episodes(spool)) >= 2, 60, "two episodes in the spool")
    assert any(e.startswith("ended") and "time_limit" in e for e in events), events
    assert teleop.device.total_interventions >= 1
    sources = {m.header.frame_id for m in executed}
    assert {"policy", "teleop", "handover"} <= sources, sources

    episodes = [read_episode(p) for p in list_episodes(spool)]
    for ep in episodes:
        assert ep.meta.cameras == cams and ep.images["front"].shape[1:] == (24, 32, 3)
        assert ep.meta.extra["robot"] == "sim1" and ep.meta.task == "reach_cube"
        assert 20 <= len(ep) <= 40  # 3 s at 10 Hz, give or take the edges
        version, obs, chunk = (np.rint(ep.extras[k]).astype(int) for k in ("policy_version", "obs_step", "chunk_step"))
        policy = version >= 0
        assert policy.any() and (version[policy] == 0).all()
        t = np.arange(len(ep))
        assert (obs[policy] <= t[policy]).all() and (chunk[policy] >= 0).all() and (chunk[policy] < 4).all()
        assert not (policy & ep.intervention).any()  # a human step is never a policy decision
        decisions = episode_decisions(ep, np.zeros(len(ep)), horizon=4, gamma=0.99)
        assert len(decisions) >= 5
    assert sum(int(ep.intervention.sum()) for ep in episodes) >= 3
