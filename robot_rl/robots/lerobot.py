"""LeRobot arms (SO-100/SO-101, Koch) through lerobot's own Robot API (``pip install lerobot`` in its
own environment: it pins an older torch than robot_rl's main environment).

lerobot's ``{motor}.pos`` observations and actions map to the limits file's joints by name. With
``use_degrees`` (the default here) lerobot reports body joints in degrees, which this driver turns
into radians; the gripper stays on lerobot's 0-100 scale (so the limits file gives the gripper as
0..100). Calibration is lerobot's: the files ``lerobot-calibrate`` wrote under ``calibration_dir``
for the robot ``id`` are reused as they are; this driver never calibrates on its own (a
calibration moves the arm, and must be done with a person watching).

Not exercised in CI: the test environment has no lerobot (see the README's hardware section).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from robot_rl.robots.base import JointReading, Robot, RobotConfig, RobotError

ROBOT_TYPES = ("so100_follower", "so101_follower", "koch_follower")


@dataclass
class LeRobotConfig(RobotConfig):
    type: ClassVar[str] = "lerobot"
    robot_type: str = "so101_follower"
    port: str = "/dev/ttyACM0"
    id: str = "follower"  # lerobot's robot id: names its calibration file
    calibration_dir: str = ""  # "" = lerobot's default (~/.cache/huggingface/lerobot/calibration)
    use_degrees: bool = True
    gripper: str = "gripper"  # the joint kept on lerobot's 0-100 scale


class LeRobotArm(Robot):
    def __init__(self, config: LeRobotConfig):
        super().__init__(config)
        self.config: LeRobotConfig = config
        if config.robot_type not in ROBOT_TYPES:
            raise RobotError(f"lerobot robot_type {config.robot_type!r}: expected one of {ROBOT_TYPES}")
        self.robot = None

    def _scale(self) -> np.ndarray:
        degrees = self.config.use_degrees
        return np.array([1.0 if (n == self.config.gripper or not degrees) else np.pi / 180.0 for n in self.joint_names])

    def connect(self) -> None:
        try:
            from lerobot.robots import make_robot_from_config
            from lerobot.robots.config import RobotConfig as LeRobotRobotConfig
        except ImportError as exc:
            raise RobotError(f"LeRobot arms need lerobot (pip install lerobot, in its own environment): {exc}") from exc
        cfg = self.config
        kwargs = {"port": cfg.port, "id": cfg.id, "use_degrees": cfg.use_degrees}
        if cfg.calibration_dir:
            kwargs["calibration_dir"] = cfg.calibration_dir
        robot_config = LeRobotRobotConfig.get_choice_class(cfg.robot_type)(**kwargs)
        self.robot = make_robot_from_config(robot_config)
        self.robot.connect(calibrate=False)
        motors = [key[:-4] for key in self.robot.action_features if key.endswith(".pos")]
        if sorted(motors) != sorted(self.joint_names):
            self.disconnect()
            raise RobotError(f"{cfg.robot_type} on {cfg.port}: lerobot's motors {motors} differ from the limits file's "
                             f"joints {self.joint_names}")

    def read(self) -> JointReading:
        if self.robot is None:
            raise RobotError("LeRobot arm: not connected")
        observation = self.robot.get_observation()
        raw = np.array([observation[f"{n}.pos"] for n in self.joint_names], dtype=np.float64)
        return JointReading(raw * self._scale(), time.time())

    def command(self, positions) -> None:
        if self.robot is None:
            raise RobotError("LeRobot arm: not connected")
        raw = self.check_command(positions) / self._scale()
        self.robot.send_action({f"{n}.pos": float(v) for n, v in zip(self.joint_names, raw)})

    def disconnect(self) -> None:
        if self.robot is not None:
            try:
                self.robot.disconnect()
            finally:
                self.robot = None
