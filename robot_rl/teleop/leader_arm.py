"""A leader arm through LeRobot's teleoperator interface (optional extra ``lerobot``, which pins its own
torch: install it in its own environment, see README).

``teleoperator`` names a LeRobot teleoperator type (``so101_leader``, ``koch_leader``, ...) built with
``port`` and ``id`` (LeRobot's calibration id). Its ``get_action()`` gives ``{"<motor>.pos": value}``;
each robot joint takes ``keys[j]`` scaled and offset into radians (``scale``, ``offset``; the
default turns LeRobot's degrees into radians). The human takes and gives control, and marks success,
failure and reset, on the keyboard (``keyboard_tty``, the same keys as the keyboard device) since a
leader arm has no buttons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from robot_rl.teleop.base import TeleopContext, TeleopDevice, TeleopReading
from robot_rl.teleop.jog import per_joint
from robot_rl.teleop.keyboard import KeyboardConfig, KeyboardDevice


@dataclass
class LeaderArmConfig:
    teleoperator: str = "so101_leader"
    port: str = "/dev/ttyACM0"
    id: str = "leader_arm"
    keys: list[str] = field(default_factory=lambda: ["shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos",
                                                     "wrist_flex.pos", "wrist_roll.pos", "gripper.pos"])
    scale: list[float] = field(default_factory=lambda: [math.pi / 180] * 5 + [0.045 / 100])
    offset: list[float] = field(default_factory=lambda: [0.0] * 6)
    keyboard_tty: str = ""  # the terminal whose keys engage and mark events


class LeaderArmDevice(TeleopDevice):
    type_name = "leader_arm"

    def __init__(self, config: LeaderArmConfig, joint_names: list[str], teleoperator=None, keyboard=None):
        self.config = config
        self.keys = per_joint(config.keys, joint_names, "keys", self.type_name)
        self.scale = np.asarray(per_joint(config.scale, joint_names, "scale", self.type_name), np.float64)
        self.offset = np.asarray(per_joint(config.offset, joint_names, "offset", self.type_name), np.float64)
        self.teleoperator = teleoperator  # a LeRobot Teleoperator (made in connect() when None)
        self.keyboard = keyboard or KeyboardDevice(KeyboardConfig(tty=config.keyboard_tty, jog_keys=[]), joint_names)

    def connect(self) -> None:
        if self.teleoperator is None:
            try:
                from lerobot.teleoperators import TeleoperatorConfig, make_teleoperator_from_config
            except ImportError as exc:
                raise ImportError("teleop device 'leader_arm' needs LeRobot (pip install robot_rl[lerobot], "
                                  "in its own environment: it pins its own torch)") from exc
            c = self.config
            config = TeleoperatorConfig.get_choice_class(c.teleoperator)(port=c.port, id=c.id)
            self.teleoperator = make_teleoperator_from_config(config)
        if not getattr(self.teleoperator, "is_connected", False):
            self.teleoperator.connect()
        self.keyboard.connect()

    def disconnect(self) -> None:
        self.keyboard.disconnect()
        if self.teleoperator is not None and getattr(self.teleoperator, "is_connected", False):
            self.teleoperator.disconnect()

    def positions(self) -> np.ndarray:
        action = self.teleoperator.get_action()
        missing = [k for k in self.keys if k not in action]
        if missing:
            raise KeyError(f"teleop device 'leader_arm': the teleoperator's action lacks {missing} "
                           f"(it has {sorted(action)}); set the option 'keys'")
        return np.array([float(action[k]) for k in self.keys]) * self.scale + self.offset

    def read(self, context: TeleopContext) -> TeleopReading:
        keys = self.keyboard.read(context)
        # the arm is read even when not engaged, so a bus fault shows before the human needs it
        return TeleopReading(engaged=keys.engaged, positions=self.positions(), events=keys.events)
