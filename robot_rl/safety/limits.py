"""Robot limits files (``calibration/<robot>.yaml``): joints, position/velocity/acceleration limits,
the largest command jump, home, and the workspace box.

Format::

    robot: sim_arm
    joints:                      # order = command order
      - {name: shoulder_pan, lower: -2.1, upper: 2.1, max_velocity: 2.0, max_acceleration: 20.0}
      ...
    home: [0.0, 0.0, 0.2, -0.2, 0.0, 0.04]   # optional, one value per joint
    max_jump: 0.6          # optional: a policy target further than this (rad or m, per joint, or one
                           # value for all) from where the arm is, or from the previous target, is refused
    workspace:             # optional: the end effector must stay inside this box
      model: ../sim/tabletop.xml   # MJCF or URDF of the arm (relative to this file), loaded with MuJoCo
      link: gripper_site           # a site or body of the model
      min: [-0.5, -0.5, 0.0]       # metres, in the model's world frame
      max: [0.5, 0.5, 0.6]

Every problem is reported with the file and the field, and nothing is guessed: a missing position or
velocity limit is an error, not an unlimited joint. ``max_acceleration`` is given for every joint or
for none (then only velocity is limited).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robot_rl.paths import load_yaml_file


class CalibrationError(ValueError):
    """A calibration file is missing or malformed; the message names the file and the field."""


@dataclass(frozen=True)
class RobotLimits:
    robot: str
    joint_names: list[str]
    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray
    home: np.ndarray | None
    source: str = "<memory>"
    max_acceleration: np.ndarray | None = None
    max_jump: np.ndarray | None = None
    workspace: "WorkspaceSpec | None" = None

    def clamp(self, positions: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Positions clipped to the limits, and the names of the joints that were clipped."""
        clipped = np.clip(positions, self.lower, self.upper)
        changed = [n for n, a, b in zip(self.joint_names, positions, clipped) if a != b]
        return clipped, changed


@dataclass(frozen=True)
class WorkspaceSpec:
    model: str  # path of an MJCF or URDF file
    link: str  # site or body whose position must stay inside the box
    lower: np.ndarray
    upper: np.ndarray


def _numbers(value, n: int, where: str) -> np.ndarray:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * n
    if (not isinstance(value, list) or len(value) != n
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise CalibrationError(f"{where}: expected {n} finite numbers, got {value!r}")
    return np.asarray(value, dtype=np.float64)


def _workspace(doc, path: Path) -> WorkspaceSpec | None:
    if doc is None:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), str) or not isinstance(doc.get("link"), str):
        raise CalibrationError(f"{path}: field 'workspace' must be a mapping with model (file), link, min and max")
    model = Path(doc["model"])
    model = model if model.is_absolute() else (path.parent / model).resolve()
    if not model.is_file():
        raise CalibrationError(f"{path}: field 'workspace.model': {model} does not exist")
    lower = _numbers(doc.get("min"), 3, f"{path}: field 'workspace.min'")
    upper = _numbers(doc.get("max"), 3, f"{path}: field 'workspace.max'")
    if np.any(lower >= upper):
        raise CalibrationError(f"{path}: field 'workspace': min {lower.tolist()} must be below max {upper.tolist()}")
    return WorkspaceSpec(str(model), doc["link"], lower, upper)


def in_joint_order(names: list[str], values: np.ndarray, order: list[str], what: str) -> np.ndarray:
    """``values`` (last axis named by ``names``) rearranged to ``order``; ValueError naming what is missing."""
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in order if n not in index]
    if missing:
        raise ValueError(f"{what}: missing joints {missing} (has {list(names)})")
    return np.asarray(values, np.float64)[..., [index[n] for n in order]]


def load_robot_limits(path: str | Path) -> RobotLimits:
    path = Path(path)
    doc = load_yaml_file(path, "robot limits file", CalibrationError)
    if not isinstance(doc, dict):
        raise CalibrationError(f"{path}: expected a mapping with 'robot' and 'joints', got {type(doc).__name__}")
    joints = doc.get("joints")
    if not isinstance(joints, list) or not joints:
        raise CalibrationError(f"{path}: field 'joints' must be a non-empty list of {{name, lower, upper, max_velocity}}")
    names, lower, upper, velocity, acceleration = [], [], [], [], []
    for i, joint in enumerate(joints):
        where = f"{path}: joints[{i}]"
        if not isinstance(joint, dict):
            raise CalibrationError(f"{where}: expected a mapping, got {joint!r}")
        name = joint.get("name")
        if not isinstance(name, str) or not name:
            raise CalibrationError(f"{where}.name: expected a joint name")
        if name in names:
            raise CalibrationError(f"{where}.name: joint '{name}' listed twice")
        values = {}
        for key in ("lower", "upper", "max_velocity"):
            value = joint.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise CalibrationError(f"{where}.{key} ({name}): expected a finite number, got {value!r}")
            values[key] = float(value)
        if values["lower"] >= values["upper"]:
            raise CalibrationError(f"{where} ({name}): lower {values['lower']} must be below upper {values['upper']}")
        if values["max_velocity"] <= 0:
            raise CalibrationError(f"{where}.max_velocity ({name}): must be positive")
        if "max_acceleration" in joint:
            value = joint["max_acceleration"]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise CalibrationError(f"{where}.max_acceleration ({name}): expected a positive number, got {value!r}")
            acceleration.append(float(value))
        names.append(name)
        lower.append(values["lower"])
        upper.append(values["upper"])
        velocity.append(values["max_velocity"])
    home = doc.get("home")
    if home is not None:
        if not isinstance(home, list) or len(home) != len(names):
            raise CalibrationError(f"{path}: field 'home' must list {len(names)} positions, one per joint")
        home = np.asarray(home, dtype=np.float64)
        if np.any(home < lower) or np.any(home > upper):
            raise CalibrationError(f"{path}: field 'home' lies outside the joint limits")
    if acceleration and len(acceleration) != len(names):
        raise CalibrationError(f"{path}: max_acceleration is given for {len(acceleration)} of {len(names)} joints; "
                               "give it for every joint or for none")
    max_jump = None
    if doc.get("max_jump") is not None:
        max_jump = _numbers(doc["max_jump"], len(names), f"{path}: field 'max_jump'")
        if np.any(max_jump <= 0):
            raise CalibrationError(f"{path}: field 'max_jump' must be positive")
    return RobotLimits(
        robot=str(doc.get("robot", path.stem)),
        joint_names=names,
        lower=np.asarray(lower),
        upper=np.asarray(upper),
        max_velocity=np.asarray(velocity),
        home=home,
        source=str(path),
        max_acceleration=np.asarray(acceleration) if acceleration else None,
        max_jump=max_jump,
        workspace=_workspace(doc.get("workspace"), path),
    )
