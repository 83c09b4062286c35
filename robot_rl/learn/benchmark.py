"""``robot-rl bench learning``: does the asynchronous loop improve the shipped policy, and how fast?

For each *arm* (a reward and human-in-the-loop protocol) and each seed, the whole asynchronous loop
runs from the same shipped starting policy on the simulated tasks, with the real parts:

- an *actor* process: :class:`robot_rl.learn.actor.SimActor` runs the policy with exploration noise
  in the MuJoCo tabletop (tasks in turn, fresh layouts), spools each episode and sends it to the
  learner over CurveZMQ (:class:`EpisodeUplink`), and swaps in every weights version the learner
  publishes (:class:`WeightsListener`, ``VLAPolicy.load_weights``);
- the *learner* (:class:`robot_rl.learn.learner.Learner` serving, in this process): rewards from the
  progress critic on the episode frames, PPO on chunks with demo replay, versioned weights out;
- an *evaluator* process: the weights after every ``eval_every`` episodes the learner has used are
  evaluated, without exploration noise, on ``eval_seeds`` held-out layouts per task (seeds 10000+,
  never used for training or demonstrations) with simulator ground truth. Ground truth reaches only
  the evaluation and the report, never the learner.

The arms (``ARMS``):

- ``sparse``: the reward is only the critic's done signal (``shaping_scale: 0``, ``success_bonus``);
- ``progress``: VLAC's progress reward (potential shaping on the critic's value) plus the done bonus;
- ``progress+hil``: the same plus VLAC's graded human-in-the-loop protocol with the simulated human
  (:class:`robot_rl.teleop.scripted.ScriptedHuman`): demonstrations preloaded into the demo buffer
  (collected by the scripted oracle at the start, seeds 0+), return-and-explore (episodes start with
  probability ``return_probability`` from a state where the human had to take over) and
  human-guided steps (the human's commands go to the demo buffer);
- ``progress+demos`` (asked for by name): ``progress`` plus demo replay alone, the HIL arm's demo
  buffer and demo phase without a human: VLAC's first rung, and the control that says how much of
  the HIL arm's gain the corrections bring and how much more supervised steps on the demonstrations.

Asynchrony: the actor never waits for an update to finish, but a simulated episode takes well under
a second where a real one takes tens of seconds, so it waits when it is more than ``max_lag_updates``
updates ahead of the weights it runs (a real robot is never further ahead than that); the learner
drops episodes older than ``max_staleness`` versions as it would on robots. The x axis of every result
is episodes the learner has received (robot time): eval point N evaluates the weights after the
updates that used the first N episodes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from robot_rl.sim.oracle import ORACLE_VERSION
from robot_rl.sim.tasks import TASKS, get_task

EVAL_SEED = 10_000  # held-out layouts (robot_rl.policy.evaluate uses the same range)
DEMO_SEED = 0  # demonstrations (robot-rl collect uses the same range)
TRAIN_SEED = 100_000  # training layouts of benchmark seed s: TRAIN_SEED * (s + 1) + i


@dataclass(frozen=True)
class Arm:
    """One protocol of the benchmark."""

    shaping_scale: float  # 0: sparse, done-only reward
    human: bool  # the simulated human intervenes (human-guided steps go to the demo buffer)
    demo_replay: bool  # demonstrations preloaded into the demo buffer
    return_and_explore: bool
    demo_phase: bool = False  # supervised steps on the demo buffer after each update (HIL_DEMO_PHASE)


# The supervised half of human-guided exploration as measured best (docs/learning-benchmark.md,
# items 13 and 20): after each update, 50 NLL steps on the demo buffer, a quarter of every batch from
# the human's corrections and the rest from the preloaded demonstrations (which keep what the policy
# already does; with half from the corrections, three seeds dipped to 0.67 at 50 episodes and ended
# lower on press and pick). ``--set ppo.<field>=...`` overrides each of them.
HIL_DEMO_PHASE = {"demo_steps": 50, "demo_lr": 5e-5, "demo_human_fraction": 0.25}

ARMS = {
    "sparse": Arm(shaping_scale=0.0, human=False, demo_replay=False, return_and_explore=False),
    "progress": Arm(shaping_scale=1.0, human=False, demo_replay=False, return_and_explore=False),
    "progress+hil": Arm(shaping_scale=1.0, human=True, demo_replay=True, return_and_explore=True, demo_phase=True),
    # the first rung of VLAC's graded protocol alone, and the control for the HIL arm: the same demo
    # phase on the same preloaded demonstrations, no human (so no corrections and no failure states)
    "progress+demos": Arm(shaping_scale=1.0, human=False, demo_replay=True, return_and_explore=False, demo_phase=True),
}
MAIN_ARMS = ["sparse", "progress", "progress+hil"]  # the three; the others are asked for by name
TASK_SCHEDULES = ("round_robin", "needs_help")
DEMO_BEHAVIOURS = ("oracle", "dart")  # collect behaviours whose actions are the oracle's labels


class TaskSchedule:
    """Which task the next training episode practises.

    ``round_robin``: the tasks in turn, each a quarter of the episodes with four tasks. ``needs_help``:
    what an operator does who sees where they keep stepping in. After ``warmup_rounds`` rounds in turn,
    a task is drawn with probability proportional to ``floor`` plus the mean number of take-overs the
    human needed in that task's last ``window`` episodes. Take-overs are the operator's own record, not
    the simulator's ground truth, so a robot's loop could schedule the same way. Push, whose contact
    phase needs about three times the labels that a quarter of 200 episodes gives it
    (``docs/learning-benchmark.md`` item 32), draws about twice the take-overs per episode of the
    others. Arms without a human have no take-overs to go by and keep the tasks in turn."""

    def __init__(self, tasks: list[str], kind: str, seed: int, window: int = 10, floor: float = 0.25,
                 warmup_rounds: int = 2):
        self.tasks, self.kind, self.window, self.floor = list(tasks), kind, window, floor
        self.warmup = warmup_rounds * len(self.tasks)
        self.rng = np.random.default_rng(seed + 7)
        self.take_overs: dict[str, list[int]] = {t: [] for t in self.tasks}

    def next(self, episode: int) -> str:
        if self.kind == "round_robin" or episode < self.warmup:
            return self.tasks[episode % len(self.tasks)]
        need = np.array([self.floor + (np.mean(self.take_overs[t][-self.window:]) if self.take_overs[t] else 1.0)
                         for t in self.tasks])
        return self.tasks[int(self.rng.choice(len(self.tasks), p=need / need.sum()))]

    def record(self, task: str, take_overs: int) -> None:
        self.take_overs[task].append(int(take_overs))


@dataclass
class LearningBenchConfig:
    arms: list[str] = field(default_factory=lambda: list(MAIN_ARMS))
    episodes: int = 200  # training episodes per arm and seed
    seeds: int = 3
    eval_every: int = 25  # episodes between evaluations (and one before any training)
    eval_seeds: int = 50  # held-out layouts per task
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    policy: str = "policies/sim_default"  # the shipped starting policy (export directory)
    critic: str = "policies/sim_critic"
    out_dir: str = "runs/bench-learning"
    execute_steps: int = 4  # chunk points executed per policy query, in training and evaluation
    episodes_per_update: int = 5
    max_lag_updates: int = 1  # the actor waits when further ahead of its weights than this
    # control steps a training episode goes on after success, the arm holding, so that the critic sees the
    # finished task and its done can fire (SimActor; 0: the episode ends at success and the done fired on
    # a tenth to a sixth of the successes, as in every run before design-note item 42)
    settle_steps: int = 5
    demos_per_task: int = 200  # oracle demonstrations preloaded for demo replay (the starting policy's own 200 per task)
    # how those demonstrations are collected: "oracle", or "dart" (the oracle's labels on perturbed states,
    # item 38) for a starting policy trained on such demonstrations
    demo_behaviour: str = "oracle"
    return_probability: float = 0.5
    human: dict = field(default_factory=dict)  # ScriptedHumanConfig overrides (threshold, probability, ...)
    # which task each training episode practises: "round_robin" (in turn) or "needs_help" (TaskSchedule)
    task_schedule: str = "round_robin"
    learner: dict = field(default_factory=dict)  # LearnerConfig overrides (ppo: {...}, reward: {...})
    threads: int = 1  # torch threads per process (actor, learner, evaluator: three processes on two cores)

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise ValueError(f"unknown arms {unknown}; expected some of {list(ARMS)}")
        self.tasks = [get_task(t).name for t in self.tasks]
        if self.episodes < 1 or self.seeds < 1 or self.eval_every < 1 or self.eval_seeds < 1:
            raise ValueError("episodes, seeds, eval_every and eval_seeds must be at least 1")
        if self.settle_steps < 0:
            raise ValueError(f"settle_steps {self.settle_steps}: expected 0 (end at success) or more control steps")
        if self.demo_behaviour not in DEMO_BEHAVIOURS:
            raise ValueError(f"demo_behaviour {self.demo_behaviour!r}: expected one of {list(DEMO_BEHAVIOURS)}")
        if self.task_schedule not in TASK_SCHEDULES:
            raise ValueError(f"task_schedule {self.task_schedule!r}: expected one of {list(TASK_SCHEDULES)}")
        if self.eval_every % self.episodes_per_update:
            raise ValueError(f"eval_every ({self.eval_every}) must be a multiple of episodes_per_update "
                             f"({self.episodes_per_update}): evaluations happen between updates")
        from robot_rl.teleop.scripted import ScriptedHumanConfig

        known = [f.name for f in fields(ScriptedHumanConfig) if f.name not in ("seed", "control_rate_hz")]
        unknown = sorted(set(self.human) - set(known))
        if unknown:
            raise ValueError(f"simulated human settings {unknown}: expected some of {known}")
        ScriptedHumanConfig(**self.human)  # refuses a bad value (an unknown trigger) here, not in the actor

    @property
    def eval_points(self) -> list[int]:
        points = list(range(0, self.episodes + 1, self.eval_every))
        return points if points[-1] == self.episodes else points + [self.episodes]


def quick_config(**overrides) -> LearningBenchConfig:
    """The whole pipeline in a few minutes (CI): a handful of episodes and evaluation layouts. Proves
    that every part runs and reports; claims nothing about learning."""
    base = dict(episodes=6, seeds=1, eval_every=3, eval_seeds=2, episodes_per_update=3, demos_per_task=1,
                learner={"ppo": {"epochs": 1, "minibatch_size": 32, "demo_steps": 2}})
    base.update(overrides)
    return LearningBenchConfig(**base)


# -- the processes -------------------------------------------------------------------------------
def _policy(path: str, explore: bool, seed: int, explore_noise: str = "step"):
    from robot_rl.policy.base import PolicyConfig, make_policy

    return make_policy(PolicyConfig(type="vla", options={"path": path, "backend": "torch", "explore": explore,
                                                         "explore_seed": seed, "explore_noise": explore_noise}))


def _orphaned(spec: dict) -> bool:
    """The benchmark process that started this one is gone (killed: its daemon children are only
    stopped on a clean exit); its helpers must not keep waiting for weights that never come."""
    return os.getppid() != spec["parent"]


def _actor_main(spec: dict) -> None:
    """The simulated robot: episodes out over the uplink, weights in from the listener."""
    import torch

    from robot_rl.learn.actor import SimActor
    from robot_rl.transport.links import EpisodeUplink, WeightsListener
    from robot_rl.transport.security import ClientKeys
    from robot_rl.transport.spool import Spool

    torch.set_num_threads(spec["threads"])
    run_dir = Path(spec["run_dir"])
    policy = _policy(spec["policy"], True, spec["seed"], spec["exploration"])
    m = policy.metadata
    human = banks = None
    if spec["human"] is not None:
        from robot_rl.teleop.scripted import ScriptedHuman, ScriptedHumanConfig

        human = ScriptedHuman(ScriptedHumanConfig(**{"seed": spec["seed"], "control_rate_hz": m["control_rate_hz"],
                                                     **spec["human"]}), list(m["joint_names"]))
    if spec["return_and_explore"]:
        from robot_rl.sim.failure_states import FailureStates

        banks = {t: FailureStates(run_dir / "failure_states" / t, seed=spec["seed"]) for t in spec["tasks"]}
    actor = SimActor(policy, list(m["cameras"]), m["image_width"], m["image_height"], m["control_rate_hz"],
                     spec["execute_steps"], robot="bench", human=human, failure_states=banks,
                     return_probability=spec["return_probability"], settle_steps=spec["settle_steps"])
    keys = ClientKeys(spec["robot_secret"], spec["learner_public"])
    listener = WeightsListener(spec["weights_address"], keys,
                               lambda v, c, b: policy.load_weights(v, c, b, workdir=str(run_dir / "actor_weights")))
    spool = Spool(run_dir / "spool")
    uplink = EpisodeUplink(spool, spec["episodes_address"], keys, "bench").start()
    per_update, lag = spec["episodes_per_update"], spec["max_lag_updates"]
    # with no human there are no take-overs to go by: the tasks in turn
    schedule = TaskSchedule(spec["tasks"], spec["task_schedule"] if human is not None else "round_robin", spec["seed"])
    try:
        with open(run_dir / "actor.jsonl", "w") as log:
            for i in range(spec["episodes"]):
                # episodes the learner cannot have used yet: at most this many updates' worth. Bounded:
                # an update with nothing to learn from (all stale or all human) publishes no version
                give_up = time.monotonic() + 30.0
                while i >= (policy.version_number + 1 + lag) * per_update and time.monotonic() < give_up:
                    time.sleep(0.02)
                if _orphaned(spec):
                    return
                task = schedule.next(i)
                t0 = time.perf_counter()
                e = actor.episode(task, TRAIN_SEED * (spec["seed"] + 1) + i)
                schedule.record(task, e.meta.extra.get("interventions", 0))
                spool.put(e)
                uplink.notify()
                versions = e.extras["policy_version"]
                log.write(json.dumps({"episode": i, "task": task, "success": bool(e.meta.success), "steps": len(e),
                                      "intervention_rate": float(e.intervention.mean()) if len(e) else 0.0,
                                      "interventions": int(e.meta.extra.get("interventions", 0)),
                                      "restored": bool(e.meta.extra.get("restored_state")),
                                      "version": int(versions[versions >= 0].min()) if (versions >= 0).any() else -1,
                                      "seconds": time.perf_counter() - t0}) + "\n")
                log.flush()
        deadline = time.monotonic() + 120
        while len(spool) and time.monotonic() < deadline:  # every episode acknowledged
            time.sleep(0.05)
    finally:
        uplink.close()
        listener.close()
        actor.close()


def evaluate_weights(policy, tasks: list[str], seeds: int, execute_steps: int) -> dict:
    """Ground-truth success of ``policy`` (no exploration) on held-out layouts ``EVAL_SEED + j``."""
    from robot_rl.learn.actor import SimActor

    m = policy.metadata
    actor = SimActor(policy, list(m["cameras"]), m["image_width"], m["image_height"], m["control_rate_hz"], execute_steps)
    try:
        per_task = {t: float(np.mean([actor.succeeds(t, EVAL_SEED + j) for j in range(seeds)])) for t in tasks}
    finally:
        actor.close()
    return {"per_task": per_task, "mean": float(np.mean(list(per_task.values())))}


def _evaluator_main(spec: dict) -> None:
    """Evaluates the weights at each eval point as the learner writes them (``eval_weights/at_<N>``)."""
    import torch

    torch.set_num_threads(spec["threads"])
    run_dir = Path(spec["run_dir"])
    policy = _policy(spec["policy"], False, 0)
    with open(run_dir / "eval.jsonl", "w") as out:
        for n in spec["points"]:
            path = run_dir / "eval_weights" / f"at_{n}.safetensors"
            while not path.is_file():
                if (run_dir / "learner_failed").exists() or _orphaned(spec):
                    return
                time.sleep(0.1)
            meta = json.loads(path.with_suffix(".json").read_text())
            policy.load_weights(meta["version"], policy.metadata["model_config"], path.read_bytes(),
                                workdir=str(run_dir / "eval_backend"))
            t0 = time.perf_counter()
            result = evaluate_weights(policy, spec["tasks"], spec["eval_seeds"], spec["execute_steps"])
            out.write(json.dumps({"episodes": n, "version": meta["version"], **result,
                                  "eval_s": time.perf_counter() - t0}) + "\n")
            out.flush()


# -- one run -------------------------------------------------------------------------------------
def _learner_class():
    from robot_rl.learn.learner import Learner, state_bytes

    class BenchLearner(Learner):
        """The learner, plus: the weights at each eval point go to ``eval_weights/`` for the evaluator,
        and it stops once it has used every episode of the run."""

        def __init__(self, config, points: list[int], episodes: int, **kw):
            super().__init__(config, **kw)
            self.points, self.total, self.received = set(points), episodes, 0
            self._save_point(0)

        def _save_point(self, n: int) -> None:
            if n not in self.points:
                return
            path = self.run_dir / "eval_weights" / f"at_{n}.safetensors"
            path.parent.mkdir(exist_ok=True)
            path.with_suffix(".json").write_text(json.dumps({"version": self.version, "episodes": n}))
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(state_bytes(self.model))
            tmp.replace(path)  # the evaluator waits for this file: it appears whole

        def update(self, episodes):
            row = super().update(episodes)
            self.received += len(episodes)
            self._save_point(self.received)
            if self.received >= self.total:
                self.stop()
            return row

    return BenchLearner


def _keys(run_dir: Path) -> dict:
    from robot_rl.transport.security import generate_keypair

    keys = run_dir / "keys"
    learner_public, learner_secret = generate_keypair(keys, "learner", force=True)
    robot_public, robot_secret = generate_keypair(keys, "robot", force=True)
    (keys / "allowed").mkdir(exist_ok=True)
    shutil.copy(robot_public, keys / "allowed" / robot_public.name)
    return {"learner_public": str(learner_public), "learner_secret": str(learner_secret),
            "allowed": str(keys / "allowed"), "robot_secret": str(robot_secret)}


def demos_dir_name(config: LearningBenchConfig) -> str:
    """The demonstrations' cache directory, named by what they are, so that a run with another count,
    task set, starting policy or oracle never reuses demonstrations collected for a different one."""
    # (an oracle run's key is what it was before demo_behaviour existed, so its cache stays valid)
    key = json.dumps([sorted(config.tasks), config.policy, DEMO_SEED, ORACLE_VERSION]
                     + ([] if config.demo_behaviour == "oracle" else [config.demo_behaviour]))
    return f"demos-{config.demos_per_task}-per-task-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def collect_demos(config: LearningBenchConfig, out: Path, echo=print) -> Path:
    """Oracle demonstrations at the policy's resolution for demo replay (written once, reused)."""
    from robot_rl.data.collect import CollectConfig, collect
    from robot_rl.data.episodes import list_episodes
    from robot_rl.inference.backends import read_metadata

    if out.is_dir() and list_episodes(out):
        return out
    m = read_metadata(config.policy)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    summary = collect(CollectConfig(str(tmp), tasks=list(config.tasks), episodes=config.demos_per_task, seed=DEMO_SEED,
                                    cameras=list(m["cameras"]), image_width=m["image_width"],
                                    image_height=m["image_height"], control_rate_hz=m["control_rate_hz"],
                                    behaviour=config.demo_behaviour))
    tmp.replace(out)
    echo(f"demonstrations for demo replay: {summary} -> {out}")
    return out


def arm_ppo_settings(config: LearningBenchConfig, arm_name: str) -> dict:
    """The PPO settings an arm runs with: its own (``HIL_DEMO_PHASE`` for the HIL arm), then the run's
    ``--set ppo.*`` overrides on top."""
    return {**(HIL_DEMO_PHASE if ARMS[arm_name].demo_phase else {}), **config.learner.get("ppo", {})}


def learner_settings(config: LearningBenchConfig, arm_name: str) -> dict:
    """The PPO and reward settings one arm's learner runs with: the defaults, the arm's own and the
    run's ``--set`` overrides, resolved. Reports record them per arm, so a resume compares what ran,
    not how it was asked for (a default that changes between the two must not pass unseen)."""
    from robot_rl.learn.ppo import PPOConfig
    from robot_rl.reward.shaping import RewardConfig

    reward = {**config.learner.get("reward", {}), "shaping_scale": ARMS[arm_name].shaping_scale}
    return {"ppo": asdict(PPOConfig(**arm_ppo_settings(config, arm_name))), "reward": asdict(RewardConfig(**reward))}


# Defaults that changed before reports recorded ``learner_settings``: a report without them ran with
# these unless its overrides said otherwise (the value fit, item 17 of docs/learning-benchmark.md).
DEFAULTS_BEFORE_LEARNER_SETTINGS = {"ppo": {"value_steps": 0}}
# Settings added after a report was written: the value that does what the code did before the field
# existed, so a report that does not record one ran with it (and a run asking for another value is
# refused). Each new field of PPOConfig or RewardConfig goes here.
SETTINGS_ADDED_LATER = {"ppo": {"anchor_coef": 0.0, "objects_coef": 0.0, "exploration": "step"}}


def _keep_or_drop_episodes(learner_dir: Path, keep: bool) -> None:
    """The run's episodes wait in the learner's inbox (the benchmark never checkpoints, so nothing
    moves them). They are dropped, unless ``--set keep_episodes=true`` asked to keep them in
    ``learner/episodes`` for offline study (``robot-rl bench refit``)."""
    inbox = learner_dir / "inbox"
    if keep and inbox.is_dir():
        (learner_dir / "episodes").mkdir(exist_ok=True)
        for episode in sorted(inbox.iterdir()):
            if episode.is_dir() and not episode.name.endswith(".partial"):  # a write cut off: not an episode
                shutil.move(str(episode), str(learner_dir / "episodes" / episode.name))
    shutil.rmtree(inbox, ignore_errors=True)


def run_arm(config: LearningBenchConfig, arm_name: str, seed: int, echo=print) -> dict:
    """One arm, one seed: the asynchronous loop and its evaluations. Returns the run's record."""
    import torch

    from robot_rl.learn.learner import LearnerConfig

    arm = ARMS[arm_name]
    out = Path(config.out_dir)
    run_dir = out / arm_name.replace("+", "_") / f"seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    keys = _keys(run_dir)
    demos = str(collect_demos(config, out / demos_dir_name(config), echo)) if arm.demo_replay else ""
    overrides = json.loads(json.dumps(config.learner))
    learner_cfg = LearnerConfig.from_dict({
        "run_dir": str(run_dir / "learner"), "policy": config.policy, "critic": config.critic, "demos": demos,
        # room for the preloaded demonstrations (about 16 steps each) and 4000 of the human's steps
        "demo_capacity": config.demos_per_task * len(config.tasks) * 20 + 4000,
        "episodes_per_update": config.episodes_per_update, "checkpoint_every": 10 ** 9,
        "keep_episodes": False, "bind_episodes": "tcp://127.0.0.1:*", "bind_weights": "tcp://127.0.0.1:*",
        "secret_key": keys["learner_secret"], "allowed_keys": keys["allowed"], "threads": config.threads,
        "seed": seed, "tensorboard": False, **overrides,
        "ppo": arm_ppo_settings(config, arm_name),
        "reward": {**overrides.get("reward", {}), "shaping_scale": arm.shaping_scale},
        "hil": {"demo_replay": arm.demo_replay, "return_and_explore": arm.return_and_explore, "human_guided": arm.human},
    })
    torch.set_num_threads(config.threads)
    started = time.perf_counter()
    learner = _learner_class()(learner_cfg, config.eval_points, config.episodes, log_fn=lambda *_: None)
    learner_dir = Path(learner_cfg.run_dir)
    (learner_dir / "eval_weights").mkdir(exist_ok=True)
    errors: list[BaseException] = []

    def serve():
        try:
            learner.serve(progress=False)
        except BaseException as exc:  # the evaluator and the run must not wait for weights that never come
            errors.append(exc)
            (learner_dir / "learner_failed").touch()

    server = threading.Thread(target=serve, name="learner", daemon=True)
    server.start()
    deadline = time.monotonic() + 60
    while (learner.inbox is None or learner.publisher is None) and not errors and time.monotonic() < deadline:
        time.sleep(0.05)
    if errors or learner.inbox is None:
        raise RuntimeError(f"bench learning {arm_name} seed {seed}: the learner did not start: {errors[:1]}")
    common = {"run_dir": str(run_dir), "policy": config.policy, "tasks": list(config.tasks), "seed": seed,
              "threads": config.threads, "execute_steps": config.execute_steps, "parent": os.getpid()}
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch or GL state
    actor = ctx.Process(target=_actor_main, name=f"actor-{arm_name}-{seed}", daemon=True, args=({
        **common, "episodes": config.episodes, "episodes_per_update": config.episodes_per_update,
        "max_lag_updates": config.max_lag_updates, "human": dict(config.human) if arm.human else None,
        "task_schedule": config.task_schedule, "settle_steps": config.settle_steps,
        "exploration": learner_cfg.ppo.exploration,  # the actor draws its noise as the learner will score it
        "return_and_explore": arm.return_and_explore, "return_probability": config.return_probability,
        "robot_secret": keys["robot_secret"], "learner_public": keys["learner_public"],
        "episodes_address": learner.inbox.address, "weights_address": learner.publisher.address},))
    evaluator = ctx.Process(target=_evaluator_main, name=f"evaluator-{arm_name}-{seed}", daemon=True, args=({
        **common, "run_dir": str(learner_dir), "points": config.eval_points, "eval_seeds": config.eval_seeds},))
    actor.start()
    evaluator.start()
    try:
        while server.is_alive():
            if not actor.is_alive() and actor.exitcode != 0:
                raise RuntimeError(f"bench learning {arm_name} seed {seed}: the actor process failed "
                                   f"(exit code {actor.exitcode}); see the traceback above")
            server.join(0.5)
        if errors:
            raise RuntimeError(f"bench learning {arm_name} seed {seed}: the learner failed: {errors[0]!r}") from errors[0]
        train_s = time.perf_counter() - started
        actor.join(180)
        evaluator.join()
        if evaluator.exitcode != 0:
            raise RuntimeError(f"bench learning {arm_name} seed {seed}: the evaluator process failed "
                               f"(exit code {evaluator.exitcode}); see the traceback above")
    finally:
        learner.stop()
        for p in (actor, evaluator):
            if p.is_alive():
                p.terminate()
                p.join(10)
    wall_s = time.perf_counter() - started
    evaluations = _read_jsonl(learner_dir / "eval.jsonl")
    episodes = _read_jsonl(run_dir / "actor.jsonl")
    updates = learner.history
    _keep_or_drop_episodes(learner_dir, bool(overrides.get("keep_episodes")))
    return {
        "arm": arm_name, "seed": seed, "wall_s": round(wall_s, 1), "train_s": round(train_s, 1),
        "evaluations": evaluations,
        "training": {
            "episodes": len(episodes),
            "success_rate": _mean([e["success"] for e in episodes]),
            "intervention_rate": _mean([e["intervention_rate"] for e in episodes]),
            "episodes_with_intervention": sum(e["interventions"] > 0 for e in episodes),
            "restored_from_failure_states": sum(e["restored"] for e in episodes),
            "success_by_block": [_mean([e["success"] for e in episodes[i:i + config.eval_every]])
                                 for i in range(0, len(episodes), config.eval_every)],
            "steps": sum(e["steps"] for e in episodes),
            "episodes_per_task": {t: sum(e["task"] == t for e in episodes) for t in config.tasks},
        },
        "learner": {
            "updates": len(updates), "version": learner.version, **{k: learner.counters[k] for k in
                                                                    ("dropped_stale", "human_steps", "decisions")},
            # of the training episodes that succeeded (ground truth), the share whose reward had the
            # critic's done, and of those that failed, the share with a false done (item 42)
            "critic_done_on_success": _share(learner.counters["critic_done_on_success"],
                                             learner.counters["reported_successes"]),
            "critic_done_on_failure": _share(learner.counters["critic_done_on_failure"],
                                             learner.counters["episodes"] - learner.counters["reported_successes"]),
            "demo_buffer": len(learner.demos),
            "demo_steps": learner_cfg.ppo.demo_steps if len(learner.demos) else 0,
            "demo_phase_nll_mean": _mean([u["demo_phase_nll"] for u in updates if "demo_phase_nll" in u]),
            **({"demo_phase_objects_mm": [round(u["demo_phase_objects_mm"], 1) for u in updates
                                          if "demo_phase_objects_mm" in u]}
               if any("demo_phase_objects_mm" in u for u in updates) else {}),
            "approx_kl_mean": _mean([u["approx_kl"] for u in updates]),
            "stopped_early": int(sum(u["stopped_early"] for u in updates)),
            "update_s_mean": _mean([u["update_s"] for u in updates]),
            # how much of a step was signal, pooled over the learner's last gradient_noise_window
            # updates (ppo.py section 10): the last update's report
            **({k: updates[-1][k] for k in ("gradient_noise_scale", "gradient_noise_scale_low",
                                            "gradient_signal_share_high", "gradient_noise_updates")}
               if updates and "gradient_noise_scale_low" in updates[-1] else {}),
        },
    }


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _mean(values) -> float | None:
    values = [float(v) for v in values]
    return float(np.mean(values)) if values else None


def _share(count: int, total: int) -> float | None:
    return round(count / total, 3) if total else None


# -- the whole benchmark -------------------------------------------------------------------------
def episodes_to_reach(points: list[int], success: list[float], level: float) -> int | None:
    """The first eval point at which mean success is at least ``level`` (None: never)."""
    return next((n for n, s in zip(points, success) if s >= level - 1e-9), None)


def summarise_runs(config: LearningBenchConfig, runs: list[dict]) -> dict:
    summary = {}
    for arm in config.arms:
        mine = [r for r in runs if r["arm"] == arm]
        if not mine:
            continue
        points = config.eval_points
        table = np.array([[next(e["mean"] for e in r["evaluations"] if e["episodes"] == n) for n in points] for r in mine])
        mean = table.mean(axis=0)
        per_task_final = {t: _mean([r["evaluations"][-1]["per_task"][t] for r in mine]) for t in config.tasks}
        summary[arm] = {"episodes": points, "mean_success": [round(float(x), 4) for x in mean],
                        "std_success": [round(float(x), 4) for x in table.std(axis=0)],
                        "min_success": [round(float(x), 4) for x in table.min(axis=0)],
                        "max_success": [round(float(x), 4) for x in table.max(axis=0)],
                        "start": round(float(mean[0]), 4), "final": round(float(mean[-1]), 4),
                        "final_per_task": per_task_final,
                        "episodes_to_80": episodes_to_reach(points, list(mean), 0.8),
                        "wall_s_mean": round(float(np.mean([r["wall_s"] for r in mine])), 1),
                        "intervention_rate": _mean([r["training"]["intervention_rate"] for r in mine])}
    return summary


def goals(summary: dict) -> dict:
    """The issue's goals, checked on the measured means (None where an arm was not run, and goal 3
    where the start is already at 0.8: it measures how soon the arms get there)."""
    hil, progress, sparse = (summary.get(a) for a in ("progress+hil", "progress", "sparse"))
    out = {"progress+hil_final_at_least_0.9": None, "progress_above_sparse": None,
           "progress+hil_reaches_0.8_in_two_thirds_of_progress": None}
    if hil:
        out["progress+hil_final_at_least_0.9"] = hil["final"] >= 0.9
    if progress and sparse:
        # "clearly above": the final means differ by more than the spread across seeds
        spread = max(progress["std_success"][-1], sparse["std_success"][-1], 0.05)
        out["progress_above_sparse"] = progress["final"] - sparse["final"] > spread
    if hil and progress and progress["episodes_to_80"] != 0:
        h, p = hil["episodes_to_80"], progress["episodes_to_80"]
        # Where progress never got there, all that is known is that it needs more than the run's length,
        # so the goal is shown only if the HIL arm got there within two thirds of that length.
        needed = p if p is not None else progress["episodes"][-1]
        out["progress+hil_reaches_0.8_in_two_thirds_of_progress"] = h is not None and h <= 2 * needed / 3
    return out


def plot(summary: dict, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for arm, s in summary.items():
        x, m = s["episodes"], np.asarray(s["mean_success"])
        ax.plot(x, m, marker="o", label=arm)
        ax.fill_between(x, s["min_success"], s["max_success"], alpha=0.2)
    ax.set_xlabel("training episodes")
    ax.set_ylabel("success on held-out layouts")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    ax.set_title(title, fontsize=9)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# Settings a resumed benchmark may change: which runs it holds, not how each run is made.
RESUME_MAY_CHANGE = ("arms", "seeds", "out_dir")
# Benchmark settings added after reports were written, with the value those reports ran with.
CONFIG_ADDED_LATER = {"task_schedule": "round_robin", "demo_behaviour": "oracle", "settle_steps": 0}


def _settings_before_they_were_recorded(config: LearningBenchConfig, overrides: dict | None, arm: str) -> dict:
    """What an arm of a report that predates ``learner_settings`` ran with: its overrides over the
    defaults of then (``DEFAULTS_BEFORE_LEARNER_SETTINGS``, and today's for everything else)."""
    merged = dict(overrides or {})
    for section, defaults in DEFAULTS_BEFORE_LEARNER_SETTINGS.items():
        merged[section] = {**defaults, **merged.get(section, {})}
    then = LearningBenchConfig(**{**asdict(config), "learner": merged})
    return json.loads(json.dumps(learner_settings(then, arm)))


def measured_runs(config: LearningBenchConfig, json_path: str, quick: bool = False) -> tuple[dict, float]:
    """The runs an earlier report at ``json_path`` already holds for this configuration, keyed by
    (arm, seed), and that report's wall time; ``({}, 0.0)`` when there is no report yet.

    A report measured with other settings (anything but the arms, the number of seeds and the run
    directory), from another starting policy or critic, or in the other mode (``--quick``) is refused
    with the fields that differ: mixing it in would average runs of two different experiments."""
    path = Path(json_path)
    if not path.is_file():
        return {}, 0.0
    try:
        earlier = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--resume: {path} is not a readable benchmark report ({exc})") from exc
    if not isinstance(earlier, dict) or earlier.get("benchmark") != "learning" or not isinstance(earlier.get("runs"), list):
        raise ValueError(f"--resume: {path} is not a 'robot-rl bench learning' report (no 'benchmark': 'learning' and 'runs')")
    mine = json.loads(json.dumps(asdict(config)))  # tuples as lists, as the report stores them
    theirs = {**CONFIG_ADDED_LATER, **earlier.get("config", {})}
    differ = [f"{k} {theirs.get(k)!r} (now {mine[k]!r})" for k in mine
              if k not in RESUME_MAY_CHANGE + ("learner",) and theirs.get(k) != mine[k]]
    # the learner: its other overrides as asked for, its PPO and reward settings as they ran
    strip = lambda d: {k: v for k, v in (d or {}).items() if k not in ("ppo", "reward")}
    if strip(theirs.get("learner")) != strip(mine["learner"]):
        differ.append(f"learner {theirs.get('learner')!r} (now {mine['learner']!r})")
    recorded = earlier.get("learner_settings")
    for arm in config.arms:
        if recorded is not None and arm not in recorded:
            continue  # an arm the report did not run: nothing of it is kept
        then = recorded[arm] if recorded is not None else _settings_before_they_were_recorded(config, theirs.get("learner"), arm)
        now = json.loads(json.dumps(learner_settings(config, arm)))
        then = {section: {**SETTINGS_ADDED_LATER.get(section, {}), **then.get(section, {})} for section in now}
        differ += [f"{arm} {section}.{k} {then[section].get(k)!r} (now {v!r})"
                   for section, values in now.items() for k, v in values.items() if then[section].get(k) != v]
    if bool(earlier.get("quick")) != quick:
        differ.append(f"quick {bool(earlier.get('quick'))} (now {quick})")
    policy_then, policy_now = earlier.get("policy") or {}, _policy_summary(config)
    if "model_version" not in policy_then:  # a report written before the summary named it
        policy_now.pop("model_version")
    if any(policy_then.get(k) != v for k, v in policy_now.items()):
        differ.append(f"starting policy {policy_then!r} (now {policy_now!r})")
    # The oracle made the demonstrations and plays the human, so the runs of arms with either are only
    # comparable within one oracle version (reports written before it was recorded had the first).
    with_oracle = [arm for arm in config.arms if (ARMS[arm].human or ARMS[arm].demo_replay)
                   and any(r.get("arm") == arm for r in earlier["runs"])]
    if with_oracle and earlier.get("oracle_version", 1) != ORACLE_VERSION:
        differ.append(f"oracle_version {earlier.get('oracle_version', 1)} (now {ORACLE_VERSION}) in the runs of "
                      + ", ".join(with_oracle))
    if differ:
        raise ValueError(f"--resume: {path} was measured with other settings: {'; '.join(differ)}. "
                         "Write the new runs to another --json, or run without --resume to start over.")
    runs = {(r["arm"], r["seed"]): r for r in earlier["runs"]
            if r.get("arm") in config.arms and isinstance(r.get("seed"), int) and r["seed"] < config.seeds}
    return runs, float(earlier.get("wall_s_total") or 0.0)


class OutDirInUse(RuntimeError):
    """Another benchmark holds the ``--out-dir`` (``out_dir_lock``)."""


@contextlib.contextmanager
def out_dir_lock(out_dir: str):
    """Holds ``<out_dir>/.lock`` for one benchmark. Each run starts by clearing its run directory and
    the evaluator rewrites its ``eval.jsonl``, so a second benchmark on the same ``--out-dir`` would
    delete the first one's runs and interleave their files (it happened: a resumed benchmark read
    the other's half-written evaluations). The lock is an flock: it goes with the process that held
    it and is released when the file closes, so a benchmark that was killed leaves nothing to clean up."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise OutDirInUse(f"--out-dir {out}: another bench learning (pid {holder}) is running in it; "
                               f"give this one its own --out-dir (its runs would delete that one's)") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield


def bench_learning(config: LearningBenchConfig, json_path: str, plot_path: str | None = None, quick: bool = False,
                   echo=print, resume: bool = False) -> dict:
    """Every arm for every seed (the report is rewritten after each run). ``resume``: keep the runs
    that the report already at ``json_path`` holds for the same settings (``measured_runs``) and
    measure only the missing ones, so that a stopped benchmark goes on or one seed grows to three.
    One benchmark at a time per ``config.out_dir`` (``out_dir_lock``)."""
    with out_dir_lock(config.out_dir):
        return _measure_and_report(config, json_path, plot_path, quick, echo, resume)


def _measure_and_report(config: LearningBenchConfig, json_path: str, plot_path: str | None, quick: bool,
                        echo, resume: bool) -> dict:
    earlier, earlier_s = measured_runs(config, json_path, quick) if resume else ({}, 0.0)
    echo(f"bench learning: arms {config.arms}, {config.episodes} episodes x {config.seeds} seeds, evaluated every "
         f"{config.eval_every} episodes on {config.eval_seeds} held-out layouts x {len(config.tasks)} tasks; "
         f"policy {config.policy}, critic {config.critic}; runs in {config.out_dir}"
         + (f"; {len(earlier)} run(s) kept from {json_path}" if earlier else ""))
    started = time.perf_counter() - earlier_s
    order = [(arm, seed) for seed in range(config.seeds) for arm in config.arms]
    measured: dict = {}
    report: dict = {}
    for arm, seed in order:
        kept = earlier.get((arm, seed))
        run = kept or run_arm(config, arm, seed, echo)
        measured[(arm, seed)] = run
        # every kept run is in every report written, not only those the loop has reached: a resumed
        # benchmark stopped early must not lose the runs of later seeds that it had kept
        runs = [measured.get(k) or earlier[k] for k in order if k in measured or k in earlier]
        curve = " ".join(f"{e['episodes']}:{e['mean']:.2f}" for e in run["evaluations"])
        echo(f"{arm:>13} seed {seed}: success {curve}  (training interventions "
             f"{run['training']['intervention_rate'] or 0:.0%}, {run['wall_s']:.0f} s"
             + (", kept from the earlier report)" if kept else ")"))
        report = _report(config, runs, started, quick)
        _write(json_path, report)  # after every run: a long benchmark stopped early keeps what it measured
    if plot_path:
        plot(report["summary"], plot_path, f"{'QUICK (no claim): ' if quick else ''}{len(config.tasks)} tasks, "
                                           f"{config.seeds} seed(s), band: min-max across seeds")
    for arm, s in report["summary"].items():
        echo(f"{arm:>13}: start {s['start']:.2f} -> final {s['final']:.2f}; 80% at "
             f"{s['episodes_to_80'] if s['episodes_to_80'] is not None else 'never'} episodes")
    echo(f"goals: {report['goals']}  -> {json_path}" + (f", {plot_path}" if plot_path else ""))
    return report


def _report(config: LearningBenchConfig, runs: list[dict], started: float, quick: bool) -> dict:
    summary = summarise_runs(config, runs)
    per_seed_wall = {}
    for r in runs:
        per_seed_wall[r["seed"]] = per_seed_wall.get(r["seed"], 0.0) + r["wall_s"]
    return {
        "benchmark": "learning", "quick": quick,
        "claim": "none: --quick only shows that the pipeline runs" if quick else "measured",
        "config": asdict(config),
        "learner_settings": {arm: learner_settings(config, arm) for arm in config.arms},
        "policy": _policy_summary(config), "oracle_version": ORACLE_VERSION,
        "summary": summary, "goals": goals(summary),
        "wall_s_per_seed_all_arms": per_seed_wall, "wall_s_total": round(time.perf_counter() - started, 1),
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                    "cpus": multiprocessing.cpu_count()},
        "runs": runs,
    }


def _policy_summary(config: LearningBenchConfig) -> dict:
    from robot_rl.inference.backends import read_metadata

    m = read_metadata(config.policy)
    return {"path": config.policy, "cameras": m["cameras"], "image": [m["image_height"], m["image_width"]],
            "chunk_length": m.get("chunk_length"), "parameters": m.get("parameters"),
            "model_version": m.get("model_version")}


def _write(path: str, report: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(path)
