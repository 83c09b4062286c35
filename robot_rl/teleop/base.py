"""Teleoperation devices behind one interface, and the controller that turns them into commands.

A device (:class:`TeleopDevice`) reports, each time it is read, a :class:`TeleopReading`: whether the
human holds control (``engaged``), what they command, and the events they marked (success, failure,
reset). Devices command in one of two ways:

- ``velocity``: joint velocities (rad/s per joint, in the robot's joint order) from a gamepad, a
  keyboard or a SpaceMouse. These jog the arm joint by joint, like a teach pendant; the
  :class:`TeleopController` integrates them from the command the robot executed at the moment of
  engagement, so taking over never jumps.
- ``positions``: absolute joint targets from a leader arm or the simulated human.

:class:`TeleopController` is ROS-free and holds all the logic of the teleop node: engagement edges,
integration, clamping to the robot's limits, and the context devices may read (the measured joints,
the last executed command, the policy's proposal and, in simulation only, object poses).

Devices are registered by type name with a config dataclass and made by :func:`make_device`, which
imports optional dependencies (pyspacemouse, lerobot) only when that device is asked for.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from robot_rl.safety.limits import RobotLimits

EVENTS = ("success", "failure", "reset")


@dataclass
class TeleopReading:
    engaged: bool = False
    velocity: np.ndarray | None = None  # (J,) rad/s in the controller's joint order
    positions: np.ndarray | None = None  # (J,) absolute targets
    events: list[str] = field(default_factory=list)


@dataclass
class TeleopContext:
    """What the robot is doing, for devices that need it (the simulated human, leader arm alignment)."""

    now: float = 0.0
    joint_names: list[str] = field(default_factory=list)
    measured: np.ndarray | None = None  # /joint_states
    executed: np.ndarray | None = None  # /safety/command: what the robot was last told
    policy_target: np.ndarray | None = None  # the policy's proposal for now (its latest chunk)
    instruction: str = ""
    objects: dict | None = None  # simulation only: privileged object poses
    progress: float | None = None  # simulation only: the task's ground-truth progress in [0, 1]
    new_episode: bool = False  # the instruction changed since the last read


class TeleopDevice(ABC):
    """One human input device. ``connect()`` before reading; usable as a context manager."""

    type_name = ""

    def connect(self) -> None:
        pass

    def disconnect(self) -> None:
        pass

    @abstractmethod
    def read(self, context: TeleopContext) -> TeleopReading:
        """The device's state now; never blocks longer than a control period."""

    def __enter__(self) -> "TeleopDevice":
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()


# -- registry -------------------------------------------------------------------------------------------
_REGISTRY: dict[str, Callable[[], tuple[type, type]]] = {}


def register_device(type_name: str, loader: Callable[[], tuple[type, type]]) -> None:
    """Register ``type_name``; ``loader`` returns (device class, config class) and imports lazily."""
    _REGISTRY[type_name] = loader


def device_types() -> list[str]:
    return sorted(_REGISTRY)


def device_config_class(type_name: str) -> type:
    """The config dataclass of a device type (its fields are the device's options)."""
    if type_name not in _REGISTRY:
        raise ValueError(f"unknown teleop device '{type_name}': expected one of {device_types()}")
    return _REGISTRY[type_name]()[1]


def make_device(type_name: str, joint_names: list[str], options: dict[str, Any] | None = None) -> TeleopDevice:
    """A device of ``type_name`` for a robot with ``joint_names``; ``options`` fill its config dataclass."""
    if type_name not in _REGISTRY:
        raise ValueError(f"unknown teleop device '{type_name}': expected one of {device_types()}")
    device_cls, config_cls = _REGISTRY[type_name]()
    options = dict(options or {})
    unknown = set(options) - set(config_cls.__dataclass_fields__)
    if unknown:
        raise ValueError(f"teleop device '{type_name}': unknown options {sorted(unknown)}; "
                         f"known: {sorted(config_cls.__dataclass_fields__)}")
    return device_cls(config_cls(**options), list(joint_names))


def _loader(module: str, device: str, config: str) -> Callable[[], tuple[type, type]]:
    def load() -> tuple[type, type]:
        import importlib

        mod = importlib.import_module(f"robot_rl.teleop.{module}")
        return getattr(mod, device), getattr(mod, config)

    return load


register_device("joy", _loader("joy", "JoyDevice", "JoyConfig"))
register_device("keyboard", _loader("keyboard", "KeyboardDevice", "KeyboardConfig"))
register_device("spacemouse", _loader("spacemouse", "SpaceMouseDevice", "SpaceMouseConfig"))
register_device("leader_arm", _loader("leader_arm", "LeaderArmDevice", "LeaderArmConfig"))
register_device("scripted", _loader("scripted", "ScriptedHuman", "ScriptedHumanConfig"))


# -- the controller ---------------------------------------------------------------------------------------
@dataclass
class TeleopOutput:
    engaged: bool
    positions: np.ndarray | None  # the command to publish (None: nothing to command)
    events: list[str]
    engaged_changed: bool


class TeleopController:
    """Turns device readings into the teleop command; all of the teleop node's logic.

    On engagement a velocity device starts from the command the robot executed last (else the
    measured position), so the hand-over starts where the robot is; the safety node blends the rest.
    Targets are clamped to the limits, and a velocity target never runs further than
    ``max_lead`` rad ahead of the measured position (a jog held against an obstacle must not wind up).
    """

    def __init__(self, limits: RobotLimits, max_lead: float = 0.3):
        self.limits = limits
        self.joint_names = list(limits.joint_names)
        self.max_lead = max_lead
        self.engaged = False
        self.target: np.ndarray | None = None
        self.last_now: float | None = None

    def step(self, reading: TeleopReading, context: TeleopContext) -> TeleopOutput:
        now = context.now
        dt = 0.0 if self.last_now is None else max(0.0, min(now - self.last_now, 0.2))
        self.last_now = now
        changed = reading.engaged != self.engaged
        self.engaged = reading.engaged
        if not self.engaged:
            self.target = None
            return TeleopOutput(False, None, list(reading.events), changed)
        if reading.positions is not None:
            self.target = np.asarray(reading.positions, np.float64).copy()
        else:
            if self.target is None or changed:
                start = context.executed if context.executed is not None else context.measured
                if start is None:
                    return TeleopOutput(True, None, list(reading.events), changed)  # nothing known yet
                self.target = np.asarray(start, np.float64).copy()
            if reading.velocity is not None:
                self.target = self.target + np.asarray(reading.velocity, np.float64) * dt
                if context.measured is not None:
                    m = np.asarray(context.measured, np.float64)
                    self.target = np.clip(self.target, m - self.max_lead, m + self.max_lead)
        self.target, _ = self.limits.clamp(self.target)
        return TeleopOutput(True, self.target.copy(), list(reading.events), changed)
