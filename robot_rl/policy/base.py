"""The policy interface shared by the policy node, the demo, benchmarks and the learner.

A policy receives an :class:`Observation` (camera images, joint state, instruction and, in simulation
only, privileged object poses) and returns an :class:`ActionChunk`: H future joint targets, point k
meant for ``stamp + (k + 1) * period``. The chunk carries the observation stamp so that downstream
(the safety layer) can drop targets whose time has passed and reject chunks computed from stale data.

Policies are created by type name through :func:`make_policy`; implementations import their heavy
dependencies lazily, so asking for ``random`` never imports MuJoCo or torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class Observation:
    stamp: float  # seconds, time of the newest camera frame used
    joint_names: list[str]
    joint_positions: np.ndarray  # (N,)
    instruction: str
    images: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> (H, W, 3) uint8 RGB
    objects: dict[str, Any] | None = None  # privileged object poses; simulation only


@dataclass
class ActionChunk:
    stamp: float  # the observation time this chunk was computed from
    period: float  # seconds between points
    joint_names: list[str]
    positions: np.ndarray  # (H, N) joint targets
    version: int = -1  # learner weights version that produced it (-1: not a learnt policy's chunk)

    def __post_init__(self) -> None:
        self.positions = np.atleast_2d(np.asarray(self.positions, dtype=np.float64))
        if self.positions.shape[1] != len(self.joint_names):
            raise ValueError(
                f"action chunk has {self.positions.shape[1]} columns but {len(self.joint_names)} joint names"
            )
        if self.period <= 0:
            raise ValueError(f"action chunk period must be positive, got {self.period}")

    @property
    def horizon(self) -> int:
        return self.positions.shape[0]

    def times(self) -> np.ndarray:
        return self.stamp + self.period * np.arange(1, self.horizon + 1)


@dataclass
class PolicyConfig:
    """Flat configuration common to all policies; fields a policy does not use are ignored."""

    type: str = "oracle"
    chunk_length: int = 1
    control_period: float = 0.1
    seed: int = 0
    joint_names: list[str] = field(default_factory=list)
    lower: list[float] = field(default_factory=list)  # joint limits, used by the random policy
    upper: list[float] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


class Policy(ABC):
    """Turns observations into action chunks."""

    name: str = "policy"
    version: str = "0"
    #: True when the policy needs privileged simulator state (``Observation.objects``).
    needs_privileged_state: bool = False

    def __init__(self, config: PolicyConfig):
        self.config = config

    @abstractmethod
    def reset(self, instruction: str) -> None:
        """Start an episode for this instruction; raise ValueError if the policy cannot follow it."""

    @abstractmethod
    def act(self, observation: Observation) -> ActionChunk: ...

    def close(self) -> None:
        pass


_REGISTRY: dict[str, Callable[[], type[Policy]]] = {}


def register_policy(name: str, loader: Callable[[], type[Policy]]) -> None:
    """Register a policy class by type name; ``loader`` imports it only when first asked for."""
    _REGISTRY[name] = loader


def policy_types() -> list[str]:
    return sorted(_REGISTRY)


def make_policy(config: PolicyConfig) -> Policy:
    try:
        loader = _REGISTRY[config.type]
    except KeyError:
        raise ValueError(f"unknown policy type '{config.type}'; expected one of {policy_types()}") from None
    return loader()(config)


def _load_random() -> type[Policy]:
    from robot_rl.policy.random_policy import RandomPolicy

    return RandomPolicy


def _load_oracle() -> type[Policy]:
    from robot_rl.policy.oracle_policy import OraclePolicy

    return OraclePolicy


def _load_vla() -> type[Policy]:
    from robot_rl.policy.vla_policy import VLAPolicy

    return VLAPolicy


register_policy("random", _load_random)
register_policy("vla", _load_vla)
register_policy("oracle", _load_oracle)
