"""Gamepad through ``sensor_msgs/Joy`` (the ROS ``joy`` package's joy_node publishes it).

The teleop node feeds each Joy message to :meth:`JoyDevice.feed`; the device itself never touches
ROS. Defaults fit an Xbox-style pad under joy_node (axes: 0/1 left stick, 3/4 right stick, 6/7 d-pad;
buttons: 0 A, 1 B, 3 Y, 4 LB):

- LB held: the human has control (a dead-man switch: let go and the policy resumes).
  ``toggle: true`` makes a press toggle instead.
- sticks and d-pad jog the joints (``axes``, ``speeds``: one entry per joint);
- A marks success, B failure, Y asks for a reset.

A pad that falls silent (joy_node died, radio lost) for ``timeout_s`` stops jogging: the command
holds where it is and the node warns; control stays with the human until the pad speaks again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from robot_rl.teleop.base import TeleopContext, TeleopDevice, TeleopReading
from robot_rl.teleop.jog import EdgeDetector, jog_velocity, per_joint


@dataclass
class JoyConfig:
    axes: list[int] = field(default_factory=lambda: [0, 1, 4, 3, 6, 7])  # per joint; -1: not jogged
    speeds: list[float] = field(default_factory=lambda: [0.6, 0.6, 0.6, 0.8, 0.8, 0.05])  # rad/s at full deflection
    deadzone: float = 0.1
    engage_button: int = 4
    toggle: bool = False
    success_button: int = 0
    failure_button: int = 1
    reset_button: int = 3
    timeout_s: float = 0.5


class JoyDevice(TeleopDevice):
    type_name = "joy"

    def __init__(self, config: JoyConfig, joint_names: list[str]):
        self.config = config
        self.axes = per_joint(config.axes, joint_names, "axes", self.type_name)
        self.speeds = per_joint(config.speeds, joint_names, "speeds", self.type_name)
        self.edges = EdgeDetector()
        self.axes_now = np.zeros(0)
        self.buttons_now: list[int] = []
        self.received_at: float | None = None
        self.toggled = False
        self.pending: list[str] = []

    def feed(self, axes, buttons, now: float) -> None:
        """One Joy message (``axes`` floats in [-1, 1], ``buttons`` 0/1) received at ``now``."""
        self.axes_now = np.asarray(axes, np.float64)
        self.buttons_now = [int(b) for b in buttons]
        self.received_at = now
        c = self.config
        for event, index in (("success", c.success_button), ("failure", c.failure_button), ("reset", c.reset_button)):
            if self.edges.pressed(index, self._button(index)):
                self.pending.append(event)
        if c.toggle and self.edges.pressed(c.engage_button, self._button(c.engage_button)):
            self.toggled = not self.toggled

    def _button(self, index: int) -> bool:
        return 0 <= index < len(self.buttons_now) and bool(self.buttons_now[index])

    @property
    def stale(self) -> bool:
        return self.received_at is None

    def read(self, context: TeleopContext) -> TeleopReading:
        c = self.config
        events, self.pending = self.pending, []
        engaged = self.toggled if c.toggle else self._button(c.engage_button)
        silent = self.received_at is None or context.now - self.received_at > c.timeout_s
        velocity = np.zeros(len(self.axes)) if silent else jog_velocity(self.axes_now, self.axes, self.speeds, c.deadzone)
        return TeleopReading(engaged=engaged, velocity=velocity, events=events)
