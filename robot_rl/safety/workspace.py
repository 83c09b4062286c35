"""Forward kinematics of the robot's own model (MJCF or URDF, loaded with MuJoCo) for the workspace box.

The safety filter asks one question before a command leaves: where would the end effector be if the
arm reached these joint positions? MuJoCo answers it from the model file in a few microseconds
(``mj_kinematics`` only: no dynamics, no contacts), for a URDF as well as an MJCF.
"""

from __future__ import annotations

import threading

import numpy as np

from robot_rl.safety.limits import CalibrationError, WorkspaceSpec


class Workspace:
    def __init__(self, spec: WorkspaceSpec, joint_names: list[str], source: str = "robot limits file"):
        import mujoco

        self.spec = spec
        try:
            self.model = mujoco.MjModel.from_xml_path(spec.model)
        except ValueError as exc:
            raise CalibrationError(f"{source}: field 'workspace.model': MuJoCo cannot load {spec.model}: {exc}") from exc
        self.data = mujoco.MjData(self.model)
        self._mujoco = mujoco
        self._lock = threading.Lock()  # one MjData, callers on several executor threads
        addresses = []
        for name in joint_names:
            joint = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, name)
            if joint < 0:
                raise CalibrationError(f"{source}: joint '{name}' is not in the workspace model {spec.model}")
            addresses.append(self.model.jnt_qposadr[joint])
        self._qpos = np.asarray(addresses)
        site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, spec.link)
        body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, spec.link)
        if site < 0 and body < 0:
            raise CalibrationError(f"{source}: field 'workspace.link': no site or body '{spec.link}' in {spec.model}")
        self._site, self._body = site, body

    def position(self, joint_positions: np.ndarray) -> np.ndarray:
        with self._lock:
            self.data.qpos[self._qpos] = joint_positions
            self._mujoco.mj_kinematics(self.model, self.data)
            if self._site >= 0:
                return self.data.site_xpos[self._site].copy()
            return self.data.xpos[self._body].copy()

    def violation(self, joint_positions: np.ndarray) -> str | None:
        """Why these joint positions put the link outside the box, or None."""
        p = self.position(joint_positions)
        outside = (p < self.spec.lower) | (p > self.spec.upper)
        if not outside.any():
            return None
        axes = ", ".join(f"{'xyz'[i]} {p[i]:+.3f} not in [{self.spec.lower[i]:+.3f}, {self.spec.upper[i]:+.3f}]"
                         for i in np.nonzero(outside)[0])
        return f"workspace: {self.spec.link} would leave the box ({axes}) m"
