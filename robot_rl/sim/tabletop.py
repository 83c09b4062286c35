"""The tabletop world: a 5-joint arm with a gripper, a red cube, a green pad and a blue button.

The scene is ``sim/tabletop.xml``. Object layout is drawn from the episode seed alone, so one seed
gives the same scene whatever the task (useful for showing the same scene with another instruction),
and every layout leaves all four tasks feasible. Rendering is offscreen (EGL by default) with shadows
and reflections off: on a CPU renderer the shadow pass costs more than the whole rest of the frame.
"""

from __future__ import annotations

import atexit
import math
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from robot_rl.paths import data_path  # noqa: E402
from robot_rl.sim.tasks import Task, get_task  # noqa: E402
from robot_rl.sim.world import CameraModel, ObjectPose, World, WorldConfig  # noqa: E402

JOINT_NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
HOME = np.array([0.0, 0.0, 0.2, -0.2, 0.0, 0.04])
GRIPPER_OPEN = 0.04

CUBE_HALF = 0.02
PAD_RADIUS = 0.05
BUTTON_TRAVEL_PRESSED = 0.008  # metres of cap travel that count as a press
BUTTON_LIT = np.array([1.0, 0.85, 0.1, 1.0])  # RGBA (yellow) of cap and housing once pressed (latched, see _set_pressed)
REACH_TOLERANCE = 0.04  # gripper-site distance to the cube centre
PUSH_TOLERANCE = 0.035  # cube centre distance to the pad centre
LIFT_HEIGHT = 0.08  # cube centre height that counts as picked up

# Workspace where objects are placed (world frame, metres) and their minimum spacing.
_X_RANGE = (0.24, 0.40)
_Y_RANGE = (-0.17, 0.17)
_MIN_SPACING = 0.13


class TabletopWorld(World):
    def __init__(self, config: WorldConfig | None = None, scene: str | None = None):
        self.config = config or WorldConfig()
        path = scene or str(data_path("sim", "tabletop.xml"))
        self.model = mujoco.MjModel.from_xml_path(path)
        self.data = mujoco.MjData(self.model)
        self.joint_names = list(JOINT_NAMES)
        self.camera_names = list(self.config.cameras)
        for cam in self.camera_names:
            if mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, cam) < 0:
                raise ValueError(f"camera '{cam}' is not in scene {path}; the scene has 'front' and 'wrist'")
        self.control_period = 1.0 / float(self.config.control_rate_hz)
        self.substeps = max(1, round(self.control_period / self.model.opt.timestep))
        self._qpos_adr = np.array([self.model.joint(n).qposadr[0] for n in JOINT_NAMES])
        self._qvel_adr = np.array([self.model.joint(n).dofadr[0] for n in JOINT_NAMES])
        self._mimic_qpos = self.model.joint("gripper_mimic").qposadr[0]
        self._cube_qpos = self.model.joint("cube_joint").qposadr[0]
        self._button_qpos = self.model.joint("button_press").qposadr[0]
        self._button_geoms = [self.model.geom(g).id for g in ("button_cap_geom", "button_housing")]
        self._button_unlit = self.model.geom_rgba[self._button_geoms].copy()
        self.ctrl_low = self.model.actuator_ctrlrange[:, 0].copy()
        self.ctrl_high = self.model.actuator_ctrlrange[:, 1].copy()
        limited = self.model.actuator_ctrllimited.astype(bool)
        jnt_range = np.array([self.model.joint(n).range for n in JOINT_NAMES])
        self.ctrl_low[~limited] = jnt_range[~limited, 0]
        self.ctrl_high[~limited] = jnt_range[~limited, 1]
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._task: Task | None = None
        self._pressed = False
        self.seed: int | None = None
        self.reset(0, "pick_cube")

    # -- episode -------------------------------------------------------------------------------
    def reset(self, seed: int, task: str | None = None) -> None:
        if task is not None:
            self._task = get_task(task)
        self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        mujoco.mj_resetData(self.model, self.data)
        cube_xy, pad_xy, button_xy = sample_layout(rng)
        yaw = rng.uniform(-math.pi / 4, math.pi / 4)
        q = self.data.qpos
        q[self._cube_qpos : self._cube_qpos + 3] = [cube_xy[0], cube_xy[1], CUBE_HALF]
        q[self._cube_qpos + 3 : self._cube_qpos + 7] = [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]
        self.model.body("pad").pos[:2] = pad_xy
        self.model.body("button").pos[:2] = button_xy
        home = HOME + np.concatenate([rng.uniform(-0.05, 0.05, 5), [0.0]])
        q[self._qpos_adr] = home
        q[self._mimic_qpos] = home[5]
        self.data.ctrl[:] = home
        mujoco.mj_forward(self.model, self.data)
        self._set_pressed(False)
        self._start = self._progress_distances()

    def snapshot(self) -> dict[str, np.ndarray]:
        return {"task": np.array(self.task_name or ""), "seed": np.array(self.seed if self.seed is not None else -1),
                "qpos": self.data.qpos.copy(), "qvel": self.data.qvel.copy(), "ctrl": self.data.ctrl.copy(),
                "pad": self.model.body("pad").pos.copy(), "button": self.model.body("button").pos.copy(),
                "pressed": np.array(self._pressed)}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        for key, value in (("qpos", self.data.qpos), ("qvel", self.data.qvel), ("ctrl", self.data.ctrl)):
            if np.shape(state.get(key)) != value.shape:
                raise ValueError(f"saved state '{key}' has shape {np.shape(state.get(key))}, this scene needs {value.shape}")
        mujoco.mj_resetData(self.model, self.data)
        if str(state["task"]):
            self._task = get_task(str(state["task"]))
        self.seed = int(state["seed"])
        self.model.body("pad").pos[:] = state["pad"]
        self.model.body("button").pos[:] = state["button"]
        self.data.qpos[:], self.data.qvel[:], self.data.ctrl[:] = state["qpos"], state["qvel"], state["ctrl"]
        mujoco.mj_forward(self.model, self.data)
        self._set_pressed(bool(state["pressed"]))
        self._start = self._progress_distances()  # progress counts from where this episode begins

    def hold_command(self) -> np.ndarray:
        """The command that keeps the arm where it is (after a reset or a restore)."""
        return self.data.ctrl.copy()

    @property
    def task(self) -> Task | None:
        return self._task

    @property
    def task_name(self) -> str | None:
        return self._task.name if self._task else None

    def set_task(self, task: str) -> None:
        self._task = get_task(task)

    @property
    def time(self) -> float:
        return float(self.data.time)

    # -- control -------------------------------------------------------------------------------
    def step(self, command: np.ndarray) -> None:
        command = np.asarray(command, dtype=np.float64)
        if command.shape != (len(JOINT_NAMES),) or not np.all(np.isfinite(command)):
            raise ValueError(
                f"command must be {len(JOINT_NAMES)} finite joint targets ordered {JOINT_NAMES}, got {command!r}"
            )
        self.data.ctrl[:] = np.clip(command, self.ctrl_low, self.ctrl_high)
        for _ in range(self.substeps):
            mujoco.mj_step(self.model, self.data)
            # Latch the press inside the physics loop: a brief tap between two control ticks counts.
            if not self._pressed and self.button_travel() >= BUTTON_TRAVEL_PRESSED:
                self._set_pressed(True)

    def _set_pressed(self, pressed: bool) -> None:
        """The button latches and lights up once pressed, like a lift's call button. Without the
        light a released button looks exactly like one never pressed, and nothing that watches the
        cameras (the progress critic's done, a human) could tell the task was done."""
        self._pressed = pressed
        self.model.geom_rgba[self._button_geoms] = BUTTON_LIT if pressed else self._button_unlit

    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[self._qpos_adr].copy()

    def joint_velocities(self) -> np.ndarray:
        return self.data.qvel[self._qvel_adr].copy()

    # -- ground truth --------------------------------------------------------------------------
    def grip_position(self) -> np.ndarray:
        return self.data.site("grip").xpos.copy()

    def cube_position(self) -> np.ndarray:
        return self.data.qpos[self._cube_qpos : self._cube_qpos + 3].copy()

    def button_travel(self) -> float:
        return float(-self.data.qpos[self._button_qpos])

    def object_poses(self) -> dict[str, ObjectPose]:
        def pose(body: str) -> ObjectPose:
            b = self.data.body(body)
            return ObjectPose(b.xpos.copy(), b.xquat.copy())

        return {"cube": pose("cube"), "pad": pose("pad"), "button": pose("button_cap")}

    def success(self) -> bool | None:
        if self._task is None:
            return None
        name = self._task.name
        cube = self.cube_position()
        if name == "reach_cube":
            return bool(np.linalg.norm(self.grip_position() - cube) < REACH_TOLERANCE)
        if name == "press_button":
            return self._pressed
        if name == "push_cube_to_pad":
            pad = self.data.body("pad").xpos
            return bool(np.linalg.norm(cube[:2] - pad[:2]) < PUSH_TOLERANCE and cube[2] < CUBE_HALF + 0.01)
        if name == "pick_cube":
            near = np.linalg.norm(self.grip_position() - cube) < 0.04
            return bool(cube[2] > LIFT_HEIGHT and near)
        raise AssertionError(name)

    def _progress_distances(self) -> dict[str, float]:
        grip, cube = self.grip_position(), self.cube_position()
        pad = self.data.body("pad").xpos[:2]
        cap_top = self.data.body("button_cap").xpos + np.array([0.0, 0.0, 0.006])
        to_pad = pad - cube[:2]
        behind = np.array([*(cube[:2] - to_pad / max(np.linalg.norm(to_pad), 1e-6) * 0.05), 0.02])
        return {"grip_cube": float(np.linalg.norm(grip - cube)), "grip_cap": float(np.linalg.norm(grip - cap_top)),
                "grip_behind_cube": float(np.linalg.norm(grip - behind)), "cube_pad": float(np.linalg.norm(to_pad))}

    def task_progress(self) -> float | None:
        """Ground-truth progress of the current task in [0, 1], measured from the episode's start: 0
        where the episode began, 1 at success, milestones in between (approach, contact, lift or push).

        Simulation only. It labels failed episodes when a progress critic is trained (successful ones
        are labelled by time, as VLAC does) and reports evaluations; it never reaches a learner's reward.
        """
        if self._task is None:
            return None
        if self.success():
            return 1.0
        now, start = self._progress_distances(), self._start

        def closer(key: float, tolerance: float) -> float:  # 0 at the start distance, 1 within tolerance
            return float(np.clip(1.0 - (now[key] - tolerance) / max(start[key] - tolerance, 1e-6), 0.0, 1.0))

        name = self._task.name
        if name == "reach_cube":
            return closer("grip_cube", REACH_TOLERANCE)
        if name == "press_button":
            travel = float(np.clip(self.button_travel() / BUTTON_TRAVEL_PRESSED, 0.0, 1.0))
            return 0.8 * closer("grip_cap", 0.01) + 0.2 * travel
        if name == "push_cube_to_pad":
            return 0.3 * closer("grip_behind_cube", 0.01) + 0.7 * closer("cube_pad", PUSH_TOLERANCE)
        if name == "pick_cube":
            near = now["grip_cube"] < 0.04
            opening = float(self.joint_positions()[5])
            grasped = near and now["grip_cube"] < 0.025 and 0.006 < opening < 0.019
            lift = float(np.clip((self.cube_position()[2] - CUBE_HALF) / (LIFT_HEIGHT - CUBE_HALF), 0.0, 1.0)) if near else 0.0
            return 0.6 * closer("grip_cube", 0.01) + 0.1 * grasped + 0.3 * lift
        raise AssertionError(name)

    # -- cameras -------------------------------------------------------------------------------
    def _renderer(self) -> mujoco.Renderer:
        key = (self.config.image_height, self.config.image_width)
        renderer = self._renderers.get(key)
        if renderer is None:
            renderer = mujoco.Renderer(self.model, height=key[0], width=key[1])
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
            if not self._renderers:
                # Free GL contexts before the interpreter tears EGL down (avoids noisy errors at exit).
                atexit.register(self.close)
            self._renderers[key] = renderer
        return renderer

    def _check_camera(self, camera: str) -> None:
        if camera not in self.camera_names:
            raise ValueError(f"unknown camera '{camera}'; this world renders {self.camera_names}")

    def render(self, camera: str) -> np.ndarray:
        self._check_camera(camera)
        renderer = self._renderer()
        renderer.update_scene(self.data, camera=camera)
        return renderer.render()

    def camera_pose(self, camera: str) -> tuple[np.ndarray, np.ndarray]:
        """The camera's position (3,) and orientation (3, 3; columns: its x right, y up, z toward the viewer,
        MuJoCo's convention) in the world, as the last render saw it; a wrist camera moves with the arm."""
        self._check_camera(camera)
        index = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        return self.data.cam_xpos[index].copy(), self.data.cam_xmat[index].reshape(3, 3).copy()

    def camera_model(self, camera: str) -> CameraModel:
        w, h = self.config.image_width, self.config.image_height
        fovy = math.radians(float(self.model.camera(camera).fovy[0]))
        f = 0.5 * h / math.tan(fovy / 2)
        return CameraModel(width=w, height=h, fx=f, fy=f, cx=(w - 1) / 2, cy=(h - 1) / 2)

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()


def sample_layout(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cube, pad and button positions (xy) that leave every task feasible.

    Objects keep ``_MIN_SPACING`` apart, and the straight push of the cube onto the pad, including
    the approach point behind the cube, stays clear of the button and inside the arm's reach.
    """
    low, high = np.array([_X_RANGE[0], _Y_RANGE[0]]), np.array([_X_RANGE[1], _Y_RANGE[1]])
    for _ in range(10_000):
        cube, pad, button = (rng.uniform(low, high) for _ in range(3))
        pts = (cube, pad, button)
        if min(np.linalg.norm(a - b) for i, a in enumerate(pts) for b in pts[i + 1 :]) < _MIN_SPACING:
            continue
        direction = (pad - cube) / np.linalg.norm(pad - cube)
        approach = cube - direction * 0.06
        if not 0.2 < np.linalg.norm(approach) < 0.45:
            continue
        if _segment_distance(button, approach, pad) < 0.08:
            continue
        return cube, pad, button
    raise RuntimeError("could not sample a feasible tabletop layout")


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = np.clip(np.dot(p - a, ab) / np.dot(ab, ab), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * ab)))
