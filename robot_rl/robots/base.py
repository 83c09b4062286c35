"""The robot interface: read joint positions, send joint position targets, in the limits file's order.

A driver knows nothing of policies or safety: the safety node decides what to command, the driver
only carries it out. Joint names and order come from the robot's limits file
(``calibration/<robot>.yaml``) and a driver checks that its hardware has exactly those joints.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from robot_rl.registry import RegisteredByType


class RobotError(RuntimeError):
    """A driver problem; the message names the robot and what went wrong."""


@dataclass
class JointReading:
    positions: np.ndarray  # in joint_names order (rad, or m for prismatic grippers)
    stamp: float  # host clock seconds when read
    velocities: np.ndarray | None = None


@dataclass
class RobotConfig(RegisteredByType):
    """Settings every arm has; ``RobotConfig.from_dict({"type": ..., ...})`` builds one (:mod:`robot_rl.registry`)."""

    noun: ClassVar[str] = "robot"
    _registry: ClassVar[dict[str, type["RobotConfig"]]] = {}
    joint_names: list[str] = field(default_factory=list)  # from the limits file; the driver checks them

    @classmethod
    def _register_builtins(cls) -> None:
        from robot_rl.robots import lerobot, sim  # noqa: F401  (no vendor imports at module level)


class Robot(abc.ABC):
    def __init__(self, config: RobotConfig):
        self.config = config

    @property
    def joint_names(self) -> list[str]:
        return list(self.config.joint_names)

    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def read(self) -> JointReading: ...

    @abc.abstractmethod
    def command(self, positions: np.ndarray) -> None:
        """Send joint position targets (joint_names order). Non-finite or mis-sized targets raise."""

    @abc.abstractmethod
    def disconnect(self) -> None: ...

    def check_command(self, positions) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.float64)
        if positions.shape != (len(self.joint_names),) or not np.all(np.isfinite(positions)):
            raise RobotError(f"{type(self).__name__}: expected {len(self.joint_names)} finite targets ordered "
                             f"{self.joint_names}, got {positions.tolist()}")
        return positions

    def __enter__(self) -> "Robot":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()
