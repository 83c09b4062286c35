"""``robot-rl train-critic``: the pairwise progress critic from episodes, with VLAC's labels.

Reads top to bottom: the flat config, the episodes in memory, the pair sampler, the loss, the loop.

Data. Any episodes of the project's format: oracle demonstrations and imperfect ones (noisy oracle,
random walk; ``robot-rl collect --behaviour``) so that the critic sees regression and stagnation.
Labels are in ``labels.py``. Episodes whose seed is a multiple of ``heldout_every`` are held out
(``is_heldout``): never trained on, and what ``robot-rl eval-critic`` measures. ``exclude_tasks``
leaves whole tasks out, for the one-shot evaluation on a task the critic has never seen.

Each sample is a pair of frames of one episode:
- half from successful episodes, half from the others (when there are any);
- a short gap (1-3 steps, what the reward node scores) half of the time, else any gap; shown in
  either order, labelled by ``pair_label`` (so reversed pairs are negative);
- images that barely differ (mean absolute difference under ``stagnation_threshold`` grey levels)
  are labelled 0;
- with ``irrelevant_prompt_rate`` the pair is shown with an unrelated instruction (another task on
  other objects, or a distractor such as "fold the towel"): delta 0, done 0;
- with ``reference_rate`` it comes with K frames of another successful episode of the same task
  (the one-shot context); otherwise without.
Losses: squared error on the delta, binary cross-entropy on done where labelled. Images get random
shifts (as in BC). Checkpoints are atomic and resumable, like BC's.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from robot_rl.data.episodes import list_episodes, read_episode, read_meta
from robot_rl.learn.bc import random_shift, read_checkpoint, save_checkpoint
from robot_rl.policy.text import InstructionEncoder
from robot_rl.reward.critic import CriticConfig, ProgressCritic
from robot_rl.reward.local import resize_stack
from robot_rl.reward.labels import done_labels, image_difference, pair_label, progress_targets, success_step
from robot_rl.sim.tasks import unrelated_instructions

HELDOUT_EVERY = 5


def is_heldout(seed: int, every: int = HELDOUT_EVERY) -> bool:
    """The fixed train/held-out split: by world seed, so the same episode is always on the same side."""
    return every > 0 and seed % every == 0


@dataclass
class CriticTrainConfig:
    data: list[str]  # dataset directories
    out: str  # checkpoint path (.pt)
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    done_coef: float = 0.5
    shift_pad: int = 3
    heldout_every: int = HELDOUT_EVERY
    exclude_tasks: list[str] = field(default_factory=list)
    success_fraction: float = 0.5
    short_gap_rate: float = 0.5
    max_short_gap: int = 3
    stagnation_threshold: float = 1.0  # grey levels of mean absolute difference
    irrelevant_prompt_rate: float = 0.15
    reference_rate: float = 0.5
    checkpoint_every: int = 250
    seed: int = 0
    threads: int = 0
    model: dict = field(default_factory=dict)  # CriticConfig fields


@dataclass
class CriticEpisode:
    """One episode, ready for pair sampling: frames at the critic's size and per-row labels."""

    episode_id: str
    task: str
    instruction: str
    seed: int
    success: bool
    source: str
    frames: dict[str, np.ndarray]  # camera -> uint8 (T, H, W, 3)
    progress: np.ndarray | None  # v_t, or None (no progress labels)
    done: np.ndarray  # 1, 0 or NaN
    success_step: int

    def __len__(self) -> int:
        return len(self.done)

    def stacked(self, t: int) -> np.ndarray:
        return np.stack([self.frames[c][t] for c in self.frames])

    def reference_rows(self, k: int) -> np.ndarray:
        """K rows evenly spaced from the start to the first done row."""
        return np.linspace(0, min(self.success_step, len(self) - 1), k).round().astype(int)


def load_critic_episodes(dirs, cameras: list[str], height: int, width: int, select=None,
                         limit: int | None = None) -> list[CriticEpisode]:
    """Read episodes (only those whose meta passes ``select``; at most ``limit``) and resize their frames."""
    episodes, too_short = [], []
    for d in [dirs] if isinstance(dirs, (str, Path)) else dirs:
        for path in list_episodes(d):
            meta = read_meta(path)
            if select and not select(meta):
                continue
            if meta.length < 2:  # an empty or one-frame episode has no pair
                too_short.append(path.name)
                continue
            if limit is not None and len(episodes) >= limit:
                break
            missing = [c for c in cameras if c not in meta.cameras]
            if missing:
                raise ValueError(f"{path}: the critic needs cameras {cameras}, the episode has {meta.cameras}")
            ep = read_episode(path)
            frames = {c: resize_stack(ep.images[c], height, width) for c in cameras}
            episodes.append(CriticEpisode(meta.episode_id, meta.task, meta.instruction, meta.seed, meta.success,
                                          meta.source, frames, progress_targets(ep), done_labels(ep), success_step(ep)))
    if not episodes:
        short = f"; {len(too_short)} had fewer than 2 frames ({', '.join(too_short[:3])})" if too_short else ""
        raise ValueError(f"no usable episodes (selected, at least 2 frames) in {dirs}{short}")
    if too_short:
        warnings.warn(f"skipped {len(too_short)} episodes with fewer than 2 frames: {', '.join(too_short[:3])}", stacklevel=2)
    return episodes


class PairSampler:
    """Draws labelled pairs from episodes (see the module docstring for the mixture)."""

    def __init__(self, episodes: list[CriticEpisode], embeddings: dict[str, np.ndarray], config: CriticTrainConfig,
                 reference_frames: int, rng: np.random.Generator):
        self.episodes, self.embeddings, self.config, self.k, self.rng = episodes, embeddings, config, reference_frames, rng
        self.successes = [e for e in episodes if e.success]
        self.others = [e for e in episodes if not e.success]
        self.references: dict[str, list[CriticEpisode]] = {}
        for e in self.successes:
            self.references.setdefault(e.task, []).append(e)

    def _episode(self) -> CriticEpisode:
        pool = self.successes if (not self.others or self.rng.random() < self.config.success_fraction) else self.others
        pool = pool or self.others
        return pool[self.rng.integers(len(pool))]

    def sample(self, n: int) -> dict:
        c, rng = self.config, self.rng
        cams = None
        out = {"early": [], "late": [], "text": [], "delta": [], "delta_mask": [], "done": [], "refs": [], "ref_mask": []}
        for _ in range(n):
            ep = self._episode()
            cams = list(ep.frames)
            t = len(ep)
            gap = int(rng.integers(1, min(c.max_short_gap, t - 1) + 1)) if rng.random() < c.short_gap_rate else int(rng.integers(1, t))
            i = int(rng.integers(0, t - gap))
            j = i + gap
            if rng.random() < 0.5:
                i, j = j, i
            early, late = ep.stacked(i), ep.stacked(j)
            delta, known = (pair_label(ep.progress, i, j), 1.0) if ep.progress is not None else (0.0, 0.0)
            if image_difference(early, late) < c.stagnation_threshold:
                delta, known = 0.0, 1.0
            instruction, done = ep.instruction, float(ep.done[j])
            if rng.random() < c.irrelevant_prompt_rate:
                unrelated = unrelated_instructions(ep.task)
                instruction, delta, known, done = unrelated[rng.integers(len(unrelated))], 0.0, 1.0, 0.0
            refs, ref_mask = None, 0.0
            candidates = [r for r in self.references.get(ep.task, []) if r is not ep]
            if candidates and instruction == ep.instruction and rng.random() < c.reference_rate:
                ref = candidates[rng.integers(len(candidates))]
                refs, ref_mask = np.stack([ref.stacked(r) for r in ref.reference_rows(self.k)]), 1.0
            out["early"].append(early)
            out["late"].append(late)
            out["text"].append(self.embeddings[instruction])
            out["delta"].append(delta)
            out["delta_mask"].append(known)
            out["done"].append(done)
            out["refs"].append(refs)
            out["ref_mask"].append(ref_mask)
        out["cameras"] = cams
        return out


def batch_tensors(batch: dict, shift_pad: int = 0, generator: torch.Generator | None = None) -> dict:
    """Stack a sampled batch into tensors; frames (N, C, H, W, 3) become per-camera dicts."""
    cams = batch["cameras"]

    def per_camera(stack: np.ndarray) -> dict[str, torch.Tensor]:
        x = torch.from_numpy(stack)
        return {cam: random_shift(x[:, k], shift_pad, generator) if generator is not None else x[:, k] for k, cam in enumerate(cams)}

    with_refs = [n for n, r in enumerate(batch["refs"]) if r is not None]
    refs = None
    if with_refs:
        stack = np.stack([batch["refs"][n] for n in with_refs])  # (R, K, C, H, W, 3)
        r, k = stack.shape[:2]
        refs = per_camera(stack.reshape(r * k, *stack.shape[2:]))
    return {
        "early": per_camera(np.stack(batch["early"])), "late": per_camera(np.stack(batch["late"])),
        "text": torch.from_numpy(np.stack(batch["text"]).astype(np.float32)),
        "delta": torch.tensor(batch["delta"], dtype=torch.float32),
        "delta_mask": torch.tensor(batch["delta_mask"], dtype=torch.float32),
        "done": torch.tensor(batch["done"], dtype=torch.float32),
        "ref_rows": torch.tensor(with_refs, dtype=torch.long), "refs": refs,
        "ref_mask": torch.tensor(batch["ref_mask"], dtype=torch.float32),
    }


def critic_outputs(model: ProgressCritic, t: dict):
    """Training-side forward: reference frames are encoded only for the samples that have them."""
    b = t["text"].shape[0]
    ref_features = None
    if t["refs"] is not None:
        k = model.config.reference_frames
        encoded = model.encode(t["refs"]).view(len(t["ref_rows"]), k, -1)
        ref_features = encoded.new_zeros(b, k, encoded.shape[-1]).index_copy(0, t["ref_rows"], encoded)
    context = model.context(t["text"], ref_features, t["ref_mask"] if ref_features is not None else None)
    return model.heads(model.encode(t["early"]), model.encode(t["late"]), t["text"], context)


def critic_loss(model: ProgressCritic, t: dict, done_coef: float):
    delta, done_logit = critic_outputs(model, t)
    delta_loss = ((delta - t["delta"]) ** 2 * t["delta_mask"]).sum() / t["delta_mask"].sum().clamp_min(1.0)
    labelled = ~torch.isnan(t["done"])
    done_loss = (F.binary_cross_entropy_with_logits(done_logit[labelled], t["done"][labelled])
                 if labelled.any() else delta.new_zeros(()))
    correct = ((done_logit[labelled] > 0).float() == t["done"][labelled]).float().mean().item() if labelled.any() else float("nan")
    return delta_loss + done_coef * done_loss, {"delta_mse": delta_loss.item(), "done_bce": done_loss.item(), "done_acc": correct}


def load_critic_checkpoint(path: str | Path) -> dict:
    return read_checkpoint(path, ("critic_config", "model", "instructions"), "critic")


def critic_from_checkpoint(payload: dict) -> ProgressCritic:
    model = ProgressCritic(CriticConfig.from_dict(payload["critic_config"]))
    model.load_state_dict(payload["model"])
    return model.eval()


def train_critic(config: CriticTrainConfig, resume: bool = False, encoder: InstructionEncoder | None = None,
                 progress: bool = True, log=print) -> dict:
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    model_config = CriticConfig.from_dict(dict(config.model))
    excluded = set(config.exclude_tasks)
    episodes = load_critic_episodes(
        config.data, model_config.cameras, model_config.image_height, model_config.image_width,
        select=lambda m: not is_heldout(m.seed, config.heldout_every) and m.task not in excluded)
    instructions = sorted({e.instruction for e in episodes})
    encoder = encoder or InstructionEncoder()
    texts = set(instructions) | {u for e in episodes for u in unrelated_instructions(e.task)}
    embeddings = {t: encoder.encode(t) for t in sorted(texts)}
    model = ProgressCritic(model_config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    start_step = 0
    if resume and Path(config.out).is_file():
        payload = load_critic_checkpoint(config.out)
        if payload["critic_config"] != model_config.to_dict():
            raise ValueError(f"checkpoint {config.out} was trained with a different critic config; "
                             "start a new one (another --out) or drop --resume")
        model.load_state_dict(payload["model"])
        optimiser.load_state_dict(payload["optimiser"])
        start_step = int(payload["step"])
        rng.bit_generator.state = payload["rng"]
        log(f"resuming {config.out} at step {start_step}")
    sampler = PairSampler(episodes, embeddings, config, model_config.reference_frames, rng)
    generator = torch.Generator().manual_seed(config.seed + start_step)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, (s + start_step) / max(1, config.steps)))))
    summary = {"episodes": len(episodes), "successes": len(sampler.successes), "others": len(sampler.others),
               "tasks": sorted({e.task for e in episodes}), "excluded_tasks": sorted(excluded)}
    log(f"train-critic: {summary['episodes']} episodes ({summary['successes']} successful) of {summary['tasks']}")
    metrics: dict = {}

    def checkpoint(step: int) -> None:
        save_checkpoint(config.out, {
            "critic_config": model_config.to_dict(), "model": model.state_dict(), "optimiser": optimiser.state_dict(),
            "step": step, "rng": rng.bit_generator.state, "train_config": asdict(config), "metrics": metrics,
            "instructions": instructions, "data": summary,
        })

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.steps, initial=start_step, desc="train-critic", unit="step")
    model.train()
    running: dict[str, float] = {}
    for step in range(start_step, config.steps):
        t = batch_tensors(sampler.sample(config.batch_size), config.shift_pad, generator)
        loss, parts = critic_loss(model, t, config.done_coef)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        for k, v in parts.items():
            if not math.isnan(v):
                running[k] = 0.95 * running.get(k, v) + 0.05 * v
        if bar:
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()})
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            metrics["train_running"] = dict(running)
            checkpoint(step + 1)
    if bar:
        bar.close()
    metrics["train_running"] = dict(running)
    checkpoint(max(config.steps, start_step))
    log(f"critic checkpoint {config.out}: " + ", ".join(f"{k} {v:.4f}" for k, v in running.items()))
    return metrics
