"""The asynchronous learner: episodes in, PPO updates, versioned weights out (``robot-rl learner``).

A plain process, no ROS. Seams (acme's names): the *inbox* (``transport.links.EpisodeInbox``)
receives and stores robots' episodes; the *reward* is the progress critic's (``reward_from``: the
learner's own critic, or the ``reward`` the robot's reward node recorded), never simulator ground
truth; the *update* is ``ppo.py``; the *variable source* is the weights publisher.

One update takes ``episodes_per_update`` episodes in arrival order. After it the version counter
goes up; every ``publish_every`` updates the weights go out as a versioned safetensors message and
are written to ``<run_dir>/weights/v<N>.safetensors``. Every ``checkpoint_every`` updates the run is
checkpointed atomically (weights, optimiser, version counter, the stored versions, the demo buffer);
episodes used by the checkpointed updates then move from ``inbox/`` to ``episodes/``. A learner killed
at any moment restarts from its checkpoint: episodes still in ``inbox/`` are used again, and robots
resend what was never acknowledged from their spools.

Ground truth (``meta.success`` from the simulator) appears only in the reported success rate.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import yaml

from robot_rl.data.episodes import Episode, EpisodeFormatError, list_episodes, read_episode
from robot_rl.learn.bc import OBJECT_HEAD_LR_SCALE, ObjectPositionHead, read_checkpoint, save_checkpoint, shift_frames
from robot_rl.learn.buffers import DemoBuffer, VersionStore
from robot_rl.learn.device import resolve_device, to_device
from robot_rl.learn.ppo import (DataParallel, Decisions, GradientNoise, PPOConfig, collate, demo_phase,
                                episode_decisions, evaluate_rows, explained_variance, fit_value, gae, ppo_update,
                                step_arrays, surrogate_gradient_sums)
from robot_rl.policy.text import InstructionEncoder
from robot_rl.policy.vla import VLAConfig, VLAModel, config_from_dict
from robot_rl.reward.shaping import ProgressTracker, RewardConfig, progress_rewards

log = logging.getLogger("robot_rl.learner")


@dataclass
class HILConfig:
    """VLAC's graded human-in-the-loop protocol, each part switchable."""

    demo_replay: bool = True  # (1) demonstrations preloaded into the demo buffer, NLL next to PPO
    # (2) resets to states where the policy needed help: the actors do it (sim: the sim bridge's failure
    # state bank, switched on by robot-rl train --sim from this flag; a robot: the operator's resets)
    return_and_explore: bool = False
    human_guided: bool = True  # (3) steps a human commanded go to the demo buffer, never the PPO ratio


@dataclass
class LearnerConfig:
    run_dir: str = "runs/learner"
    policy: str = "policies/sim_default"  # starting weights: an export directory or a train-bc checkpoint
    critic: str = "policies/sim_critic"  # make_critic spec: export dir, checkpoint, tcp://host:port
    reward_from: str = "critic"  # "critic" (score the frames here) or "episode" (the recorded reward)
    critic_stride_s: float = 0.2  # seconds between the frames of a scored pair (VLAC: about 0.2 s)
    demos: str = ""  # directory of demonstrations preloaded into the demo buffer
    demo_capacity: int = 5000
    episodes_per_update: int = 8
    publish_every: int = 1  # K: publish weights every K updates
    checkpoint_every: int = 1
    keep_episodes: bool = True  # move used episodes to <run_dir>/episodes (False: delete them)
    bind_episodes: str = "tcp://*:5555"
    bind_weights: str = "tcp://*:5556"
    secret_key: str = "keys/learner.key_secret"
    allowed_keys: str = "keys/allowed_robots"
    threads: int = 0
    # where updates compute: auto (a GPU when PyTorch sees one, else the CPU), cpu, cuda, cuda:N; under
    # torchrun each rank takes cuda:LOCAL_RANK (learn/device.py). Episodes, buffers, checkpoints and
    # published weights stay on the CPU whichever it is.
    device: str = "auto"
    seed: int = 0
    tensorboard: bool = True
    # updates pooled for the gradient-noise scale, how much of a step is signal (ppo.py section 10;
    # one more forward and backward pass over each batch); 0: not measured
    gradient_noise_window: int = 20
    ppo: PPOConfig = field(default_factory=PPOConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    hil: HILConfig = field(default_factory=HILConfig)

    @classmethod
    def from_dict(cls, d: dict) -> "LearnerConfig":
        d = dict(d)
        nested = {"ppo": PPOConfig, "reward": RewardConfig, "hil": HILConfig}
        parts = {k: config_from_dict(c, d.pop(k) or {}, f"learner {k}") for k, c in nested.items() if k in d}
        return config_from_dict(cls, {**d, **parts}, "learner")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "LearnerConfig":
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read the learner config: {exc}") from exc
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of learner settings")
        try:
            return cls.from_dict(raw.get("learner", raw))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from exc


def load_start_policy(spec: str) -> tuple[VLAModel, dict[str, np.ndarray]]:
    """(model, instruction embeddings) from an export directory or a train-bc checkpoint."""
    path = Path(spec)
    if path.is_dir():
        from safetensors.torch import load_file

        from robot_rl.inference.backends import read_metadata

        metadata = read_metadata(path)
        weights = path / "weights.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"{weights} does not exist: the learner needs the export's PyTorch weights")
        model = VLAModel(VLAConfig.from_dict(metadata["model_config"]))
        model.load_state_dict(load_file(str(weights)))
        table = metadata.get("instruction_embeddings", {})
    else:
        from robot_rl.learn.bc import load_checkpoint, model_from_checkpoint

        payload = load_checkpoint(path)
        model, table = model_from_checkpoint(payload), payload["instruction_embeddings"]
    return model.eval(), {k: np.asarray(v, np.float32) for k, v in table.items()}


def state_bytes(model: torch.nn.Module) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()})


def critic_rewards(critic, episode: Episode, stride: int, config: RewardConfig) -> tuple[np.ndarray, int | None]:
    """Per-step rewards from the progress critic and the step at which its done fired (or None).

    Frames ``stride`` steps apart are scored pairwise; the shaped reward of a pair goes to the last
    step before its later frame (the steps between led there together)."""
    from robot_rl.reward.base import PairRequest

    t = len(episode)
    rows = np.unique(np.append(np.arange(0, t, stride), t - 1))
    rewards = np.zeros(t, np.float32)
    if len(rows) < 2:
        return rewards, None
    frames = {c: episode.images[c][rows] for c in episode.meta.cameras}
    scores = critic.score([PairRequest({c: f[:-1] for c, f in frames.items()}, {c: f[1:] for c, f in frames.items()},
                                       episode.meta.instruction)])[0]
    tracker = ProgressTracker(config)
    values = [0.0] + [tracker.update(d, p)[0] for d, p in zip(scores.delta, scores.done_prob)]
    pair_rewards, fired = progress_rewards(np.asarray(values), scores.done_prob, config)
    rewards[rows[1:] - 1] = pair_rewards
    return rewards, (int(rows[fired + 1]) if fired is not None else None)


def episode_rewards(episode: Episode, config: RewardConfig) -> tuple[np.ndarray, int | None]:
    """Per-step rewards from what the robot's reward node recorded (``reward_from: episode``).

    The recorded rewards are the critic's progress deltas; they are scaled by ``shaping_scale``, and an
    episode the critic's done ended (``meta.extra.critic_done``, set by the episode recorder) gets
    ``success_bonus`` on its last step and is terminal (no bootstrap)."""
    rewards = np.asarray(episode.extras["reward"], np.float32) * config.shaping_scale
    if episode.meta.extra.get("critic_done") and len(rewards):
        rewards[-1] += config.success_bonus
        return rewards, len(rewards)
    return rewards, None


class Learner:
    def __init__(self, config: LearnerConfig, critic=None, log_fn=None):
        if config.reward_from not in ("critic", "episode"):
            raise ValueError(f"reward_from '{config.reward_from}': expected 'critic' or 'episode'")
        self.config = config
        self.log = log_fn or log.info
        self.run_dir = Path(config.run_dir)
        for sub in ("inbox", "episodes", "weights"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.device = resolve_device(config.device, what="learner device")
        self.rng = np.random.default_rng(config.seed)
        self.model, table = load_start_policy(config.policy)
        self.model.to(self.device)
        # scratch model for old versions' log-probs
        self.behaviour = VLAModel(self.model.config).to(self.device).eval()
        self.reference = None  # the starting policy, frozen, for the anchor (ppo.py section 8)
        if config.ppo.anchor_coef > 0:
            # loaded again from the same spec, so a resumed learner anchors to the same weights
            self.reference = load_start_policy(config.policy)[0].to(self.device).eval().requires_grad_(False)
        self.encoder = InstructionEncoder(table)
        if not config.ppo.train_image_encoders:
            # fewer parameters per noisy on-policy step; also spares the backward pass through the CNNs
            for p in self.model.encoders.parameters():
                p.requires_grad_(False)
        trained = [p for p in self.model.parameters() if p.requires_grad]
        self.optimiser = torch.optim.Adam(trained, lr=config.ppo.lr)
        # the demonstration phase's own optimiser (ppo.py section 6): its step sizes are not PPO's
        self.demo_optimiser = torch.optim.Adam(trained, lr=config.ppo.demo_lr)
        # the value fit's own optimiser, on the value head alone (ppo.py section 7)
        self.value_optimiser = torch.optim.Adam(self.model.value_head.parameters(), lr=config.ppo.value_lr)
        self.value_window: collections.deque = collections.deque(maxlen=max(1, config.ppo.value_window))
        self.gradient_noise = GradientNoise(config.gradient_noise_window) if config.gradient_noise_window > 0 else None
        self.versions = VersionStore(config.ppo.max_staleness + 1)
        self.version = 0
        self.updates = 0
        self.counters = {"episodes": 0, "steps": 0, "dropped_stale": 0, "dropped_unreadable": 0, "decisions": 0,
                         "dropped_exploration": 0, "human_steps": 0, "skipped_batches": 0,
                         # the critic's done against the episodes' recorded outcome (simulator ground truth or
                         # the operator's event): whether the reward sees the successes (reported, not learned from)
                         "reported_successes": 0, "critic_done_on_success": 0, "critic_done_on_failure": 0}
        self.used: list[str] = []  # episode ids of updates since the last checkpoint
        c = self.model.config
        self.demos = DemoBuffer(c.cameras, (c.image_height, c.image_width), len(c.joint_names), c.chunk_length,
                                config.demo_capacity)
        self.critic = critic
        self.history: list[dict] = []
        self.started = time.time()
        self.inbox = self.publisher = None
        self.queue: queue.Queue[Path] = queue.Queue()
        self.writer = None
        self.stop_event = threading.Event()
        self.parallel = None  # data-parallel part when torch.distributed is initialised (torchrun)
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            self.parallel = DataParallel(torch.distributed.get_rank(), torch.distributed.get_world_size(), self.device)
        self.object_head: ObjectPositionHead | None = None  # training-only (ppo.py section 6, objects_coef)
        if not self._resume():
            self.versions.add(0, self.model.state_dict())
            if config.hil.demo_replay and config.demos:
                self._preload_demos(config.demos)
            if config.ppo.objects_coef > 0 and config.ppo.demo_steps:
                self._fit_object_head()
        self.metrics_file = open(self.run_dir / "metrics.jsonl", "a")

    # -- set-up -------------------------------------------------------------------------------
    def _preload_demos(self, directory: str) -> None:
        added = 0
        for path in list_episodes(directory):
            episode = read_episode(path)
            if episode.meta.success and self._compatible(episode):
                added += self.demos.add_demonstration(episode)
        self.log(f"demo buffer: {added} samples preloaded from {directory}")

    def _new_object_head(self, mean: np.ndarray, std: np.ndarray) -> ObjectPositionHead:
        c = self.model.config
        head = ObjectPositionHead(c.image_features * len(c.cameras), mean, std).to(self.device)
        self.demo_optimiser.add_param_group({"params": list(head.parameters()),
                                             "lr": self.config.ppo.demo_lr * OBJECT_HEAD_LR_SCALE})
        return head

    @torch.no_grad()
    def _fit_object_head(self, max_rows: int = 4000, ridge: float = 1e-3) -> None:
        """The object head, fitted by ridge regression on the starting policy's image features of the
        demo rows that record object positions, before the first update: a head at random would send
        the encoder a large, meaningless gradient in the first demo-phase steps.

        The features are those of the frames shifted as the demo phase shifts them (``demo_shift_pad``):
        a head fitted on unshifted frames reads where an object sits in the pixel grid, which a 4-pixel
        shift moves, and on the demo phase's shifted frames it was off by 33-37 mm where it fits to 5 mm
        (docs/learning-benchmark.md item 40); that error, not the task, then drove the encoder's
        gradient for the run's first updates."""
        rows = self.demos.object_rows()
        if not len(rows):
            raise ValueError(f"ppo.objects_coef {self.config.ppo.objects_coef}: the demo buffer has no rows with "
                             f"'object_positions' (demos '{self.config.demos}'; simulated demonstrations from "
                             "robot-rl collect record them); set ppo.objects_coef 0")
        rows = self.rng.permutation(rows)[:max_rows]
        objects = self.demos.objects[rows]
        mean, std = objects.mean(0), objects.std(0)
        head = self._new_object_head(mean, std)
        self.model.eval()
        # the features on the CPU in float64: the solve is small, and the same on every device
        generator = torch.Generator().manual_seed(self.config.seed)
        feats = []
        for i in range(0, len(rows), 256):
            frames = {c: torch.from_numpy(self.demos.images[c][rows[i:i + 256]]) for c in self.model.config.cameras}
            frames = shift_frames(frames, self.config.ppo.demo_shift_pad, generator)
            feats.append(self.model.image_features(to_device(frames, self.device)).cpu())
        feats = torch.cat(feats).double()
        target = torch.from_numpy((objects - mean) / head.std.cpu().numpy()).double()
        x = torch.cat([feats, torch.ones(len(feats), 1, dtype=torch.float64)], dim=1)
        solution = torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1], dtype=torch.float64), x.T @ target)
        head.linear.weight.copy_(solution[:-1].T.float())
        head.linear.bias.copy_(solution[-1].float())
        _, mm = head.loss(feats.float().to(self.device), torch.from_numpy(objects).to(self.device))
        self.object_head = head
        self.log(f"object head: fitted on {len(rows)} demo rows, mean error {mm:.1f} mm")

    def add_human_steps(self, episode: Episode) -> int:
        """HIL (3), human-guided exploration: the steps the human commanded join the demo buffer (they
        never enter the PPO ratio). Returns the rows added; ``bench refit`` rebuilds a run's buffer with it."""
        return self.demos.add_episode(episode, np.nonzero(episode.intervention)[0])

    def _compatible(self, episode: Episode) -> bool:
        c, m = self.model.config, episode.meta
        missing = [cam for cam in c.cameras if cam not in m.cameras]
        if missing or (m.image_height, m.image_width) != (c.image_height, c.image_width) or m.joint_names != c.joint_names:
            self.log(f"episode {m.episode_id}: cameras {m.cameras} at {m.image_height}x{m.image_width}, joints "
                     f"{m.joint_names}; the policy needs {c.cameras} at {c.image_height}x{c.image_width}, joints "
                     f"{c.joint_names}: not used")
            return False
        return True

    def _embed(self, instruction: str) -> np.ndarray:
        return self.encoder.encode(instruction)

    def _critic(self):
        if self.critic is None:
            from robot_rl.reward.base import make_critic

            self.critic = make_critic(self.config.critic, allow_unseen_instructions=False)
        return self.critic

    # -- checkpoint -----------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def _resume(self) -> bool:
        if not self.checkpoint_path.is_file():
            return False
        payload = read_checkpoint(self.checkpoint_path, ("model", "optimiser", "version", "versions"), "learner")
        self.model.load_state_dict(payload["model"])
        self.optimiser.load_state_dict(payload["optimiser"])
        if "object_head" in payload:  # before the demo optimiser's state, which holds the head's group
            head = payload["object_head"]
            self.object_head = self._new_object_head(head["mean"].numpy(), head["std"].numpy())
            self.object_head.load_state_dict(head)
        elif self.config.ppo.objects_coef > 0 and self.config.ppo.demo_steps:
            raise ValueError(f"{self.checkpoint_path}: the run was checkpointed without the object head and "
                             f"ppo.objects_coef is {self.config.ppo.objects_coef}: resume with ppo.objects_coef 0")
        if "demo_optimiser" in payload:
            self.demo_optimiser.load_state_dict(payload["demo_optimiser"])
        if "value_optimiser" in payload:  # the value window itself is not kept: it refills in a few updates
            self.value_optimiser.load_state_dict(payload["value_optimiser"])
        self.version, self.updates = int(payload["version"]), int(payload["updates"])
        self.versions = VersionStore.from_dict(payload["versions"])
        self.counters.update(payload.get("counters", {}))
        self.rng = np.random.default_rng([self.config.seed, self.updates])
        if (self.run_dir / "demo_buffer.npz").is_file():
            self.demos.load(self.run_dir / "demo_buffer.npz")
        self.log(f"resumed {self.checkpoint_path}: version {self.version}, {self.updates} updates, "
                 f"{self.counters['episodes']} episodes, demo buffer {len(self.demos)}")
        return True

    def checkpoint(self) -> None:
        self.demos.save(self.run_dir / "demo_buffer.npz")
        save_checkpoint(self.checkpoint_path, {
            "model": self.model.state_dict(), "optimiser": self.optimiser.state_dict(),
            "demo_optimiser": self.demo_optimiser.state_dict(),
            "value_optimiser": self.value_optimiser.state_dict(), "version": self.version,
            **({"object_head": self.object_head.state_dict()} if self.object_head is not None else {}),
            "updates": self.updates, "versions": self.versions.to_dict(), "counters": dict(self.counters),
            "model_config": self.model.config.to_dict(), "config": json.loads(json.dumps(asdict(self.config)))})
        for eid in self.used:  # these updates are safe now: their episodes leave the inbox
            src = self.run_dir / "inbox" / eid
            if src.is_dir():
                if self.config.keep_episodes:
                    shutil.move(str(src), self.run_dir / "episodes" / eid)
                else:
                    shutil.rmtree(src)
        self.used = []

    # -- one update ---------------------------------------------------------------------------
    def prepare(self, episodes: list[Episode]) -> tuple[Decisions | None, dict]:
        """Rewards, staleness, decisions and demo samples of a batch of episodes."""
        cfg, c = self.config, self.model.config
        kept, per_episode, terminal, report = [], [], [], {"returns": [], "success": [], "intervention_rate": []}
        for e in episodes:
            versions, _, _ = step_arrays(e)
            acted = versions[versions >= 0]
            if len(acted) and (self.version - acted.min() > cfg.ppo.max_staleness or not all(int(v) in self.versions for v in np.unique(acted))):
                self.counters["dropped_stale"] += 1
                self.log(f"episode {e.meta.episode_id}: acted by version {int(acted.min())}, learner at {self.version} "
                         f"(max_staleness {cfg.ppo.max_staleness}): dropped")
                continue
            # step noise for episodes from before the field; None: the policy did not explore
            noise = e.meta.extra.get("exploration", "step")
            if noise is not None and noise != cfg.ppo.exploration and len(acted):
                # its log-probabilities would be taken for noise it was not drawn with (ppo.py section 9)
                self.counters["dropped_exploration"] += 1
                self.log(f"episode {e.meta.episode_id}: its policy explored with {noise!r} noise, the learner's "
                         f"ppo.exploration is {cfg.ppo.exploration!r}: dropped (set the policy's explore_noise "
                         f"and the learner's ppo.exploration alike)")
                continue
            if cfg.reward_from == "episode":
                if "reward" not in e.extras:
                    raise EpisodeFormatError(f"episode {e.meta.episode_id} has no 'reward' array (reward_from: episode)")
                rewards, done = episode_rewards(e, cfg.reward)
            else:
                stride = max(1, round(cfg.critic_stride_s * e.meta.control_rate_hz))
                rewards, done = critic_rewards(self._critic(), e, stride, cfg.reward)
            if cfg.hil.human_guided and e.intervention.any():
                self.counters["human_steps"] += self.add_human_steps(e)
            decisions = episode_decisions(e, rewards, c.chunk_length, cfg.ppo.gamma, end=done,
                                          intervention_penalty=cfg.ppo.intervention_penalty)
            report["returns"].append(float(rewards[: done].sum() if done else rewards.sum()))
            report["success"].append(float(e.meta.success))  # ground truth: reported, never learned from
            self.counters["reported_successes"] += bool(e.meta.success)
            self.counters["critic_done_on_success" if e.meta.success else "critic_done_on_failure"] += done is not None
            report["intervention_rate"].append(float(e.intervention.mean()) if len(e) else 0.0)
            self.counters["episodes"] += 1
            self.counters["steps"] += len(e)
            if decisions:
                kept.append(e)
                per_episode.append(decisions)
                terminal.append(done is not None)
        if not kept:
            return None, report
        return collate(kept, per_episode, terminal), report

    def update(self, episodes: list[Episode]) -> dict | None:
        t0 = time.perf_counter()
        d, report = self.prepare(episodes)
        self.used += [e.meta.episode_id for e in episodes]
        if d is None:  # nothing the policy decided (the human had every step, or all were stale): no version
            self.counters["skipped_batches"] += 1
            self.log(f"learner: {len(episodes)} episodes hold no policy decision to learn from: no update "
                     f"(version stays {self.version})")
            return None
        # behaviour log-probabilities from the weights that acted (the current model's own for rows
        # of the current version: one pass gives those and every value), values from the current weights
        noise = self.config.ppo.exploration
        old, values = evaluate_rows(self.model, d, self._embed, exploration=noise)
        prox = old.copy()  # the proximal policy: these weights, before the update (ppo.py section 3)
        for v in np.unique(d.version[d.version != self.version]):
            rows = np.nonzero(d.version == v)[0]
            self.behaviour.load_state_dict(self.versions.get(int(v)))
            old[rows] = evaluate_rows(self.behaviour, _subset(d, rows), self._embed, exploration=noise)[0]
        next_values = np.zeros(len(d), np.float32)
        next_values[:-1] = values[1:]
        for i, e in enumerate(d.episodes):
            last_row = np.nonzero(d.episode == i)[0][-1]
            if i in d.last_obs:
                t = d.last_obs[i]
                with torch.no_grad():
                    images, joints, text = to_device(
                        ({cam: torch.from_numpy(e.images[cam][t:t + 1]) for cam in e.meta.cameras},
                         torch.from_numpy(e.joint_positions[t:t + 1]),
                         torch.from_numpy(self._embed(e.meta.instruction)[None])), self.device)
                    _, _, v = self.model.forward_normalised(images, joints, text)
                next_values[last_row] = float(v[0])
            else:
                next_values[last_row] = 0.0
        adv, returns = gae(d.rewards, values, next_values, d.discounts, d.terminal, d.episode, self.config.ppo.gae_lambda)
        noise_stats = {}
        if self.gradient_noise is not None and self.leader:  # before the step: the gradient it will take
            t_noise = time.perf_counter()
            self.gradient_noise.add(*surrogate_gradient_sums(self.model, d, adv, old, self.config.ppo, self._embed,
                                                             prox_log_prob=prox))
            noise_stats = {**self.gradient_noise.report(len(d.episodes)),
                           "gradient_noise_s": time.perf_counter() - t_noise}
        demos = self.demos if self.config.hil.demo_replay or self.config.hil.human_guided else None
        stats = ppo_update(self.model, self.optimiser, d, old, adv, returns, self.config.ppo, self._embed,
                           demos if self.config.ppo.demo_coef > 0 else None, self.rng, parallel=self.parallel,
                           prox_log_prob=prox, reference=self.reference)
        stats["value_explained_variance"] = explained_variance(values, returns)
        stats.update(noise_stats)
        if demos is not None and len(demos) and self.config.ppo.demo_steps:
            stats.update(demo_phase(self.model, self.demo_optimiser, demos, self.config.ppo, self._embed, self.rng,
                                    parallel=self.parallel, object_head=self.object_head))
        if self.config.ppo.value_steps > 0:
            # the rows only: the episodes they came from (every frame) would be held for value_window updates
            self.value_window.append((replace(d, episodes=[]), returns))
            stats.update(fit_value(self.model, self.value_optimiser, list(self.value_window), self.config.ppo,
                                   self._embed, self.rng))
        self.updates += 1
        self.version += 1
        self.versions.add(self.version, self.model.state_dict())
        self.counters["decisions"] += len(d)
        publish_ms = None
        if not self.leader:  # the other data-parallel ranks only compute
            return {"update": self.updates, "version": self.version, **stats}
        if self.updates % self.config.publish_every == 0:
            publish_ms = self.publish()
        if self.updates % self.config.checkpoint_every == 0:
            self.checkpoint()
        elapsed = time.time() - self.started
        row = {"update": self.updates, "version": self.version, "batch_decisions": len(d),
               "success": float(np.mean(report["success"])) if report["success"] else None,
               "return": float(np.mean(report["returns"])) if report["returns"] else None,
               "intervention_rate": float(np.mean(report["intervention_rate"])) if report["intervention_rate"] else None,
               "update_s": time.perf_counter() - t0, "publish_ms": publish_ms, "demo_buffer": len(self.demos),
               "episodes_per_s": self.counters["episodes"] / max(elapsed, 1e-9),
               "steps_per_s": self.counters["steps"] / max(elapsed, 1e-9), **stats, **self.counters}
        self._record(row)
        return row

    def _record(self, row: dict) -> None:
        self.history.append(row)
        self.metrics_file.write(json.dumps(row) + "\n")
        self.metrics_file.flush()
        if self.config.tensorboard and self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:
                self.config.tensorboard = False
                self.log("tensorboard is not installed: scalars go to metrics.jsonl only")
        if self.writer is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)):
                    self.writer.add_scalar(f"learner/{k}", v, self.updates)
            self.writer.flush()

    # -- weights out ----------------------------------------------------------------------------
    def publish(self) -> float:
        t0 = time.perf_counter()
        blob = state_bytes(self.model)
        path = self.run_dir / "weights" / f"v{self.version}.safetensors"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(blob)
        tmp.replace(path)
        if self.publisher is not None:
            self.publisher.publish(self.version, self.model.config.to_dict(), blob)
        return (time.perf_counter() - t0) * 1e3

    # -- the process ----------------------------------------------------------------------------
    @property
    def leader(self) -> bool:
        """Rank 0 (or the only learner): it talks to the robots, publishes and checkpoints."""
        return self.parallel is None or self.parallel.rank == 0

    def _share_batch(self, paths: list[Path] | None) -> list[Path] | None:
        """Rank 0 tells the other ranks which episodes the next update uses (None: stop). The run
        directory must be on storage every rank can read (the same host, or a shared file system)."""
        box = [None if paths is None else [str(p) for p in paths]]
        torch.distributed.broadcast_object_list(box, src=0)
        return None if box[0] is None else [Path(p) for p in box[0]]

    def follow(self) -> None:
        """A data-parallel rank other than 0: update on the batches rank 0 shares until it stops."""
        while True:
            paths = self._share_batch(None)
            if paths is None:
                return
            self.update([read_episode(p) for p in paths])

    def serve(self, max_updates: int | None = None, progress: bool = True) -> None:
        """Receive episodes and update until ``max_updates`` or :meth:`stop`."""
        from robot_rl.transport.links import EpisodeInbox, WeightsPublisher
        from robot_rl.transport.security import ServerKeys

        keys = ServerKeys(self.config.secret_key, self.config.allowed_keys)
        archived = {p.name for p in (self.run_dir / "episodes").iterdir()}
        for path in list_episodes(self.run_dir / "inbox"):  # stored before a restart, not yet learned from
            self.queue.put(path)
        self.inbox = EpisodeInbox(self.config.bind_episodes, keys, self.run_dir / "inbox", known_ids=archived,
                                  on_episode=self.queue.put).start()
        self.publisher = WeightsPublisher(self.config.bind_weights, keys)
        self.publish()  # robots that connect get the current version
        self.log(f"learner: episodes on {self.inbox.address}, weights on {self.publisher.address}, version {self.version}")
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=max_updates, desc="updates", unit="update", dynamic_ncols=True)
        batch: list[Episode] = []
        paths: list[Path] = []
        try:
            while not self.stop_event.is_set() and (max_updates is None or self.updates < max_updates):
                try:
                    path = self.queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                try:
                    episode = read_episode(path)
                except EpisodeFormatError as exc:
                    self.counters["dropped_unreadable"] += 1
                    self.log(f"learner: {exc}: skipped")
                    continue
                if not self._compatible(episode):
                    self.used.append(episode.meta.episode_id)
                    continue
                batch.append(episode)
                paths.append(path)
                if len(batch) >= self.config.episodes_per_update:
                    if self.parallel is not None:
                        self._share_batch(paths)
                    row = self.update(batch)
                    batch, paths = [], []
                    if bar is not None and row:
                        bar.update(1)
                        bar.set_postfix(version=row["version"], ret=f"{row['return']:.2f}", success=f"{row['success']:.2f}",
                                        kl=f"{row['approx_kl']:.3f}")
        finally:
            if bar is not None:
                bar.close()
            if self.parallel is not None:
                self._share_batch(None)  # the other ranks stop too
            self.close()

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        for part in (self.inbox, self.publisher):
            if part is not None:
                part.close()
        self.inbox = self.publisher = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.metrics_file.close()


def _subset(d: Decisions, rows: np.ndarray) -> Decisions:
    return Decisions({c: v[rows] for c, v in d.images.items()}, d.joints[rows], [d.instructions[i] for i in rows],
                     d.actions[rows], d.mask[rows], d.version[rows], d.rewards[rows], d.discounts[rows], d.terminal[rows],
                     d.episode[rows], {})
