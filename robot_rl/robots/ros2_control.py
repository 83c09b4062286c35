"""ros2_control arms (Franka, UR, Kinova, ...): the safety node's command on a controller's topic.

The arm's own ros2_control stack runs the hardware; this adapter only speaks its topics:

- state: ``/joint_states`` from the ``joint_state_broadcaster``, checked against the limits file's
  joints (missing joints are an error that names them; extra joints, such as a second arm's, are fine);
- command: ``/robot/command`` (limits-file order) becomes either a ``forward_position_controller``
  command (``std_msgs/Float64MultiArray`` in the controller's ``joints`` order) or a one-point
  ``trajectory_msgs/JointTrajectory`` for a ``joint_trajectory_controller``, reached in one control
  period (the controller interpolates; the safety node has already limited velocity and acceleration).
"""

from __future__ import annotations

import numpy as np

CONTROLLERS = {"forward_position": "/forward_position_controller/commands",
               "joint_trajectory": "/joint_trajectory_controller/joint_trajectory"}


class Ros2ControlAdapter:
    def __init__(self, joint_names: list[str], controller: str = "forward_position",
                 controller_joints: list[str] | None = None, source: str = "robot limits file"):
        if controller not in CONTROLLERS:
            raise ValueError(f"parameter 'controller' = {controller!r}: expected one of {sorted(CONTROLLERS)}")
        self.joint_names = list(joint_names)
        self.controller = controller
        self.controller_joints = list(controller_joints) if controller_joints else list(joint_names)
        if sorted(self.controller_joints) != sorted(self.joint_names):
            raise ValueError(f"parameter 'controller_joints' {self.controller_joints} must name the same joints as "
                             f"{source} ({self.joint_names}), in the controller's order")
        self._order = [self.joint_names.index(n) for n in self.controller_joints]
        self.state_error = "no /joint_states yet"

    def check_joint_state(self, names: list[str]) -> str | None:
        """None when the arm reports every joint of the limits file, else why not (kept in state_error)."""
        missing = [n for n in self.joint_names if n not in names]
        self.state_error = (f"/joint_states lacks joints {missing} of the limits file (it has {list(names)}): "
                            "wrong robot, limits file or namespace" if missing else None)
        return self.state_error

    def controller_command(self, positions) -> list[float]:
        positions = np.asarray(positions, dtype=np.float64)
        if positions.shape != (len(self.joint_names),) or not np.all(np.isfinite(positions)):
            raise ValueError(f"/robot/command: expected {len(self.joint_names)} finite targets ordered "
                             f"{self.joint_names}, got {positions.tolist()}")
        return positions[self._order].tolist()
