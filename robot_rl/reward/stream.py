"""Progress of a running episode from a stream of camera frames: the logic of ``reward_node``.

Frames are offered as they arrive. A frame set is *sampled* when every camera has a frame newer than
the last sample and ``stride_s`` has passed since it (VLAC scores pairs about 0.2 s apart). Each
sample pairs with the previous one; pending pairs are scored in batches of up to ``max_batch`` (one
critic call), in order, and each gives one :class:`ProgressOutput` with the running value.

When the critic fails (a remote server gone, bad input) the failed pairs give no output; the newest
sample stays as the start of the next pair, so the next delta spans the gap instead of being lost.
Outputs that are not finite are never produced. ``reset`` starts a new episode: value 0, no previous
frame, pending pairs of the old episode dropped (even one being scored right now).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from robot_rl.reward.base import Critic, CriticError, CriticUnavailableError, PairRequest
from robot_rl.reward.shaping import ProgressTracker, RewardConfig
from robot_rl.sim.tasks import normalise_instruction


@dataclass
class ProgressOutput:
    stamp: float  # of the later frame
    delta: float
    value: float
    done_prob: float
    done: bool


class ProgressStream:
    def __init__(self, critic: Critic, stride_s: float = 0.2, max_batch: int = 8,
                 references: dict[str, np.ndarray] | None = None, allow_unseen: bool = False,
                 reward: RewardConfig | None = None):
        self.critic, self.stride_s, self.max_batch = critic, float(stride_s), int(max_batch)
        self.references, self.allow_unseen = references, allow_unseen
        self.tracker = ProgressTracker(reward)
        self.lock = threading.Lock()
        self.instruction: str | None = None
        self.episode = 0
        self.previous: tuple[float, dict[str, np.ndarray]] | None = None
        self.pending: list[tuple[float, dict[str, np.ndarray]]] = []
        self.last_sample: float | None = None
        self.sampled_stamps: dict[str, float] = {}
        self.errors = 0
        self.last_error = ""
        self.scored = 0

    def reset(self, instruction: str) -> None:
        """A new episode with this instruction; raises CriticError for an instruction the critic
        cannot judge (not trained on it, no reference frames, not allowed)."""
        known = [normalise_instruction(i) for i in getattr(self.critic, "instructions", [])]
        with self.lock:
            self.episode += 1
            self.previous, self.pending, self.sampled_stamps, self.last_sample = None, [], {}, None
            self.tracker.reset()
            self.instruction = None
            if known and normalise_instruction(instruction) not in known and self.references is None and not self.allow_unseen:
                raise CriticError(f"instruction '{instruction}' is not one the critic was trained on "
                                  f"({getattr(self.critic, 'instructions', [])}); set reference_episode (one-shot) "
                                  "or allow_unseen_instructions")
            self.instruction = instruction

    def offer(self, stamps: dict[str, float], frames: dict[str, np.ndarray]) -> bool:
        """The newest frame of every camera; True when it became a sample."""
        with self.lock:
            if self.instruction is None:
                return False
            newest = max(stamps[c] for c in self.critic.cameras)
            last = self.last_sample  # (not pending[-1]: the worker may hold the newest samples right now)
            if last is not None and newest < last:  # time went back (a sim reset without a new instruction)
                self.previous, self.pending, self.sampled_stamps, last = None, [], {}, None
                self.tracker.reset()
            if any(stamps[c] <= self.sampled_stamps.get(c, -1.0) for c in self.critic.cameras):
                return False  # not a complete new set yet
            if last is not None and newest - last < self.stride_s - 1e-3:
                return False
            self.sampled_stamps = {c: stamps[c] for c in self.critic.cameras}
            self.last_sample = newest
            sample = (newest, {c: frames[c] for c in self.critic.cameras})
            if self.previous is None:
                self.previous = sample
            else:
                self.pending.append(sample)
            return True

    def has_work(self) -> bool:
        with self.lock:
            return bool(self.pending)

    def process(self) -> list[ProgressOutput]:
        """Score up to ``max_batch`` pending pairs (call from one worker thread)."""
        with self.lock:
            if not self.pending or self.previous is None:
                return []
            batch, self.pending = self.pending[:self.max_batch], self.pending[self.max_batch:]
            chain = [self.previous, *batch]
            episode, instruction = self.episode, self.instruction
        early = {c: np.stack([f[c] for _, f in chain[:-1]]) for c in self.critic.cameras}
        late = {c: np.stack([f[c] for _, f in chain[1:]]) for c in self.critic.cameras}
        try:
            scores = self.critic.score([PairRequest(early, late, instruction, self.references)])[0]
            if not (np.all(np.isfinite(scores.delta)) and np.all(np.isfinite(scores.done_prob))):
                raise CriticError("the critic returned NaN or inf")
        except (CriticError, CriticUnavailableError) as exc:
            with self.lock:
                self.errors += 1
                self.last_error = str(exc)
                if episode == self.episode:
                    self.previous = batch[-1]  # the next pair starts from the newest frame
            raise
        outputs = []
        with self.lock:
            if episode != self.episode:
                return []  # the episode ended while this batch was being scored
            for (stamp, _), delta, done_prob in zip(batch, scores.delta, scores.done_prob):
                value, done = self.tracker.update(float(delta), float(done_prob))
                outputs.append(ProgressOutput(stamp, float(delta), value, float(done_prob), done))
            self.previous = batch[-1]
            self.scored += len(outputs)
        return outputs
