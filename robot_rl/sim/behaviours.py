"""Imperfect behaviour policies for the simulated world: what a progress critic must learn to judge.

A critic trained only on expert demonstrations has never seen an arm move away from the goal, stop
half way or wander, so it cannot score them. These behaviours produce such episodes:

- :class:`NoisyOracle`: the scripted oracle with joint noise, occasional detours towards a random
  point (regression, then recovery) and, in some episodes, giving up part way (stagnation, failure).
- :class:`RandomWalk`: smooth random joint motion from the home pose (no intent; almost always fails).

Both have the oracle's interface: ``reset(task)`` then ``act(q, objects) -> (H, 6)`` joint targets.

A third, :class:`DartOracle`, is for behaviour cloning rather than for the critic: DART's noise
injection (Laskey et al., 2017). The arm is sent the oracle's target plus a bias held for a while,
so it visits the states a learner reaches when it is a little off (an approach 1-3 cm to the side, a
push that turns the cube), and every row is labelled with what the oracle commands *from that state*:
the demonstrations then show how to recover, which clean ones never do. ``label_and_command(q,
objects)`` returns both; collect records the label as the action and the command it executed beside it.

Randomness comes from the seed given to ``reset`` so that an episode can be reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_rl.sim.oracle import GRIPPER_CLOSED, GRIPPER_OPEN, ScriptedOracle


@dataclass
class NoiseConfig:
    joint_noise: float = 0.03  # rad, Gaussian, on every target
    detour_probability: float = 0.04  # per step, when not already on a detour
    detour_steps: tuple[int, int] = (4, 12)  # how long a detour lasts
    detour_size: float = 0.5  # rad, largest joint offset of a detour target
    give_up_probability: float = 0.35  # per episode: stop part way and hold still
    give_up_fraction: tuple[float, float] = (0.2, 0.8)  # of the oracle's expected duration


class NoisyOracle:
    def __init__(self, oracle: ScriptedOracle, config: NoiseConfig | None = None):
        self.oracle = oracle
        self.config = config or NoiseConfig()
        self.rng = np.random.default_rng(0)
        self.detour_target: np.ndarray | None = None
        self.detour_left = 0
        self.give_up_at: int | None = None
        self.held: np.ndarray | None = None
        self.steps = 0

    def reset(self, task: str, seed: int = 0, expected_steps: int = 30) -> None:
        self.oracle.reset(task)
        self.rng = np.random.default_rng(seed + 7919)
        self.detour_target, self.detour_left, self.held, self.steps = None, 0, None, 0
        c = self.config
        self.give_up_at = (int(self.rng.uniform(*c.give_up_fraction) * expected_steps)
                           if self.rng.random() < c.give_up_probability else None)

    def act(self, q: np.ndarray, objects) -> np.ndarray:
        c = self.config
        self.steps += 1
        if self.give_up_at is not None and self.steps > self.give_up_at:
            if self.held is None:
                self.held = np.asarray(q, np.float64).copy()
            return self.held[None].copy()
        if self.detour_left == 0 and self.rng.random() < c.detour_probability:
            self.detour_left = int(self.rng.integers(c.detour_steps[0], c.detour_steps[1] + 1))
            self.detour_target = np.asarray(q, np.float64) + np.concatenate(
                [self.rng.uniform(-c.detour_size, c.detour_size, 5), [0.0]])
        if self.detour_left > 0:
            self.detour_left -= 1
            step = np.clip(self.detour_target - q, -0.08, 0.08)  # move there at a bounded joint speed
            target = np.asarray(q, np.float64) + step
        else:
            target = self.oracle.act(q, objects)[0]
        target = target + np.concatenate([self.rng.normal(0.0, c.joint_noise, 5), [0.0]])
        return target[None]


@dataclass
class DartConfig:
    bias_probability: float = 0.04  # per step outside a bias: the arm starts to be sent off target
    bias_steps: tuple[int, int] = (4, 10)  # how long a bias is held (0.4-1 s at 10 Hz), then the oracle recovers
    bias_std: float = 0.06  # rad on each arm joint (about 2 cm at the grip), held for the whole bias
    scale_range: tuple[float, float] = (0.5, 1.0)  # per episode, the bias's std is scaled by a draw from this
    # rad, Gaussian on every command (times the episode's scale); off by default, because behaviour
    # cloning learns only from chunks the arm executed as labelled (DemoDataset) and noise leaves none
    joint_noise: float = 0.0


class DartOracle:
    """The oracle's labels on the states of a perturbed oracle (module docstring). The perturbation is a
    bias held for a while and then released, so each episode has off-target states *and* the oracle's
    recovery from them, and still ends in success (a bias held to the end would stop a precise task
    short of its goal). The gripper is never perturbed, so grasps and releases stay the oracle's."""

    def __init__(self, oracle: ScriptedOracle, config: DartConfig | None = None):
        self.oracle = oracle
        self.config = config or DartConfig()
        self.rng = np.random.default_rng(0)
        self.scale = 1.0
        self.bias = np.zeros(5)
        self.bias_left = 0

    def reset(self, task: str, seed: int = 0, expected_steps: int = 30) -> None:
        self.oracle.reset(task)
        self.rng = np.random.default_rng(seed + 15485863)
        self.scale = float(self.rng.uniform(*self.config.scale_range))
        self.bias, self.bias_left = np.zeros(5), 0

    def label_and_command(self, q: np.ndarray, objects) -> tuple[np.ndarray, np.ndarray]:
        """(6,) the oracle's target from this state, (6,) the perturbed target to send the arm."""
        c = self.config
        label = self.oracle.act(q, objects)[0]
        if self.bias_left == 0 and self.rng.random() < c.bias_probability:
            self.bias_left = int(self.rng.integers(c.bias_steps[0], c.bias_steps[1] + 1))
            self.bias = self.rng.normal(0.0, c.bias_std * self.scale, 5)
        command = label.copy()
        if self.bias_left > 0:
            self.bias_left -= 1
            command[:5] += self.bias
        command[:5] += self.rng.normal(0.0, c.joint_noise * self.scale, 5)
        return label, command


class RandomWalk:
    """Joint targets that drift smoothly at random; the gripper opens and closes now and then."""

    def __init__(self, step: float = 0.06, smoothing: float = 0.8):
        self.step, self.smoothing = step, smoothing
        self.rng = np.random.default_rng(0)
        self.velocity = np.zeros(5)
        self.gripper = GRIPPER_OPEN

    def reset(self, task: str, seed: int = 0, expected_steps: int = 30) -> None:
        self.rng = np.random.default_rng(seed + 104729)
        self.velocity = np.zeros(5)
        self.gripper = GRIPPER_OPEN

    def act(self, q: np.ndarray, objects) -> np.ndarray:
        self.velocity = self.smoothing * self.velocity + (1 - self.smoothing) * self.rng.normal(0.0, self.step * 3, 5)
        if self.rng.random() < 0.05:
            self.gripper = GRIPPER_CLOSED if self.gripper == GRIPPER_OPEN else GRIPPER_OPEN
        target = np.asarray(q, np.float64).copy()
        target[:5] += np.clip(self.velocity, -self.step, self.step)
        target[1] = min(target[1], 1.2)  # keep the random arm off the table most of the time
        target[5] = self.gripper
        return target[None]
