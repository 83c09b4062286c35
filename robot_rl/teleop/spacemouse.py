"""3Dconnexion SpaceMouse through pyspacemouse (optional: ``pip install pyspacemouse``; it needs
hidapi and read access to the device's hidraw node, e.g. a udev rule).

Its six axes (x, y, z, roll, pitch, yaw, each in [-1, 1]) jog joints by ``axes`` (one entry per
joint: the index of the SpaceMouse axis, -1 for none). The left button toggles control; the right
button marks success (failure and reset need another device, e.g. the keyboard).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from robot_rl.teleop.base import TeleopContext, TeleopDevice, TeleopReading
from robot_rl.teleop.jog import EdgeDetector, jog_velocity, per_joint

AXES = ("x", "y", "z", "roll", "pitch", "yaw")


@dataclass
class SpaceMouseConfig:
    axes: list[int] = field(default_factory=lambda: [5, 0, 2, 4, 3, -1])  # yaw->pan, x->lift, z->elbow, ...
    speeds: list[float] = field(default_factory=lambda: [0.6, 0.6, 0.6, 0.8, 0.8, 0.05])
    deadzone: float = 0.08
    engage_button: int = 0
    success_button: int = 1
    device: str = ""  # pyspacemouse device name; "" = the first one found


class SpaceMouseDevice(TeleopDevice):
    type_name = "spacemouse"

    def __init__(self, config: SpaceMouseConfig, joint_names: list[str], backend=None):
        self.config = config
        self.axes = per_joint(config.axes, joint_names, "axes", self.type_name)
        self.speeds = per_joint(config.speeds, joint_names, "speeds", self.type_name)
        self.backend = backend  # the pyspacemouse module (or an object with its read())
        self.edges = EdgeDetector()
        self.engaged = False

    def connect(self) -> None:
        if self.backend is None:
            try:
                import pyspacemouse
            except ImportError as exc:
                raise ImportError("teleop device 'spacemouse' needs pyspacemouse: pip install pyspacemouse") from exc
            self.backend = pyspacemouse
        opened = self.backend.open(device=self.config.device) if self.config.device else self.backend.open()
        if not opened:
            raise OSError("teleop device 'spacemouse': no SpaceMouse could be opened (is it plugged in, "
                          "and may this user read its hidraw device?)")

    def disconnect(self) -> None:
        if self.backend is not None and hasattr(self.backend, "close"):
            self.backend.close()

    def reading_from_state(self, state) -> TeleopReading:
        """A reading from one pyspacemouse state (attributes x..yaw and a buttons list)."""
        c = self.config
        buttons = list(getattr(state, "buttons", []) or [])
        down = lambda i: 0 <= i < len(buttons) and bool(buttons[i])  # noqa: E731
        if self.edges.pressed(c.engage_button, down(c.engage_button)):
            self.engaged = not self.engaged
        events = ["success"] if self.edges.pressed(c.success_button, down(c.success_button)) else []
        inputs = np.array([float(getattr(state, a)) for a in AXES])
        return TeleopReading(engaged=self.engaged, velocity=jog_velocity(inputs, self.axes, self.speeds, c.deadzone),
                             events=events)

    def read(self, context: TeleopContext) -> TeleopReading:
        return self.reading_from_state(self.backend.read())
