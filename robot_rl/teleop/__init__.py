"""Teleoperation: devices (gamepad, keyboard, SpaceMouse, leader arm, simulated human) and the
controller the teleop node runs; see :mod:`robot_rl.teleop.base`."""

from robot_rl.teleop.base import (TeleopContext, TeleopController, TeleopDevice, TeleopReading, device_types,
                                  make_device, register_device)

__all__ = ["TeleopContext", "TeleopController", "TeleopDevice", "TeleopReading", "device_types", "make_device",
           "register_device"]
