"""OpenCV cameras: V4L2 devices (``/dev/video0`` or an index), GStreamer pipelines, network streams.

``pip install .[opencv]`` (opencv-python-headless). Frames come out of OpenCV as BGR and leave as
RGB at the configured size. OpenCV gives no exposure time for most backends, so frames are stamped
on arrival (``stamp_source = "arrival"``), which is later than the exposure by the driver's latency:
prefer the RealSense driver (device clock) where the age of an observation matters to a few ms.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from robot_rl.cameras.base import Camera, CameraConfig, CameraDisconnected, CameraError, CameraFrame, CameraTimeout


def import_cv2():
    try:
        import cv2
    except ImportError as exc:
        raise CameraError(f"OpenCV cameras need OpenCV: pip install 'robot_rl[opencv]' ({exc})") from exc
    return cv2


@dataclass
class OpenCVConfig(CameraConfig):
    type: ClassVar[str] = "opencv"
    device: str = "0"  # an index ("0"), a device path ("/dev/video2"), a GStreamer pipeline or a URL
    fourcc: str = ""  # e.g. "MJPG": many USB cameras reach 30 fps at 640x480 only compressed


class OpenCVCamera(Camera):
    def __init__(self, config: OpenCVConfig):
        super().__init__(config)
        self.config: OpenCVConfig = config
        self.cv2 = import_cv2()
        self._capture = None
        self._frame_number = 0
        self.resized = False  # the device delivered another size than configured; frames are resized

    @property
    def label(self) -> str:
        return f"OpenCV camera {self.config.device!r} ({self.config.name})"

    def connect(self) -> None:
        cv2, cfg = self.cv2, self.config
        self.disconnect()
        source = int(cfg.device) if cfg.device.isdigit() else cfg.device
        capture = cv2.VideoCapture(source)
        if not capture.isOpened():
            capture.release()
            raise CameraDisconnected(f"{self.label}: cannot open (not connected, busy, or no permission on the device)")
        if cfg.fourcc:
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*cfg.fourcc))
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
        capture.set(cv2.CAP_PROP_FPS, cfg.fps)
        if hasattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC"):  # bounded reads where the backend supports it
            capture.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, cfg.timeout_s * 1000.0)
        self._capture = capture

    def disconnect(self) -> None:
        if self._capture is not None:
            self._capture.release()
        self._capture = None

    @property
    def is_connected(self) -> bool:
        return self._capture is not None

    def read(self, timeout_s: float | None = None) -> CameraFrame:
        if self._capture is None:
            raise CameraDisconnected(f"{self.label}: not connected")
        start = time.monotonic()
        ok, bgr = self._capture.read()
        if not ok or bgr is None:
            waited = time.monotonic() - start
            raise CameraTimeout(f"{self.label}: no frame (read failed after {waited:.2f} s)")
        return CameraFrame(to_rgb(self.cv2, bgr, self.config.width, self.config.height, self), time.time(),
                           self._next_number(), None)

    def _next_number(self) -> int:
        self._frame_number += 1
        return self._frame_number - 1


def to_rgb(cv2, bgr: np.ndarray, width: int, height: int, owner=None) -> np.ndarray:
    """BGR (or grey) from OpenCV as (height, width, 3) RGB uint8, resized when the size differs."""
    if bgr.ndim == 2:
        bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
    if bgr.shape[:2] != (height, width):
        bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
        if owner is not None:
            owner.resized = True
    return np.ascontiguousarray(bgr[:, :, ::-1])
