"""The simulated tabletop arm behind the robot interface: what a real driver does, done by MuJoCo.

``command`` sets the position targets; the world advances one control period per ``read`` (the
driver node reads at its rate), so the arm moves in simulated real time. Cameras are not part of a
robot driver: use sim_bridge_node for the complete simulated robot with cameras.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from robot_rl.robots.base import JointReading, Robot, RobotConfig, RobotError


@dataclass
class SimRobotConfig(RobotConfig):
    type: ClassVar[str] = "sim"
    seed: int = 0
    control_rate_hz: float = 10.0


class SimRobot(Robot):
    def __init__(self, config: SimRobotConfig):
        super().__init__(config)
        self.config: SimRobotConfig = config
        self.world = None
        self._target: np.ndarray | None = None

    def connect(self) -> None:
        from robot_rl.sim.world import WorldConfig, make_world

        self.world = make_world("tabletop", WorldConfig(control_rate_hz=self.config.control_rate_hz, cameras=[]))
        self.world.reset(self.config.seed)
        names = list(self.world.joint_names)
        if self.config.joint_names and self.config.joint_names != names:
            raise RobotError(f"sim arm: the limits file names joints {self.config.joint_names}, the model has {names}")
        self.config.joint_names = names
        self._target = self.world.hold_command()

    def read(self) -> JointReading:
        if self.world is None:
            raise RobotError("sim arm: not connected")
        self.world.step(self._target)
        return JointReading(self.world.joint_positions().copy(), time.time(), self.world.joint_velocities().copy())

    def command(self, positions) -> None:
        self._target = self.check_command(positions)

    def disconnect(self) -> None:
        if self.world is not None:
            self.world.close()
        self.world = None
