"""Robot limits files (``calibration/<robot>.yaml``): joint names, position and velocity limits, home.

Format::

    robot: sim_arm
    joints:                      # order = command order
      - {name: shoulder_pan, lower: -2.1, upper: 2.1, max_velocity: 2.0}
      ...
    home: [0.0, 0.0, 0.2, -0.2, 0.0, 0.04]   # optional, one value per joint

Every problem is reported with the file and the field, and nothing is guessed: a missing limit is an
error, not an unlimited joint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml


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

    def clamp(self, positions: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Positions clipped to the limits, and the names of the joints that were clipped."""
        clipped = np.clip(positions, self.lower, self.upper)
        changed = [n for n, a, b in zip(self.joint_names, positions, clipped) if a != b]
        return clipped, changed


def in_joint_order(names: list[str], values: np.ndarray, order: list[str], what: str) -> np.ndarray:
    """``values`` (last axis named by ``names``) rearranged to ``order``; ValueError naming what is missing."""
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in order if n not in index]
    if missing:
        raise ValueError(f"{what}: missing joints {missing} (has {list(names)})")
    return np.asarray(values, np.float64)[..., [index[n] for n in order]]


def load_robot_limits(path: str | Path) -> RobotLimits:
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"robot limits file {path} does not exist")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CalibrationError(f"robot limits file {path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise CalibrationError(f"{path}: expected a mapping with 'robot' and 'joints', got {type(doc).__name__}")
    joints = doc.get("joints")
    if not isinstance(joints, list) or not joints:
        raise CalibrationError(f"{path}: field 'joints' must be a non-empty list of {{name, lower, upper, max_velocity}}")
    names, lower, upper, velocity = [], [], [], []
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
    return RobotLimits(
        robot=str(doc.get("robot", path.stem)),
        joint_names=names,
        lower=np.asarray(lower),
        upper=np.asarray(upper),
        max_velocity=np.asarray(velocity),
        home=home,
        source=str(path),
    )
