"""The scripted oracle: a privileged expert that solves every tabletop task.

It reads the true object poses (simulation only) and the arm's joint positions and returns a chunk
of joint targets. It is reactive: every call re-derives the phase of the task (approach, descend,
grasp, lift, push, ...) from the current state rather than from a stored plan, so it recovers when an
object slips and can take over mid-episode, which is what the simulated human of the
human-in-the-loop protocol needs.

Motion is a straight Cartesian line towards the phase's target at bounded speed, converted to joint
targets by closed-form inverse kinematics of the arm (yaw, two-link planar shoulder/elbow, wrist
pitch keeping the gripper vertical, wrist roll aligning the fingers). Link lengths are read from the
MuJoCo model, so the IK stays right if the scene's geometry changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from robot_rl.sim.tasks import get_task
from robot_rl.sim.world import ObjectPose

GRIPPER_OPEN = 0.04
GRIPPER_CLOSED = 0.0

# What the oracle does, as a number that changes with it. Demonstrations, and benchmark reports whose
# simulated human is this oracle, are only comparable within one version.
#   1: the first design.
#   2: push descends in a funnel behind the cube instead of dropping only within 12 mm of the pre-push
#      point (docs/learning-benchmark.md, item 22).
#   3: pick descends in a funnel over the cube too (item 28).
ORACLE_VERSION = 3


@dataclass(frozen=True)
class ArmKinematics:
    """Geometry of the tabletop arm, measured from the MuJoCo model at its zero pose."""

    shoulder: np.ndarray  # (3,) shoulder_lift axis position; shoulder_pan axis passes through its xy
    upper_arm: float  # shoulder -> elbow
    forearm: float  # elbow -> wrist
    tool: float  # wrist_flex axis -> gripper site, along the tool axis

    @classmethod
    def from_model(cls, model) -> "ArmKinematics":
        import mujoco

        data = mujoco.MjData(model)
        mujoco.mj_kinematics(model, data)
        shoulder = data.body("upper_arm").xpos.copy()
        elbow = data.body("forearm").xpos.copy()
        wrist = data.body("wrist").xpos.copy()
        grip = data.site("grip").xpos.copy()
        return cls(shoulder, float(np.linalg.norm(elbow - shoulder)), float(np.linalg.norm(wrist - elbow)),
                   float(np.linalg.norm(wrist - grip)))

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, float]:
        """Gripper-site position and finger-axis yaw for arm joints q[:5]."""
        pan, lift, elbow, flex, roll = q[:5]
        a, b, phi = lift, lift + elbow, lift + elbow + flex
        u = self.upper_arm * math.sin(a) + self.forearm * math.cos(b) - self.tool * math.sin(phi)
        v = self.upper_arm * math.cos(a) - self.forearm * math.sin(b) - self.tool * math.cos(phi)
        pos = np.array([self.shoulder[0] + u * math.cos(pan), self.shoulder[1] + u * math.sin(pan), self.shoulder[2] + v])
        return pos, pan + roll + math.pi / 2

    def inverse(self, position: np.ndarray, finger_yaw: float, symmetry: float = math.pi) -> np.ndarray:
        """Arm joints (5,) that put the gripper site at ``position``, pointing down, elbow up.

        ``finger_yaw`` is the wanted direction of the finger axis; it is equivalent modulo
        ``symmetry`` (pi for a symmetric gripper, pi/2 when grasping a cube), and the wrist roll
        closest to zero is chosen. Unreachable targets are projected onto the reachable sphere.
        """
        dx, dy = position[0] - self.shoulder[0], position[1] - self.shoulder[1]
        pan = math.atan2(dy, dx)
        u = math.hypot(dx, dy)
        v = position[2] + self.tool - self.shoulder[2]
        reach = math.hypot(u, v)
        max_reach = (self.upper_arm + self.forearm) * 0.999
        if reach > max_reach:
            u, v = u * max_reach / reach, v * max_reach / reach
            reach = max_reach
        l1, l2 = self.upper_arm, self.forearm
        cos_rel = np.clip((reach**2 - l1**2 - l2**2) / (2 * l1 * l2), -1.0, 1.0)
        rel = -math.acos(cos_rel)  # elbow up
        theta1 = math.atan2(v, u) - math.atan2(l2 * math.sin(rel), l1 + l2 * math.cos(rel))
        lift = math.pi / 2 - theta1
        elbow = -rel - math.pi / 2
        flex = -(lift + elbow)
        roll = _wrap(finger_yaw - math.pi / 2 - pan, symmetry)
        return np.array([pan, lift, elbow, flex, roll])


def _wrap(angle: float, period: float) -> float:
    """Angle equivalent modulo ``period``, in [-period/2, period/2)."""
    return (angle + period / 2) % period - period / 2


@dataclass
class OracleConfig:
    max_speed: float = 0.35  # m/s of the gripper site
    push_speed: float = 0.12  # m/s while in contact with the cube
    push_funnel: float = 0.04  # m: within this of the pre-push point (and behind the cube) the descent starts
    pick_funnel: float = 0.04  # m: within this of the cube horizontally the pick's descent starts
    hover: float = 0.09  # height above an object's top for travel
    chunk_length: int = 1


class ScriptedOracle:
    """Reactive expert for the tabletop tasks; ``act`` returns a chunk (H, 6) of joint targets."""

    def __init__(self, kinematics: ArmKinematics, control_period: float, config: OracleConfig | None = None):
        self.kin = kinematics
        self.dt = control_period
        self.config = config or OracleConfig()
        self.task = get_task("pick_cube")
        self.phase = "idle"

    def reset(self, task: str) -> None:
        self.task = get_task(task)
        self.phase = "idle"

    @classmethod
    def for_scene(cls, control_period: float, config: OracleConfig | None = None, scene: str | None = None):
        import mujoco

        from robot_rl.paths import data_path

        model = mujoco.MjModel.from_xml_path(scene or str(data_path("sim", "tabletop.xml")))
        return cls(ArmKinematics.from_model(model), control_period, config)

    # -- the policy ----------------------------------------------------------------------------
    def act(self, q: np.ndarray, objects: dict[str, ObjectPose], chunk_length: int | None = None) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        grip, _ = self.kin.forward(q)
        target, yaw, symmetry, gripper = getattr(self, "_" + self.task.name)(q, grip, objects)
        return self._chunk(q, grip, target, yaw, symmetry, gripper, chunk_length or self.config.chunk_length)

    def _chunk(self, q, grip, target, yaw, symmetry, gripper, horizon) -> np.ndarray:
        step = self.config.max_speed * self.dt
        out = np.empty((horizon, 6))
        p = grip.copy()
        for k in range(horizon):
            delta = target - p
            dist = np.linalg.norm(delta)
            p = target.copy() if dist <= step else p + delta * (step / dist)
            out[k, :5] = self.kin.inverse(p, yaw, symmetry)
            out[k, 5] = gripper
        # Keep the wrist roll continuous with the measured one (the roll is only defined modulo symmetry).
        out[:, 4] = q[4] + np.array([_wrap(r - q[4], symmetry) for r in out[:, 4]])
        return out

    def _travel(self, grip: np.ndarray, goal: np.ndarray, safe_z: float) -> np.ndarray:
        """Go to ``goal`` but rise to ``safe_z`` first when low and far, so nothing gets knocked over."""
        far = np.linalg.norm(goal[:2] - grip[:2]) > 0.03
        if far and grip[2] < safe_z - 0.02:
            self.phase = "rise"
            return np.array([grip[0], grip[1], safe_z])
        return goal

    # -- tasks: each returns (target position, finger yaw, yaw symmetry, gripper target) ---------
    def _reach_cube(self, q, grip, objects):
        cube = objects["cube"].position
        top = cube[2] + 0.02
        above = np.array([cube[0], cube[1], top + self.config.hover])
        if np.linalg.norm(grip[:2] - cube[:2]) > 0.015:
            self.phase = "approach"
            return self._travel(grip, above, above[2]), _cube_yaw(objects), math.pi / 2, GRIPPER_OPEN
        self.phase = "descend"
        return np.array([cube[0], cube[1], cube[2] + 0.025]), _cube_yaw(objects), math.pi / 2, GRIPPER_OPEN

    def _press_button(self, q, grip, objects):
        cap = objects["button"].position
        top = cap[2] + 0.006
        above = np.array([cap[0], cap[1], top + self.config.hover])
        travel = 0.02 - cap[2]  # the cap rests 2 cm above the button base when released
        if travel > 0.009 or self.phase == "release":
            self.phase = "release"
            return above, 0.0, math.pi, GRIPPER_CLOSED
        if np.linalg.norm(grip[:2] - cap[:2]) > 0.01:
            self.phase = "approach"
            return self._travel(grip, above, above[2]), 0.0, math.pi, GRIPPER_CLOSED
        self.phase = "press"
        return np.array([cap[0], cap[1], top - 0.008]), 0.0, math.pi, GRIPPER_CLOSED

    def _push_cube_to_pad(self, q, grip, objects):
        cube, pad = objects["cube"].position, objects["pad"].position
        to_pad = pad[:2] - cube[:2]
        dist = float(np.linalg.norm(to_pad))
        push_z = 0.02
        if dist < 0.012:
            self.phase = "done"
            return np.array([grip[0], grip[1], 0.12]), _angle(grip[:2] - cube[:2]), math.pi, GRIPPER_CLOSED
        d = to_pad / dist
        yaw = math.atan2(d[1], d[0]) + math.pi / 2  # fingers side by side across the push direction
        rel = grip[:2] - cube[:2]
        along, lateral = float(rel @ d), float(rel[0] * d[1] - rel[1] * d[0])
        standoff = 0.02 + 0.012 + 0.008
        # Once pushing, tolerate more lateral drift (the cube turns a little) before starting over.
        lateral_tolerance = 0.02 if self.phase == "push" else 0.012
        behind = -0.09 < along < -0.025 and abs(lateral) < lateral_tolerance and grip[2] < 0.05
        if behind:
            self.phase = "push"
            goal_xy = pad[:2] - d * (standoff - 0.004)
            # Lead the cube slowly: a fast pusher tips the cube over instead of sliding it.
            goal_xy = grip[:2] + _clip_norm(goal_xy - grip[:2], self.config.push_speed * self.dt)
            return np.array([goal_xy[0], goal_xy[1], push_z]), yaw, math.pi, GRIPPER_CLOSED
        pre = cube[:2] - d * (standoff + 0.012)
        above = np.array([pre[0], pre[1], 0.04 + self.config.hover])
        to_pre = float(np.linalg.norm(grip[:2] - pre))
        # The fingers' front faces (0.012 ahead of the grip site) are clear of the cube's back face.
        clear_behind = along < -(0.02 + 0.012 + 0.004)
        if clear_behind and to_pre < self.config.push_funnel:
            # Descend in a funnel: the height target falls with the horizontal distance to the
            # pre-push point, so a gripper a centimetre off keeps descending while it slides into
            # line, and one that is already low never climbs (behind the cube nothing is in the way).
            # A go/no-go threshold here, the first design, taught a learner the average of "drop" and
            # "climb back to travel height": it hovered with the fingertips at the cube's top edge and
            # tipped the cube.
            self.phase = "descend"
            share = float(np.clip((to_pre - 0.006) / (self.config.push_funnel - 0.006), 0.0, 1.0))
            height = min(push_z + share * (above[2] - push_z), max(float(grip[2]), push_z))
            return np.array([pre[0], pre[1], height]), yaw, math.pi, GRIPPER_CLOSED
        self.phase = "approach"
        return self._travel(grip, above, above[2]), yaw, math.pi, GRIPPER_CLOSED

    def _pick_cube(self, q, grip, objects):
        cube = objects["cube"].position
        yaw = _cube_yaw(objects)
        opening = q[5]
        near = np.linalg.norm(grip - cube) < 0.02
        if near and 0.006 < opening < 0.019 or (self.phase == "lift" and np.linalg.norm(grip - cube) < 0.035):
            self.phase = "lift"
            return np.array([cube[0], cube[1], 0.16]), yaw, math.pi / 2, GRIPPER_CLOSED
        aligned = np.linalg.norm(grip[:2] - cube[:2]) < 0.008 and abs(grip[2] - cube[2]) < 0.01
        if aligned or (self.phase == "grasp" and near and opening >= 0.006):
            self.phase = "grasp"
            return np.array([cube[0], cube[1], cube[2]]), yaw, math.pi / 2, GRIPPER_CLOSED
        if opening < GRIPPER_OPEN - 0.008 and grip[2] < cube[2] + 0.05:
            self.phase = "open"  # open before moving so the fingers do not drag the cube
            return grip, yaw, math.pi / 2, GRIPPER_OPEN
        above = np.array([cube[0], cube[1], cube[2] + 0.02 + self.config.hover])
        roll_target = self.kin.inverse(above, yaw, math.pi / 2)[4]
        roll_error = abs(_wrap(q[4] - roll_target, math.pi / 2))
        to_cube = float(np.linalg.norm(grip[:2] - cube[:2]))
        if to_cube < self.config.pick_funnel and roll_error < 0.3:
            # Descend in a funnel, as push does (version 3): the height target falls as the gripper
            # closes in on the cube horizontally and the fingers turn square to it, so a gripper a
            # little off keeps descending while it corrects. The go/no-go rule before (within 12 mm and
            # 0.08 rad, else back to travel height) taught a learner the average of the two: it hovered
            # 2-5 cm from the cube (item 28).
            self.phase = "descend"
            share = max(float(np.clip((to_cube - 0.006) / (self.config.pick_funnel - 0.006), 0.0, 1.0)),
                        float(np.clip((roll_error - 0.04) / (0.3 - 0.04), 0.0, 1.0)))
            # (unlike push's, this funnel may climb: a gripper low beside the cube would push it away)
            height = cube[2] + share * (above[2] - cube[2])
            return np.array([cube[0], cube[1], height]), yaw, math.pi / 2, GRIPPER_OPEN
        self.phase = "approach"
        return self._travel(grip, above, above[2]), yaw, math.pi / 2, GRIPPER_OPEN


def _cube_yaw(objects: dict[str, ObjectPose]) -> float:
    w, x, y, z = objects["cube"].quaternion
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def _clip_norm(v: np.ndarray, limit: float) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v if n <= limit else v * (limit / n)


def _angle(v: np.ndarray) -> float:
    return math.atan2(v[1], v[0])
