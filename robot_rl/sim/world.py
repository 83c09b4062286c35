"""The interface every simulated world implements, and the factory the sim bridge uses.

A world is the simulator-side twin of a robot driver plus its cameras: it takes joint position
targets, advances by one control period, and reports joint state and camera images. The sim bridge
node only talks to this interface, so the MuJoCo tabletop and any wrapped gymnasium environment
publish exactly the same topics.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_rl.cameras.base import Intrinsics


# a rendered camera's intrinsics: the hardware cameras' type, with no distortion
CameraModel = Intrinsics


@dataclass
class ObjectPose:
    position: np.ndarray  # (3,) metres, world frame
    quaternion: np.ndarray  # (4,) w, x, y, z


#: Order of the privileged object poses on /sim/object_poses (geometry_msgs/PoseArray).
OBJECT_ORDER = ["cube", "pad", "button"]


@dataclass
class WorldConfig:
    """What the bridge asks of a world; fields a world does not use are ignored."""

    control_rate_hz: float = 10.0
    cameras: list[str] = field(default_factory=lambda: ["front", "wrist"])
    image_width: int = 128
    image_height: int = 96
    extra: dict[str, Any] = field(default_factory=dict)


class World(ABC):
    """A simulated robot, its cameras and its task."""

    joint_names: list[str]
    camera_names: list[str]
    control_period: float

    @abstractmethod
    def reset(self, seed: int, task: str | None = None) -> None:
        """Start a new episode; the same seed gives the same episode."""

    @abstractmethod
    def step(self, command: np.ndarray) -> None:
        """Apply joint position targets (ordered as ``joint_names``) for one control period."""

    @abstractmethod
    def joint_positions(self) -> np.ndarray: ...

    @abstractmethod
    def joint_velocities(self) -> np.ndarray: ...

    @abstractmethod
    def render(self, camera: str) -> np.ndarray:
        """An RGB image, shape (H, W, 3), dtype uint8."""

    @abstractmethod
    def camera_model(self, camera: str) -> CameraModel: ...

    @property
    @abstractmethod
    def time(self) -> float:
        """Simulated seconds since the last reset."""

    def success(self) -> bool | None:
        """Ground-truth task success, or None when the world cannot tell."""
        return None

    def object_poses(self) -> dict[str, ObjectPose]:
        """Privileged object poses (simulation only; used by the scripted oracle)."""
        return {}

    def task_progress(self) -> float | None:
        """Ground-truth progress of the current task in [0, 1], or None when the world cannot tell
        (simulation only: labels, evaluation and the simulated human's stall trigger, never a reward)."""
        return None

    @property
    def task_name(self) -> str | None:
        return None

    def set_task(self, task: str) -> None:
        """Change the task whose success is evaluated, without resetting the scene."""
        raise NotImplementedError(f"{type(self).__name__} has no tasks")

    def snapshot(self) -> dict[str, np.ndarray]:
        """The whole simulator state as named arrays, for :meth:`restore` (return-and-explore)."""
        raise NotImplementedError(f"{type(self).__name__} cannot save its state")

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Start a new episode from a :meth:`snapshot` (the episode clock starts again at 0)."""
        raise NotImplementedError(f"{type(self).__name__} cannot restore a saved state")

    def close(self) -> None:
        pass

    def __enter__(self) -> "World":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_world(kind: str, config: WorldConfig) -> World:
    """Create a world by type name; heavy imports happen here, not at module import."""
    if kind == "tabletop":
        from robot_rl.sim.tabletop import TabletopWorld

        return TabletopWorld(config)
    if kind == "gymnasium":
        from robot_rl.sim.gymnasium_world import GymnasiumWorld

        return GymnasiumWorld.from_config(config)
    raise ValueError(f"unknown world type '{kind}'; expected 'tabletop' or 'gymnasium'")
