"""Joint jogging shared by the rate devices (gamepad, keyboard, SpaceMouse).

Each joint of the robot is driven by one input channel (a gamepad axis, a pair of keys, a SpaceMouse
axis) at up to ``speeds[j]`` rad/s. Joint jogging works for any arm without a kinematic model, like
a teach pendant's joint mode; the tabletop arm's defaults put the shoulder on the left stick and the
elbow and wrist on the right.
"""

from __future__ import annotations

import numpy as np


def per_joint(values: list, joint_names: list[str], what: str, device: str) -> list:
    """``values`` checked to give one entry per joint (the message names the option and the joints)."""
    if len(values) != len(joint_names):
        raise ValueError(f"teleop device '{device}' option '{what}': {len(values)} entries for "
                         f"{len(joint_names)} joints {joint_names}")
    return list(values)


def jog_velocity(inputs: np.ndarray, channels: list[int], speeds: list[float], deadzone: float) -> np.ndarray:
    """Joint velocities from raw channel values in [-1, 1]; channel -1 leaves a joint still.

    Inside the deadzone a channel reads zero; outside it the response is rescaled to start at zero,
    so there is no step at the deadzone's edge.
    """
    velocity = np.zeros(len(channels))
    for j, (channel, speed) in enumerate(zip(channels, speeds)):
        if channel < 0 or channel >= len(inputs):
            continue
        value = float(np.clip(inputs[channel], -1.0, 1.0))
        magnitude = max(0.0, abs(value) - deadzone) / max(1e-9, 1.0 - deadzone)
        velocity[j] = np.sign(value) * magnitude * speed
    return velocity


class EdgeDetector:
    """Rising edges of buttons: an event fires once per press, however long it is held."""

    def __init__(self) -> None:
        self.previous: dict[int, bool] = {}

    def pressed(self, index: int, down: bool) -> bool:
        was = self.previous.get(index, False)
        self.previous[index] = down
        return down and not was
