"""``robot-rl record | convert | replay``: data in the ecosystem's formats, on the command line.

- ``record``: topics of the running graph into an MCAP ROS 2 bag (``record_node``).
- ``convert bag``: a bag into episodes (as-of alignment, :mod:`robot_rl.data.bags`).
- ``convert to-lerobot`` / ``convert from-lerobot``: episodes to and from a LeRobotDataset (v3), run in
  the separate lerobot environment (:mod:`robot_rl.data.lerobot_format`).
- ``replay``: a recorded episode or bag through the policy and reward nodes (:mod:`robot_rl.data.replay`).
"""

from __future__ import annotations

import json
import sys


def add_parsers(sub) -> None:
    p = sub.add_parser("record", help="record topics of the running graph into an MCAP ROS 2 bag (Ctrl-C stops)")
    p.add_argument("output", help="bag directory to create")
    p.add_argument("--topics", nargs="*", default=[], help="topic names (default: every topic but /rosout and "
                                                           "/parameter_events, including ones that appear later)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (default: Ctrl-C)")
    p.add_argument("--use-sim-time", action="store_true", help="log times from /clock (a simulated graph)")
    p.set_defaults(func=_record)

    p = sub.add_parser("convert", help="episodes from a ROS 2 bag, to and from a LeRobotDataset")
    csub = p.add_subparsers(dest="convert", required=True)
    c = csub.add_parser("bag", help="a ROS 2 bag (MCAP or sqlite3) -> episodes, one step per executed command")
    c.add_argument("bag")
    c.add_argument("--out", required=True, help="dataset directory for the episodes")
    c.add_argument("--cameras", nargs="*", default=[], help="camera names (default: every /camera/<name>/color/image_raw)")
    c.add_argument("--size", default="", help="WxH to resize frames to (default: as recorded)")
    c.add_argument("--rate", type=float, default=10.0, help="control rate of the commands, Hz")
    c.add_argument("--command-topic", default="/safety/command", help="the executed commands (JointState): the step clock")
    c.add_argument("--command-source", default="", help="policy | teleop: the commands' author when their "
                                                          "header.frame_id does not say (e.g. a leader arm's topic)")
    c.add_argument("--joints-topic", default="/joint_states")
    c.add_argument("--instruction", default="", help="when the bag has no /instruction message")
    c.add_argument("--task", default="")
    c.set_defaults(func=_convert_bag)
    c = csub.add_parser("to-lerobot", help="episodes -> a new LeRobotDataset v3 (runs in the lerobot environment)")
    c.add_argument("episodes", help="dataset directory of episodes")
    c.add_argument("--out", required=True, help="LeRobotDataset root to create")
    c.add_argument("--repo-id", default="local/robot_rl")
    c.add_argument("--images", default="video", choices=["video", "png"],
                   help="video: AV1 (LeRobot's default, lossy); png: lossless images")
    c.set_defaults(func=_convert_lerobot)
    c = csub.add_parser("from-lerobot", help="a LeRobotDataset v3 -> episodes (runs in the lerobot environment)")
    c.add_argument("dataset", help="LeRobotDataset root (meta/info.json inside)")
    c.add_argument("--out", required=True, help="dataset directory for the episodes")
    c.add_argument("--repo-id", default="local/robot_rl")
    c.set_defaults(func=_convert_lerobot)

    p = sub.add_parser("replay", help="a recorded episode or bag through the policy and reward nodes: actions "
                                      "compared with the recorded ones, the critic's value curve plotted")
    p.add_argument("source", help="an episode directory, a dataset of episodes, a ROS 2 bag or a LeRobotDataset")
    p.add_argument("--episode", type=int, default=0, help="which episode of a dataset or bag")
    p.add_argument("--out", default="replay", help="folder for replay.json and replay.png")
    p.add_argument("--policy", default="vla")
    p.add_argument("--policy-path", default="", help="exported policy directory (default: policies/sim_default)")
    p.add_argument("--backend", default="auto", help="auto | torch | onnxruntime | tensorrt")
    p.add_argument("--critic", default="", help="critic export or checkpoint (default: policies/sim_critic); none: no critic")
    p.add_argument("--allow-unseen-instructions", action="store_true")
    p.add_argument("--robot-limits", default="", help="the robot's limits YAML (its joint order)")
    p.set_defaults(func=_replay)


def _record(args) -> int:
    from robot_rl.nodes.record_node import main

    ros_args = ["robot-rl-record", "--ros-args", "-p", f"output:={args.output}",
                "-p", f"topics:={' '.join(args.topics)}", "-p", f"duration_s:={float(args.duration)}"]
    if args.use_sim_time:
        ros_args += ["-p", "use_sim_time:=true"]
    return main(ros_args)


def _convert_bag(args) -> int:
    from robot_rl.data.bags import BagConversion, BagError, bag_to_episodes

    width = height = 0
    if args.size:
        try:
            width, height = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            print(f"robot-rl convert bag: --size {args.size!r}: expected WxH, e.g. 128x96", file=sys.stderr)
            return 2
    conversion = BagConversion(cameras=args.cameras, image_width=width, image_height=height, control_rate_hz=args.rate,
                               command_topic=args.command_topic, command_source=args.command_source,
                               joints_topic=args.joints_topic, instruction=args.instruction, task=args.task)
    try:
        episodes = bag_to_episodes(args.bag, args.out, conversion)
    except (BagError, FileExistsError) as exc:
        print(f"robot-rl convert bag: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"bag": args.bag, "out": args.out, "episodes": [
        {"id": e.meta.episode_id, "steps": len(e), "instruction": e.meta.instruction, "source": e.meta.source,
         "intervened_steps": int(e.intervention.sum())} for e in episodes]}, indent=2))
    return 0 if episodes else 1


def _convert_lerobot(args) -> int:
    """Run :mod:`robot_rl.data.lerobot_format` with the lerobot environment's Python."""
    import os
    import subprocess

    from robot_rl.data.lerobot_format import lerobot_python

    python = lerobot_python()
    if python is None or not os.path.exists(python):
        where = python or ".venv-lerobot/bin/python"
        print(f"robot-rl convert {args.convert}: no lerobot environment at {where}; create it with `make lerobot-env` "
              "or point ROBOT_RL_LEROBOT_PYTHON at a Python that has lerobot", file=sys.stderr)
        return 2
    if args.convert == "to-lerobot":
        command = ["export", args.episodes, "--out", args.out, "--repo-id", args.repo_id, "--images", args.images]
    else:
        command = ["import", args.dataset, "--out", args.out, "--repo-id", args.repo_id]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([python, "-m", "robot_rl.data.lerobot_format", *command], env=env).returncode


def _replay(args) -> int:
    from robot_rl.data.bags import BagError
    from robot_rl.data.episodes import EpisodeFormatError
    from robot_rl.data.replay import ReplayConfig, load_episode, replay

    try:
        episode = load_episode(args.source, args.episode)
        report = replay(episode, ReplayConfig(policy=args.policy, policy_path=args.policy_path, backend=args.backend,
                                              critic=args.critic, allow_unseen_instructions=args.allow_unseen_instructions,
                                              robot_limits_file=args.robot_limits), args.out)
    except (BagError, EpisodeFormatError, ValueError, FileNotFoundError) as exc:
        print(f"robot-rl replay: {exc}", file=sys.stderr)
        return 2
    first = report["first_action"]["all"]
    print(json.dumps({"episode": report["episode"], "steps": report["steps"], "chunks_received": report["chunks_received"],
                      "first_action_mae": first.get("mae"), "worst_joint_p95": first.get("worst_joint_p95"),
                      "final_value": report["final_value"], "files": report.get("files")}, indent=2))
    return 0 if report["chunks_received"] else 1
