"""The camera interface: one class per kind of source, one config dataclass each, registered by name.

A camera gives :class:`CameraFrame` objects: an RGB image, an optional depth image aligned to it,
and two times. ``device_time`` is what the device says (its own clock, seconds, or ``None``);
``stamp`` is the time of exposure on the host clock that the ROS node stamps messages with. A
driver that only knows when a frame *arrived* says so (``stamp_source``), because the policy and
the safety layer judge observation age from ``stamp``.

Errors are of two kinds: :class:`CameraTimeout` (no frame in time; the device may come back) and
:class:`CameraDisconnected` (the device is gone or was never found). :class:`CameraStream` in
``stream.py`` turns both into reconnects; nothing here retries on its own.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from robot_rl.registry import RegisteredByType


class CameraError(RuntimeError):
    """A camera problem; the message names the camera and what went wrong."""


class CameraTimeout(CameraError):
    """No frame arrived within the timeout."""


class CameraDisconnected(CameraError):
    """The device is not there (unplugged, never plugged in, or failed to open)."""


@dataclass
class CameraFrame:
    color: np.ndarray  # (H, W, 3) uint8 RGB
    stamp: float  # host-clock seconds of the exposure (see stamp_source)
    frame_number: int
    device_time: float | None = None  # the device's own clock, seconds
    depth: np.ndarray | None = None  # (H, W) uint16, aligned to color when the config asks for it
    depth_scale: float = 0.001  # metres per depth unit
    stamp_source: str = "arrival"  # "device" (device clock mapped to host), "host" (device stamped on host), "arrival"


@dataclass
class Intrinsics:
    """Pinhole intrinsics with plumb_bob distortion (k1, k2, p1, p2, k3), as ROS camera_info holds them."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: list[float] = field(default_factory=lambda: [0.0] * 5)
    distortion_model: str = "plumb_bob"

    @property
    def k(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


@dataclass
class CameraConfig(RegisteredByType):
    """Settings every camera has. Subclasses register under ``type`` (``realsense``, ``opencv``, ``replay``);
    ``CameraConfig.from_dict({"type": ..., ...})`` builds one (:mod:`robot_rl.registry`)."""

    noun: ClassVar[str] = "camera"
    _registry: ClassVar[dict[str, type["CameraConfig"]]] = {}
    name: str = "front"
    width: int = 640
    height: int = 480
    fps: float = 30.0
    timeout_s: float = 1.0  # a read that waits longer raises CameraTimeout

    @classmethod
    def _register_builtins(cls) -> None:
        from robot_rl.cameras import opencv, realsense, replay  # noqa: F401


class Camera(abc.ABC):
    """``connect()``, ``read()`` frames, ``disconnect()``; also a context manager."""

    def __init__(self, config: CameraConfig):
        self.config = config

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the device; raises CameraDisconnected when it is not there."""

    @abc.abstractmethod
    def read(self, timeout_s: float | None = None) -> CameraFrame:
        """The next frame; CameraTimeout when none came in ``timeout_s`` (default: config.timeout_s)."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Release the device; safe to call twice or after a failed connect."""

    @property
    @abc.abstractmethod
    def is_connected(self) -> bool: ...

    def intrinsics(self) -> Intrinsics | None:
        """What the device reports about its optics, when it does (a calibration file overrides it)."""
        return None

    def __enter__(self) -> "Camera":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()


class DeviceClock:
    """Maps a device clock (seconds) to the host clock.

    The host receives a frame some time after its exposure: ``host = device + offset + latency`` with
    latency >= 0. The smallest ``host - device`` seen is therefore the best estimate of the offset
    (the frame that came through fastest). A window of recent samples lets the estimate follow the
    slow drift between the two crystals; a jump of the device clock (a reconnect resets it) is
    caught by :meth:`reset`, which the camera calls when it reopens the device.
    """

    def __init__(self, window: int = 300):
        self.window = window
        self._samples: list[float] = []

    def reset(self) -> None:
        self._samples.clear()

    def to_host(self, device_time: float, host_arrival: float) -> float:
        self._samples.append(host_arrival - device_time)
        if len(self._samples) > self.window:
            del self._samples[0]
        return device_time + min(self._samples)


def host_now() -> float:
    """The host clock ROS stamps with (system time, like the node's default clock)."""
    return time.time()
