"""A random policy: a bounded random walk of joint targets inside the joint limits.

Useful as the least competent policy (failure episodes for the critic, exploration baselines) and
to exercise the pipeline without a model.
"""

from __future__ import annotations

import numpy as np

from robot_rl.policy.base import ActionChunk, Observation, Policy, PolicyConfig


class RandomPolicy(Policy):
    name = "random"

    def __init__(self, config: PolicyConfig):
        super().__init__(config)
        self.rng = np.random.default_rng(config.seed)
        self.step_std = float(config.options.get("step_std", 0.05))  # radians (metres for the gripper)

    def reset(self, instruction: str) -> None:
        pass  # follows no instruction

    def act(self, observation: Observation) -> ActionChunk:
        q = np.asarray(observation.joint_positions, dtype=np.float64)
        lower = np.asarray(self.config.lower, dtype=np.float64) if self.config.lower else np.full_like(q, -np.inf)
        upper = np.asarray(self.config.upper, dtype=np.float64) if self.config.upper else np.full_like(q, np.inf)
        steps = self.rng.normal(0.0, self.step_std, size=(self.config.chunk_length, q.size))
        targets = np.clip(q + np.cumsum(steps, axis=0), lower, upper)
        return ActionChunk(observation.stamp, self.config.control_period, list(observation.joint_names), targets)
