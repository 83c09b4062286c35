"""``robot-rl bench learner``: what one learner update costs on each device, and whether devices agree.

The learning benchmark's HIL arm spends most of its wall time in the learner (about 27 s per update
on 2 CPU cores beside the actor and the evaluator), and a user with a GPU box wants to know what the
GPU buys. This benchmark measures the update itself, on the same batch for every device:

1. Episodes: the starting policy acts in the MuJoCo tabletop with exploration noise (``SimActor``,
   ``execute_steps`` as the learning benchmark), every task in turn, as version 0. Or, where MuJoCo
   is not installed (a bare GPU machine), episodes recorded before (``--episodes-dir``: the first
   ``episodes`` of a directory written with ``--save-episodes``, or any robot_rl episodes the
   starting policy acted as version 0).
2. Per device (``cpu``, ``cuda``, ...): a fresh ``Learner`` on that device (``device`` setting,
   ``learn/device.py``) with the HIL arm's settings (PPO, the demo phase of ``HIL_DEMO_PHASE`` on a
   demo buffer holding the episodes' steps, the value fit), one warm-up update, then ``repeats``
   timed updates of the same batch. Staleness is switched off so that every repeat learns from the
   same episodes, and so are publishing and checkpointing (disk writes, the same on any device). The critic scores on the CPU in every case, as it does in the learner; its share
   is timed separately (``prepare_ms``).
3. Agreement: the weights after the first update on each device against the CPU's (max |diff| per
   tensor and the largest relative to the tensor's scale). Float reductions differ between devices,
   so this is reported, not asserted; a large number means a device computes something else.

JSON: per device ``update_ms`` {p50, p99, mean, max, n}, ``prepare_ms``, ``speedup_vs_cpu`` (CPU's
p50 over the device's, both measured in this run), ``weights_vs_cpu``; and the machine.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from robot_rl.stats import summarise


@dataclass
class LearnerBenchConfig:
    policy: str = "policies/sim_default"
    critic: str = "policies/sim_critic"
    devices: list[str] = field(default_factory=lambda: ["cpu", "cuda"])
    episodes: int = 5  # one update's worth (the learning benchmark's episodes_per_update)
    repeats: int = 10
    execute_steps: int = 4
    max_steps: int | None = None  # per episode (None: the task's time limit)
    threads: int = 0  # PyTorch CPU threads (0: PyTorch's default)
    seed: int = 0
    ppo: dict = field(default_factory=dict)  # on top of the HIL arm's settings (--quick: fewer demo and value steps)
    episodes_dir: str = ""  # read the episodes from here instead of simulating them
    save_episodes: str = ""  # write the simulated episodes here (to bench a machine without MuJoCo later)


def collect_episodes(config: LearnerBenchConfig) -> list:
    """``config.episodes`` episodes of the starting policy with exploration noise, tasks in turn (or
    the first of ``config.episodes_dir``)."""
    from robot_rl.data.episodes import list_episodes, read_episode

    if config.episodes_dir:
        paths = list_episodes(config.episodes_dir)[:config.episodes]
        if len(paths) < config.episodes:
            raise ValueError(f"--episodes-dir {config.episodes_dir}: {len(paths)} episodes, the benchmark needs "
                             f"{config.episodes}")
        return [read_episode(p) for p in paths]
    from robot_rl.inference.backends import read_metadata
    from robot_rl.learn.actor import SimActor
    from robot_rl.policy.base import PolicyConfig, make_policy
    from robot_rl.sim.tasks import TASKS

    meta = read_metadata(Path(config.policy))
    policy = make_policy(PolicyConfig(type="vla", options={"path": config.policy, "backend": "torch", "explore": True,
                                                           "explore_seed": config.seed}))
    policy.version_number = 0
    actor = SimActor(policy, meta["cameras"], meta["image_width"], meta["image_height"],
                     control_rate_hz=float(meta.get("control_rate_hz", 10.0)), execute_steps=config.execute_steps)
    tasks = sorted(TASKS)
    try:
        return [actor.episode(tasks[i % len(tasks)], 500_000 + config.seed * 1000 + i, max_steps=config.max_steps)
                for i in range(config.episodes)]
    finally:
        actor.close()


def _learner(config: LearnerBenchConfig, device: str, run_dir: Path, critic, episodes: list):
    from robot_rl.learn.benchmark import HIL_DEMO_PHASE
    from robot_rl.learn.learner import Learner, LearnerConfig

    learner = Learner(LearnerConfig.from_dict({
        "run_dir": str(run_dir), "policy": config.policy, "critic": config.critic, "device": device,
        "episodes_per_update": config.episodes, "tensorboard": False, "seed": config.seed,
        # the computation only: writing weights and checkpoints costs the same disk time on any device
        "publish_every": 10 ** 9, "checkpoint_every": 10 ** 9,
        # every repeat learns from the same episodes (acted by version 0): staleness would drop them
        "ppo": {**HIL_DEMO_PHASE, **config.ppo, "max_staleness": 10 ** 9},
    }), critic=critic, log_fn=lambda *_: None)
    for e in episodes:  # the demo phase's batches: these episodes' steps, drawn as the human's would be
        learner.demos.add_episode(e)
    return learner


def _timed_prepare(learner) -> list[float]:
    """Wrap ``learner.prepare`` (critic rewards and decisions, on the CPU) to time each call."""
    times: list[float] = []
    inner = learner.prepare

    def prepare(episodes):
        t0 = time.perf_counter()
        try:
            return inner(episodes)
        finally:
            times.append((time.perf_counter() - t0) * 1e3)

    learner.prepare = prepare
    return times


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def weights_difference(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> dict:
    """Largest absolute difference over every floating tensor of two CPU state dicts, and the largest
    relative to that tensor's largest magnitude (where the difference is worst)."""
    worst_abs, worst_rel, where = 0.0, 0.0, ""
    for name, ref in reference.items():
        if not torch.is_floating_point(ref):
            continue
        diff = float((other[name].float() - ref.float()).abs().max()) if ref.numel() else 0.0
        scale = float(ref.float().abs().max()) if ref.numel() else 0.0
        rel = diff / scale if scale > 0 else diff
        worst_abs = max(worst_abs, diff)
        if rel > worst_rel:
            worst_rel, where = rel, name
    return {"max_abs": worst_abs, "max_rel": worst_rel, "worst_tensor": where}


def bench_learner(config: LearnerBenchConfig, json_path: str | Path, log=print) -> dict:
    from robot_rl.learn.device import resolve_device
    from robot_rl.reward.base import make_critic

    if config.threads:
        torch.set_num_threads(config.threads)
    devices = [resolve_device(d, what="bench learner --devices") for d in config.devices]  # fail before any work
    t0 = time.perf_counter()
    episodes = collect_episodes(config)
    if config.save_episodes:
        from robot_rl.data.episodes import write_episode

        for e in episodes:
            write_episode(config.save_episodes, e)
    steps = sum(len(e) for e in episodes)
    log(f"bench learner: {len(episodes)} episodes ({steps} steps) of {config.policy} in {time.perf_counter() - t0:.1f} s; "
        f"devices {[str(d) for d in devices]}, {config.repeats} timed updates each")
    critic = make_critic(config.critic, allow_unseen_instructions=False)
    results: dict[str, dict] = {}
    first_weights: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-learner-") as tmp:
        for device in devices:
            torch.manual_seed(config.seed)
            learner = _learner(config, str(device), Path(tmp) / str(device).replace(":", "_"), critic, episodes)
            prepare_ms = _timed_prepare(learner)
            try:
                update_ms, rows = [], []
                for i in range(config.repeats + 1):
                    _synchronise(device)
                    start = time.perf_counter()
                    row = learner.update(episodes)
                    _synchronise(device)
                    if row is None:
                        raise RuntimeError(f"bench learner: the {len(episodes)} episodes hold no policy decision")
                    if i == 0:  # the warm-up: allocations, cuDNN's algorithm search; its weights are compared
                        first_weights[str(device)] = {k: v.detach().cpu().clone() for k, v in learner.model.state_dict().items()}
                    else:
                        update_ms.append((time.perf_counter() - start) * 1e3)
                        rows.append(row)
            finally:
                learner.close()
            entry = {"device": str(device), "update_ms": summarise(update_ms), "prepare_ms": summarise(prepare_ms[1:]),
                     "batch_decisions": int(rows[-1]["batch_decisions"]) if rows else 0,
                     "demo_steps": int(learner.config.ppo.demo_steps), "value_steps": int(learner.config.ppo.value_steps)}
            if device.type == "cuda":
                entry["gpu"] = torch.cuda.get_device_name(device)
                entry["max_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
            results[str(device)] = entry
            log(f"  {device}: update p50 {entry['update_ms']['p50']:.0f} ms, p99 {entry['update_ms']['p99']:.0f} ms "
                f"(critic rewards p50 {entry['prepare_ms']['p50']:.0f} ms), {entry['batch_decisions']} decisions")
    cpu = results.get("cpu")
    for name, entry in results.items():
        if cpu is not None:
            entry["speedup_vs_cpu"] = cpu["update_ms"]["p50"] / entry["update_ms"]["p50"]
            entry["weights_vs_cpu"] = weights_difference(first_weights["cpu"], first_weights[name])
    report = {"benchmark": "learner", "config": {**config.__dict__}, "episodes": len(episodes), "steps": steps,
              "devices": results,
              "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
                          "cuda": torch.version.cuda, "cpu_threads": torch.get_num_threads()},
              "notes": "update_ms: one learner update (critic rewards on the CPU, PPO epochs, demo phase, value fit; "
                       "no publishing or checkpointing) of the same batch, after one warm-up; speedup_vs_cpu: "
                       "CPU p50 / device p50, same run"}
    path = Path(json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    log(f"bench learner: wrote {path}")
    return report
