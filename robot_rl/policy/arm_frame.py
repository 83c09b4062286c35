"""The arm's own frame, for the VLA's ``cartesian`` action mode (an egocentric Cartesian action).

In ``cartesian`` mode the network does not predict joint targets. Each point of its chunk says how
the grip point should move, seen from the arm: ``forward`` (m, along the arm's current heading),
``left`` (m, perpendicular to it, horizontal), ``up`` (m), ``turn`` (rad, the change of the fingers'
heading about the vertical) and ``gripper`` (the gripper joint's absolute target). The moves are from
the grip point the measured joints put it at, not from the previous point. The model turns them into
absolute joint targets with the arm's inverse kinematics, inside its graph, so the export's output
contract (``actions``: absolute joint targets) and everything downstream of it (the policy node, the
safety layer's joint limits) are unchanged.

Why: the same move toward an object is the same action wherever the arm faces. In joint space it is
a different vector for every pan angle, which a policy has to learn layout by layout; design-note
item 33 of docs/learning-benchmark.md measured the difference on the true state (0.76 -> 0.87 mean
success after the same 50 episodes of the simulated human, push 0.21 -> 0.51).

The kinematics is that of a pan / lift / elbow / wrist-flex / wrist-roll arm plus a gripper (the
tabletop arm; SO-100/SO-101 and Koch arms are built the same way), joints in that order, with the
tool pointing straight down (the inverse kinematics always chooses that pose, as a top-down grasp
needs): four numbers, :class:`ArmGeometry`, travel in the model's config. Everything here is torch
and batched, so that it exports to ONNX with the model and gives the learner the executed chunk in
the network's units (:func:`to_points`, through the forward kinematics).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

#: what each chunk point holds, in this order
POINT_FIELDS = ("forward", "left", "up", "turn", "gripper")
POINT_SIZE = len(POINT_FIELDS)
ARM_JOINTS = 5  # pan, lift, elbow, flex, roll; then the gripper


@dataclass(frozen=True)
class ArmGeometry:
    """Where the shoulder is and how long the links are (m), as the forward kinematics needs them."""

    shoulder: tuple[float, float, float]  # the lift axis; the pan axis passes through its (x, y)
    upper_arm: float  # shoulder -> elbow
    forearm: float  # elbow -> wrist (flex axis)
    tool: float  # flex axis -> grip point, along the tool

    def __post_init__(self) -> None:
        if len(self.shoulder) != 3:
            raise ValueError(f"arm_geometry.shoulder: expected [x, y, z], got {list(self.shoulder)}")
        for name in ("upper_arm", "forearm", "tool"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"arm_geometry.{name}: expected a positive length in metres, got {value!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "ArmGeometry":
        expected = {"shoulder", "upper_arm", "forearm", "tool"}
        if set(d) != expected:
            raise ValueError(f"arm_geometry: expected fields {sorted(expected)}, got {sorted(d)}")
        return cls(tuple(float(x) for x in d["shoulder"]), float(d["upper_arm"]), float(d["forearm"]), float(d["tool"]))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shoulder"] = list(self.shoulder)
        return d

    @classmethod
    def from_kinematics(cls, kin) -> "ArmGeometry":
        """From the simulator's :class:`robot_rl.sim.oracle.ArmKinematics` (measured off the MuJoCo model)."""
        return cls(tuple(float(x) for x in kin.shoulder), float(kin.upper_arm), float(kin.forearm), float(kin.tool))


def simulated_arm_geometry() -> ArmGeometry:
    """The simulated tabletop arm's geometry, measured off ``sim/tabletop.xml`` (needs MuJoCo)."""
    import mujoco

    from robot_rl.sim.oracle import ArmKinematics
    from robot_rl.paths import data_path

    return ArmGeometry.from_kinematics(ArmKinematics.from_model(mujoco.MjModel.from_xml_path(str(data_path("sim", "tabletop.xml")))))


def load_arm_geometry(path: str) -> ArmGeometry:
    """An arm's geometry from a YAML (or JSON) file with shoulder, upper_arm, forearm and tool (m)."""
    import yaml

    try:
        with open(path) as f:
            d = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"arm geometry {path}: cannot read it ({exc})") from exc
    if not isinstance(d, dict):
        raise ValueError(f"arm geometry {path}: expected a mapping with shoulder, upper_arm, forearm, tool")
    try:
        return ArmGeometry.from_dict(d)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"arm geometry {path}: {exc}") from exc


def grip_pose(geometry: ArmGeometry, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward kinematics: joints (..., >=5) -> grip point (..., 3) and fingers' heading (...) in rad."""
    pan, lift, elbow, flex, roll = (q[..., k] for k in range(ARM_JOINTS))
    a, b, tilt = lift, lift + elbow, lift + elbow + flex
    reach = geometry.upper_arm * torch.sin(a) + geometry.forearm * torch.cos(b) - geometry.tool * torch.sin(tilt)
    height = geometry.upper_arm * torch.cos(a) - geometry.forearm * torch.sin(b) - geometry.tool * torch.cos(tilt)
    sx, sy, sz = geometry.shoulder
    position = torch.stack([sx + reach * torch.cos(pan), sy + reach * torch.sin(pan), sz + height], dim=-1)
    return position, pan + roll + math.pi / 2


def arm_joints(geometry: ArmGeometry, position: torch.Tensor, heading: torch.Tensor) -> torch.Tensor:
    """Inverse kinematics: grip point (..., 3) and heading (...) -> the five arm joints (..., 5), tool
    pointing down, elbow up. A point out of reach is pulled in onto the reachable sphere."""
    sx, sy, sz = geometry.shoulder
    l1, l2 = geometry.upper_arm, geometry.forearm
    dx, dy = position[..., 0] - sx, position[..., 1] - sy
    pan = torch.atan2(dy, dx)
    u = torch.sqrt(dx * dx + dy * dy + 1e-12)
    v = position[..., 2] + geometry.tool - sz
    distance = torch.sqrt(u * u + v * v + 1e-12)
    shrink = torch.clamp((l1 + l2) * 0.999 / distance, max=1.0)
    u, v, distance = u * shrink, v * shrink, distance * shrink
    # the elbow's relative angle (negative: elbow up); clamped inside acos's domain, where its slope is finite
    cos_rel = torch.clamp((distance * distance - l1 * l1 - l2 * l2) / (2 * l1 * l2), -1.0 + 1e-6, 1.0 - 1e-6)
    rel = -torch.acos(cos_rel)
    theta = torch.atan2(v, u) - torch.atan2(l2 * torch.sin(rel), l1 + l2 * torch.cos(rel))
    lift = math.pi / 2 - theta
    elbow = -rel - math.pi / 2
    flex = -(lift + elbow)
    roll = heading - math.pi / 2 - pan
    return torch.stack([pan, lift, elbow, flex, roll], dim=-1)


def to_points(geometry: ArmGeometry, q: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Joint target chunks (B, H, 6) commanded from joints q (B, 6) -> chunk points (B, H, 5) in the
    arm's frame at q: how the network would have said them (the learner's view of executed chunks)."""
    grip, heading = grip_pose(geometry, q)
    to, to_heading = grip_pose(geometry, targets)
    move = to - grip.unsqueeze(1)
    pan = q[..., 0].unsqueeze(1)
    cos, sin = torch.cos(pan), torch.sin(pan)
    forward = cos * move[..., 0] + sin * move[..., 1]
    left = -sin * move[..., 0] + cos * move[..., 1]
    turn = to_heading - heading.unsqueeze(1)
    return torch.stack([forward, left, move[..., 2], turn, targets[..., ARM_JOINTS]], dim=-1)


def to_targets(geometry: ArmGeometry, q: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Chunk points (B, H, 5) from joints q (B, 6) -> absolute joint targets (B, H, 6); the inverse of
    :func:`to_points` for targets with the tool pointing down."""
    grip, heading = grip_pose(geometry, q)
    pan = q[..., 0].unsqueeze(1)
    cos, sin = torch.cos(pan), torch.sin(pan)
    forward, left, up, turn, gripper = points.unbind(-1)
    position = grip.unsqueeze(1) + torch.stack([cos * forward - sin * left, sin * forward + cos * left, up], dim=-1)
    joints = arm_joints(geometry, position, heading.unsqueeze(1) + turn)
    return torch.cat([joints, gripper.unsqueeze(-1)], dim=-1)
