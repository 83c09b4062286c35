"""The RL reward from the progress critic: potential-based shaping on its value plus a success bonus.

Per control step t, with V the critic's value (chained deltas, ``labels.value_curve``) and ``done`` the
first step at which the critic's done probability has stayed above ``done_threshold`` for
``done_frames`` scored frames in a row::

    r_t = shaping_scale * (gamma * V(s_{t+1}) - V(s_t))  +  success_bonus * [done fires at t+1]

Shaping of the form ``gamma * Phi(s') - Phi(s)`` leaves the optimal policy unchanged (Ng, Harada &
Russell 1999), so a critic that is wrong in places can slow learning but cannot make a worse policy
optimal; the bonus makes finishing worth more than hovering near the goal. Both terms are
configurable (``config/learner.yaml``); set ``shaping_scale: 0`` for the sparse, done-only reward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RewardConfig:
    gamma: float = 0.99
    shaping_scale: float = 1.0
    success_bonus: float = 1.0
    done_threshold: float = 0.5
    done_frames: int = 2  # consecutive scored frames above the threshold before done fires (debounce)


class ProgressTracker:
    """The value and done state of one episode, updated pair by pair as the critic scores them."""

    def __init__(self, config: RewardConfig | None = None):
        self.config = config or RewardConfig()
        self.reset()

    def reset(self) -> None:
        self.value, self.above, self.done = 0.0, 0, False

    def update(self, delta: float, done_prob: float) -> tuple[float, bool]:
        c = float(np.clip(delta, -1.0, 1.0))
        self.value = self.value + c * (1.0 - self.value) if c >= 0 else self.value + c * self.value
        self.above = self.above + 1 if done_prob > self.config.done_threshold else 0
        self.done = self.done or self.above >= self.config.done_frames
        return self.value, self.done


def progress_rewards(values: np.ndarray, done_probs: np.ndarray, config: RewardConfig | None = None) -> tuple[np.ndarray, int | None]:
    """Rewards of the T transitions between T + 1 scored frames (``values[0]`` is the episode start,
    ``done_probs[t]`` belongs to frame t + 1). Returns (rewards, index of the transition where done
    fired or None); transitions after it get no reward (the episode is over)."""
    config = config or RewardConfig()
    values = np.asarray(values, np.float64)
    done_probs = np.asarray(done_probs, np.float64)
    if len(values) != len(done_probs) + 1:
        raise ValueError(f"need one more value than done probabilities, got {len(values)} and {len(done_probs)}")
    rewards = config.shaping_scale * (config.gamma * values[1:] - values[:-1])
    above, fired = 0, None
    for t, p in enumerate(done_probs):
        above = above + 1 if p > config.done_threshold else 0
        if above >= config.done_frames:
            fired = t
            break
    if fired is not None:
        rewards[fired] += config.success_bonus
        rewards[fired + 1:] = 0.0
    return rewards.astype(np.float32), fired
