"""The ``robot-rl`` command: launch, demo, bench."""

from __future__ import annotations

import argparse
import sys


def _launch(args) -> int:
    from robot_rl.launcher import LaunchError, LaunchRunner, parse_launch, parse_overrides

    try:
        nodes = parse_launch(args.file, parse_overrides(args.args))
    except LaunchError as exc:
        print(f"robot-rl launch: {exc}", file=sys.stderr)
        return 2
    runner = LaunchRunner(nodes)
    try:
        runner.start()
    except LaunchError as exc:
        print(f"robot-rl launch: {exc}", file=sys.stderr)
        runner.stop()
        return 2
    return runner.wait()


def _demo(args) -> int:
    from robot_rl.demo import run_demo

    report = run_demo(episodes=args.episodes, policy=args.policy, rate_hz=args.rate)
    if report["processes_left"]:
        return 1
    return 0 if report["success_rate"] >= args.min_success else 1


def _bench(args) -> int:
    from robot_rl.bench import bench_loop

    if args.quick:
        args.duration, args.width, args.height = min(args.duration, 6.0), 160, 120
    bench_loop(args.json, duration=args.duration, width=args.width, height=args.height, rate_hz=args.rate, policy=args.policy)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robot-rl", description="real-robot RL on ROS 2 (see README.md)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("launch", help="run a YAML launch file: robot-rl launch FILE [name:=value ...]")
    p.add_argument("file")
    p.add_argument("args", nargs="*", help="launch arguments, name:=value")
    p.set_defaults(func=_launch)

    p = sub.add_parser("demo", help="run episodes of the simulated robot through the full ROS graph")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--policy", default="oracle", help="oracle | random")
    p.add_argument("--rate", type=float, default=10.0, help="control rate, Hz")
    p.add_argument("--min-success", type=float, default=0.0, help="exit non-zero below this success rate")
    p.set_defaults(func=_demo)

    p = sub.add_parser("bench", help="benchmarks that write JSON")
    bsub = p.add_subparsers(dest="bench", required=True)
    b = bsub.add_parser("loop", help="closed-loop latency of the sim graph")
    b.add_argument("--json", required=True)
    b.add_argument("--duration", type=float, default=30.0)
    b.add_argument("--width", type=int, default=640)
    b.add_argument("--height", type=int, default=480)
    b.add_argument("--rate", type=float, default=30.0)
    b.add_argument("--policy", default="oracle")
    b.add_argument("--quick", action="store_true", help="a few seconds at 160x120, for tests")
    b.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
