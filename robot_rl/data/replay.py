"""``robot-rl replay``: a recorded real episode through the policy and reward nodes, before the policy
moves a real arm.

The episode (an episode directory, a dataset of episodes, a ROS 2 bag, converted as
``robot-rl convert bag`` would, or a LeRobotDataset, read by the lerobot environment) is played into a real ROS graph in this process: ``policy_node`` and
``reward_node`` run as they do on the robot, with ``use_sim_time``, and a replay driver publishes
``/clock``, ``/instruction``, ``/joint_states`` and the camera frames with the *recorded* stamps. Steps
go in lock-step: step i's observation is published, then the driver waits for the chunk stamped with
it, so a slow CPU changes how long the replay takes, never what the policy saw. Nothing commands a
robot: there is no safety node and no driver in this graph.

Output (``--out``): ``replay.json`` with the policy's first action against the recorded one per step
(mean absolute error per joint, p50/p95/max of the worst joint, apart for the human's steps and the
policy's), the open-loop error of each chunk position against the recorded actions that followed,
the critic's value and done probability per scored frame, and ``replay.png``: the value curve over
the real frames (human takeovers shaded) above the recorded and proposed joint targets.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from robot_rl.data.episodes import Episode, list_episodes, read_episode


@dataclass
class ReplayConfig:
    policy: str = "vla"
    policy_path: str = ""  # default: policies/sim_default of this package
    backend: str = "auto"
    critic: str = ""  # default: policies/sim_critic; "none": no reward node
    critic_backend: str = "auto"
    allow_unseen_instructions: bool = False
    robot_limits_file: str = ""  # joint order of the policy (default: calibration/sim_arm.yaml)
    stride_s: float = 0.2  # the critic's pair stride
    step_timeout_s: float = 10.0  # waiting for one chunk (the first inference loads the model)
    settle_s: float = 3.0  # after the last step, for the critic to catch up


def load_episode(source: str | Path, index: int = 0, log=print) -> Episode:
    """An episode directory, the index-th episode of a dataset directory, or of a ROS 2 bag."""
    path = Path(source)
    if (path / "meta.json").is_file():
        return read_episode(path)
    if (path / "metadata.yaml").is_file() or path.suffix in (".mcap", ".db3"):
        from robot_rl.data.bags import bag_to_episodes

        episodes = bag_to_episodes(path, None, log=log)
        kind = "bag"
    elif path.is_dir() and (path / "meta" / "info.json").is_file():
        episodes = _from_lerobot(path, log)
        kind = "LeRobotDataset"
    elif path.is_dir():
        episodes = list_episodes(path)
        kind = "dataset"
    else:
        raise FileNotFoundError(f"{path}: no episode, dataset or bag there")
    if not 0 <= index < len(episodes):
        raise ValueError(f"{path}: {kind} has {len(episodes)} episodes, no index {index}")
    chosen = episodes[index]
    return chosen if isinstance(chosen, Episode) else read_episode(chosen)


def _from_lerobot(path: Path, log) -> list[Episode]:
    """A LeRobotDataset's episodes, converted by the lerobot environment (robot-rl convert from-lerobot)."""
    import os
    import subprocess
    import tempfile

    from robot_rl.data.lerobot_format import lerobot_python

    python = lerobot_python()
    if python is None or not os.path.exists(python):
        raise ValueError(f"{path}: a LeRobotDataset, and there is no lerobot environment to read it "
                         "(make lerobot-env, or robot-rl convert from-lerobot on a machine that has one)")
    with tempfile.TemporaryDirectory(prefix="replay_lerobot_") as tmp:
        done = subprocess.run([python, "-m", "robot_rl.data.lerobot_format", "import", str(path), "--out", tmp],
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
        if done.returncode != 0:
            raise ValueError(f"{path}: the lerobot environment could not read it: {done.stderr.strip()[-2000:]}")
        log(f"{path}: read through the lerobot environment")
        return [read_episode(p) for p in list_episodes(tmp)]


def _errors(proposed: np.ndarray, recorded: np.ndarray, mask: np.ndarray) -> dict:
    ok = mask & ~np.isnan(proposed).any(axis=1)
    if not ok.any():
        return {"steps": 0}
    diff = np.abs(proposed[ok] - recorded[ok])
    worst = diff.max(axis=1)
    return {"steps": int(ok.sum()), "mae_per_joint": diff.mean(axis=0).round(5).tolist(), "mae": float(diff.mean()),
            "worst_joint_p50": float(np.percentile(worst, 50)), "worst_joint_p95": float(np.percentile(worst, 95)),
            "worst_joint_max": float(worst.max())}


def compare(episode: Episode, chunks: dict[int, np.ndarray], rewards: list[tuple[float, float, float, float]]) -> dict:
    """The report: ``chunks`` step -> (H, J) proposed targets; ``rewards`` (stamp, delta, value, done_prob)."""
    t, j = episode.actions.shape
    first = np.full((t, j), np.nan)
    for step, chunk in chunks.items():
        first[step] = chunk[0]
    horizon = max((len(c) for c in chunks.values()), default=0)
    open_loop = []
    for h in range(horizon):
        diffs = [np.abs(c[h] - episode.actions[s + h]).mean() for s, c in chunks.items() if h < len(c) and s + h < t]
        open_loop.append(float(np.mean(diffs)) if diffs else None)
    human = episode.intervention.astype(bool)
    stamps = episode.stamps
    values = []
    for stamp, delta, value, done in rewards:
        step = int(np.clip(np.searchsorted(stamps, stamp + 1e-6) - 1, 0, t - 1))
        values.append({"step": step, "stamp": stamp, "delta": delta, "value": value, "done_prob": done})
    return {"episode": episode.meta.episode_id, "instruction": episode.meta.instruction, "steps": t,
            "joint_names": list(episode.meta.joint_names), "chunks_received": len(chunks),
            "missing_steps": [s for s in range(t) if s not in chunks][:50],
            "first_action": {"all": _errors(first, episode.actions, np.ones(t, bool)),
                             "policy_steps": _errors(first, episode.actions, ~human),
                             "human_steps": _errors(first, episode.actions, human)},
            "open_loop_mae_by_chunk_position": open_loop, "critic": values,
            "final_value": values[-1]["value"] if values else None,
            "max_done_prob": max((v["done_prob"] for v in values), default=None)}


def plot(report: dict, episode: Episode, chunks: dict[int, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = episode.stamps[0]
    seconds = episode.stamps - t0
    joints = min(6, episode.actions.shape[1])
    fig, axes = plt.subplots(1 + joints, 1, figsize=(9, 2.2 + 1.3 * joints), sharex=True)
    ax = axes[0]
    human = episode.intervention.astype(bool)
    for s in np.flatnonzero(human):
        ax.axvspan(seconds[s], seconds[min(s + 1, len(seconds) - 1)] + 1e-3, color="orange", alpha=0.25, lw=0)
    if report["critic"]:
        xs = [v["stamp"] - t0 for v in report["critic"]]
        ax.plot(xs, [v["value"] for v in report["critic"]], label="critic value (progress)")
        ax.plot(xs, [v["done_prob"] for v in report["critic"]], "--", label="done probability")
    ax.set_ylabel("critic")
    ax.set_title(f"replay of {episode.meta.episode_id}: '{episode.meta.instruction}' (orange: human in control)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    steps = sorted(chunks)
    for k in range(joints):
        ax = axes[1 + k]
        ax.plot(seconds, episode.actions[:, k], label="recorded")
        ax.plot(seconds[steps], [chunks[s][0][k] for s in steps], ".", ms=3, label="policy (replay)")
        ax.set_ylabel(episode.meta.joint_names[k], fontsize=7)
    axes[1].legend(fontsize=7, loc="upper left")
    axes[-1].set_xlabel("seconds since the first frame")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _has_clock_and_joints(policy_node, stamp: float) -> bool:
    from robot_rl.ros.conversions import to_sec

    joints = policy_node.joints
    return (policy_node.get_clock().now().nanoseconds >= int(round(stamp * 1e9)) and joints is not None
            and abs(to_sec(joints.header.stamp) - stamp) < 1e-9)


def replay(episode: Episode, config: ReplayConfig, out_dir: str | Path | None = None, log=print) -> dict:
    """Play ``episode`` through policy_node and reward_node (see the module docstring); returns the report."""
    import rclpy
    from rclpy.parameter import Parameter
    from rosgraph_msgs.msg import Clock
    from std_msgs.msg import Float32MultiArray, String
    from trajectory_msgs.msg import JointTrajectory
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image, JointState

    from robot_rl.nodes.policy_node import PolicyNode
    from robot_rl.nodes.reward_node import RewardNode
    from robot_rl.ros import qos
    from robot_rl.ros.spinning import NodeSpinners
    from robot_rl.ros.conversions import image_to_msg, joint_state_msg, msg_to_chunk, to_stamp
    from robot_rl.safety.limits import in_joint_order

    m = episode.meta
    sim_time = Parameter("use_sim_time", value=True)
    own_context = not rclpy.ok()
    if own_context:
        rclpy.init()
    spinners = NodeSpinners()  # one executor thread per node, as separate processes would be
    nodes = []
    chunks: dict[int, np.ndarray] = {}
    rewards: list[tuple[float, float, float, float]] = []
    statuses: dict[str, str] = {}
    step_of = {int(round(s * 1e9)): i for i, s in enumerate(episode.stamps)}
    arrived = threading.Event()
    try:
        policy_params = [sim_time, Parameter("policy", value=config.policy), Parameter("cameras", value=list(m.cameras)),
                         Parameter("instruction", value=m.instruction), Parameter("resize_images", value=True),
                         Parameter("backend", value=config.backend), Parameter("control_rate_hz", value=float(m.control_rate_hz)),
                         Parameter("max_observation_age", value=1e6)]  # recorded time: age is not the replay's concern
        if config.policy_path:
            policy_params.append(Parameter("policy_path", value=config.policy_path))
        if config.robot_limits_file:
            policy_params.append(Parameter("robot_limits_file", value=config.robot_limits_file))
        nodes.append(PolicyNode(parameter_overrides=policy_params))
        if config.critic != "none":
            reward_params = [sim_time, Parameter("instruction", value=m.instruction), Parameter("stride_s", value=config.stride_s),
                             Parameter("backend", value=config.critic_backend),
                             Parameter("allow_unseen_instructions", value=config.allow_unseen_instructions)]
            if config.critic:
                reward_params.append(Parameter("critic", value=config.critic))
            nodes.append(RewardNode(parameter_overrides=reward_params))
        driver = rclpy.create_node("replay")
        nodes.append(driver)
        clock = driver.create_publisher(Clock, "/clock", qos.SENSOR_PUB)
        joints = driver.create_publisher(JointState, "/joint_states", qos.SENSOR_PUB)
        cameras = {c: driver.create_publisher(Image, f"/camera/{c}/color/image_raw", qos.SENSOR_PUB) for c in m.cameras}
        instruction = driver.create_publisher(String, "/instruction", qos.LATCHED)

        def on_chunk(msg: JointTrajectory) -> None:
            chunk = msg_to_chunk(msg, "/policy/trajectory")
            step = step_of.get(int(round(chunk.stamp * 1e9)))
            if step is not None:
                chunks[step] = in_joint_order(chunk.joint_names, chunk.positions, list(m.joint_names), "/policy/trajectory")
                arrived.set()

        def on_reward(msg: Float32MultiArray) -> None:
            label = msg.layout.dim[0].label if msg.layout.dim else ""
            stamp = float(label.split("=", 1)[1]) if label.startswith("stamp=") else float("nan")
            rewards.append((stamp, float(msg.data[0]), float(msg.data[1]), float(msg.data[2])))

        def on_status(msg: DiagnosticArray) -> None:
            for status in msg.status:
                statuses[status.name] = {"message": status.message, **{kv.key: kv.value for kv in status.values}}

        driver.create_subscription(JointTrajectory, "/policy/trajectory", on_chunk, qos.EVENTS)
        driver.create_subscription(Float32MultiArray, "/reward/progress", on_reward, qos.EVENTS)
        driver.create_subscription(DiagnosticArray, "/policy/status", on_status, qos.STATUS)
        driver.create_subscription(DiagnosticArray, "/reward/status", on_status, qos.STATUS)
        for node in nodes:
            spinners.add(node)
        instruction.publish(String(data=m.instruction))
        # every connection matched before the first step, so that step 0 is not lost to discovery
        listeners = len(nodes) - 1
        connected = [lambda: joints.get_subscription_count() >= 1, lambda: nodes[0].chunk_pub.get_subscription_count() >= 1]
        connected += [lambda p=p: p.get_subscription_count() >= listeners for p in cameras.values()]
        if config.critic != "none":
            connected.append(lambda: nodes[1].progress_pub.get_subscription_count() >= 1)
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline and not all(check() for check in connected):
            time.sleep(0.02)
        log(f"replaying {m.episode_id}: {len(episode)} steps, cameras {m.cameras}, '{m.instruction}'")
        missed = 0
        for i, stamp in enumerate(episode.stamps):
            arrived.clear()
            clock.publish(Clock(clock=to_stamp(float(stamp))))
            joints.publish(joint_state_msg(list(m.joint_names), episode.joint_positions[i], stamp=float(stamp)))
            # the policy node drops frames that arrive before its clock and joints (as it would live):
            # in a replay they are sent in order, so wait until it has them (topics are not ordered)
            synced = time.monotonic() + 2.0
            while time.monotonic() < synced and not _has_clock_and_joints(nodes[0], float(stamp)):
                time.sleep(0.001)
            for cam, pub in cameras.items():
                pub.publish(image_to_msg(episode.images[cam][i], float(stamp), cam))
            timeout = config.step_timeout_s if missed < 3 else 1.0  # a policy that stopped answering: do not wait long
            wait_until = time.monotonic() + timeout
            while i not in chunks and time.monotonic() < wait_until:
                arrived.wait(0.05)
            missed = 0 if i in chunks else missed + 1
        if config.critic != "none":
            last = float(episode.stamps[-1])
            wait_until = time.monotonic() + config.settle_s
            while time.monotonic() < wait_until and not any(abs(r[0] - last) < 1e-6 for r in rewards):
                time.sleep(0.05)
    finally:
        spinners.shutdown(timeout_s=5.0)  # out of their wait sets before the nodes and the context go
        for node in nodes:
            getattr(node, "close", lambda: None)()
            node.destroy_node()
        if own_context and rclpy.ok():
            rclpy.shutdown()
    report = compare(episode, chunks, sorted(r for r in rewards if r[0] == r[0]))
    report["status"] = statuses
    report["config"] = asdict(config)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "replay.json").write_text(json.dumps(report, indent=2))
        plot(report, episode, chunks, out / "replay.png")
        report["files"] = [str(out / "replay.json"), str(out / "replay.png")]
    return report
