"""``robot-rl bench refit``: how far supervised learning on a human-in-the-loop run's data goes.

DAgger's question, asked of the HIL arm of ``bench learning``: after a run, the learner's demo buffer
holds the preloaded demonstrations and every step the (simulated) human commanded. Fitting the
starting policy to that aggregate for as long as it takes, offline, is the most the supervised half
of the loop could make of the data the run collected. If that ends well above the run's own final
success, the loop under-fits its data (more demo-phase steps per update, or a periodic refit, would
pay); if it ends where the run did, the data is what limits it, and more fitting will not help.

It builds the buffer exactly as the learner does (``Learner._preload_demos``, then each episode's
intervened steps, with ``Learner.add_human_steps`` as ``Learner.prepare`` does), fits the object head the learner fits when
``ppo.objects_coef`` > 0, and runs the learner's own demo phase (``ppo.demo_phase``, the HIL arm's
settings: ``HIL_DEMO_PHASE`` under the ``--set`` overrides) from the starting policy, evaluating with
simulator ground truth on the benchmark's held-out layouts after each requested step count.

The episodes come from a run with ``bench learning ... --set keep_episodes=true`` (kept in
``<out-dir>/progress_hil/seed<N>/learner/episodes``) or from any learner's ``episodes/`` directory.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from robot_rl.learn.benchmark import HIL_DEMO_PHASE, TASKS


@dataclass
class RefitConfig:
    demos: str  # the run's preloaded demonstrations (bench learning: <out-dir>/demos-<N>-per-task-<hash>)
    episodes: list[str]  # directories of the run's episodes (their intervened steps join the buffer)
    policy: str = "policies/sim_default"  # the run's starting policy (export directory or checkpoint)
    steps: list[int] = field(default_factory=lambda: [500, 1000, 2000, 4000])  # evaluate after each
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    eval_seeds: int = 50  # held-out layouts per task (the benchmark's EVAL_SEED + j)
    execute_steps: int = 4
    learner: dict = field(default_factory=dict)  # LearnerConfig overrides, as bench learning's --set
    threads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.steps or any(b <= a for a, b in zip([0] + self.steps, self.steps)):
            raise ValueError(f"steps {self.steps}: expected increasing positive step counts, e.g. 500,1000,2000")
        if not self.episodes:
            raise ValueError("no episode directories given (--episodes)")
        for flag, d in [("--demos", self.demos)] + [("--episodes", e) for e in self.episodes]:
            if not Path(d).is_dir():
                raise FileNotFoundError(f"{flag} {d}: no such directory")


def ppo_settings(config: RefitConfig) -> dict:
    """The HIL arm's demo phase under the run's overrides (what ``bench learning`` gave that arm); the
    step count per update is the run's, not this fit's (``steps``), so it is left out."""
    settings = {**HIL_DEMO_PHASE, **config.learner.get("ppo", {})}
    settings.pop("demo_steps", None)
    return settings


def refit(config: RefitConfig, json_path: str, echo=print) -> dict:
    import torch

    from robot_rl.data.episodes import list_episodes, read_episode, read_meta
    from robot_rl.learn.benchmark import _policy, evaluate_weights
    from robot_rl.learn.learner import Learner, LearnerConfig, state_bytes
    from robot_rl.learn.ppo import demo_phase

    torch.set_num_threads(config.threads)
    paths = [p for d in config.episodes for p in list_episodes(d)]
    if not paths:
        raise FileNotFoundError(f"--episodes {config.episodes}: no episodes there (a learner's episodes/, or "
                                "bench learning --set keep_episodes=true)")
    # room for every row: the demonstrations' steps and every intervened step (nothing evicted)
    demo_rows = sum(read_meta(p).length for p in list_episodes(config.demos))
    episodes = [read_episode(p) for p in paths]
    human_rows = int(sum(e.intervention.sum() for e in episodes))
    scratch = Path(tempfile.mkdtemp(prefix="robot_rl_refit_"))
    overrides = {k: v for k, v in config.learner.items() if k not in ("ppo", "hil")}
    settings = ppo_settings(config)
    ppo = {**settings, "demo_steps": config.steps[0]}  # > 0: the learner fits the object head
    learner_cfg = LearnerConfig.from_dict({
        **overrides, "run_dir": str(scratch / "learner"), "policy": config.policy, "demos": config.demos,
        "demo_capacity": demo_rows + human_rows + 1, "checkpoint_every": 10 ** 9, "keep_episodes": False,
        "tensorboard": False, "threads": config.threads, "seed": config.seed, "ppo": ppo,
        "hil": {"demo_replay": True, "return_and_explore": False, "human_guided": True}})
    try:
        learner = Learner(learner_cfg, log_fn=lambda *_: None)
        preloaded = len(learner.demos)
        added = sum(learner.add_human_steps(e) for e in episodes if learner._compatible(e))
        echo(f"refit: demo buffer {len(learner.demos)} rows ({preloaded} from {config.demos}, {added} intervened steps "
             f"of {len(episodes)} episodes); demo phase {settings}")
        policy = _policy(config.policy, False, 0)
        report = {"benchmark": "refit", "config": json.loads(json.dumps(config.__dict__)), "ppo": settings,
                  "buffer": {"rows": len(learner.demos), "demonstration_rows": preloaded, "human_rows": added,
                             "episodes": len(episodes)},
                  "points": []}
        rng = np.random.default_rng(config.seed)
        done, started = 0, time.perf_counter()

        def evaluate(steps: int, stats: dict) -> None:
            policy.load_weights(steps, policy.metadata["model_config"], state_bytes(learner.model),
                                workdir=str(scratch / "eval_backend"))
            result = evaluate_weights(policy, config.tasks, config.eval_seeds, config.execute_steps)
            report["points"].append({"steps": steps, **result, **stats, "train_s": round(time.perf_counter() - started, 1)})
            echo(f"refit: {steps} steps: success {result['mean']:.3f} "
                 + " ".join(f"{t} {v:.2f}" for t, v in result["per_task"].items())
                 + (f"; demo NLL {stats['demo_phase_nll']:.3f}" if "demo_phase_nll" in stats else ""))
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
            Path(json_path).write_text(json.dumps(report, indent=1))

        evaluate(0, {})
        for steps in config.steps:
            phase = replace(learner.config.ppo, demo_steps=steps - done)
            stats = demo_phase(learner.model, learner.demo_optimiser, learner.demos, phase, learner._embed, rng,
                               parallel=None, object_head=learner.object_head)
            done = steps
            evaluate(steps, stats)
        return report
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
