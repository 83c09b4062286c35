"""Replay cameras: a video file or a recorded episode played back as if it were a live camera.

Frames are paced at ``fps`` (an episode's own ``control_rate_hz`` when ``fps`` is 0) and stamped
with the replay time, so a graph downstream sees a camera, not a file. ``loop`` starts again at the
end; without it the end of the recording reads as an unplugged camera (CameraDisconnected). This is
how a policy first meets real frames before it moves a real arm.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from robot_rl.cameras.base import Camera, CameraConfig, CameraDisconnected, CameraError, CameraFrame
from robot_rl.cameras.opencv import import_cv2, to_rgb


@dataclass
class ReplayConfig(CameraConfig):
    type: ClassVar[str] = "replay"
    path: str = ""  # a video file (anything OpenCV reads) or an episode directory (docs/episode-format.md)
    camera: str = ""  # which of the episode's cameras; "" takes the first
    loop: bool = True
    fps: float = 0.0  # 0: the episode's control rate, or the video's own rate


class ReplayCamera(Camera):
    def __init__(self, config: ReplayConfig):
        super().__init__(config)
        self.config: ReplayConfig = config
        self._frames: np.ndarray | None = None  # episode frames (T, H, W, 3)
        self._video = None
        self._index = 0
        self._period = 0.0
        self._next_due = 0.0

    @property
    def label(self) -> str:
        return f"replay {self.config.path!r} ({self.config.name})"

    def connect(self) -> None:
        cfg = self.config
        path = Path(cfg.path)
        if not cfg.path or not path.exists():
            raise CameraError(f"{self.label}: parameter 'path' must name a video file or an episode directory; "
                              f"{str(path)!r} does not exist")
        rate = cfg.fps
        if path.is_dir():
            from robot_rl.data.episodes import read_episode

            episode = read_episode(path)
            camera = cfg.camera or episode.meta.cameras[0]
            if camera not in episode.images:
                raise CameraError(f"{self.label}: field 'camera' = {camera!r}; the episode has {episode.meta.cameras}")
            self._frames = episode.images[camera]
            rate = rate or episode.meta.control_rate_hz
        else:
            cv2 = import_cv2()
            self._video = cv2.VideoCapture(str(path))
            if not self._video.isOpened():
                raise CameraError(f"{self.label}: OpenCV cannot decode this file")
            rate = rate or self._video.get(cv2.CAP_PROP_FPS) or 30.0
        self._period = 1.0 / rate
        self._index = 0
        self._next_due = time.monotonic()

    def disconnect(self) -> None:
        if self._video is not None:
            self._video.release()
        self._video = self._frames = None

    @property
    def is_connected(self) -> bool:
        return self._video is not None or self._frames is not None

    def _next_image(self) -> np.ndarray | None:
        cfg = self.config
        if self._frames is not None:
            if self._index >= len(self._frames):
                return None
            image = self._frames[self._index]
            if image.shape[:2] != (cfg.height, cfg.width):
                image = to_rgb(import_cv2(), np.ascontiguousarray(image[:, :, ::-1]), cfg.width, cfg.height)
            return np.ascontiguousarray(image)
        ok, bgr = self._video.read()
        return to_rgb(import_cv2(), bgr, cfg.width, cfg.height) if ok else None

    def read(self, timeout_s: float | None = None) -> CameraFrame:
        if not self.is_connected:
            raise CameraDisconnected(f"{self.label}: not connected")
        image = self._next_image()
        if image is None:
            if not self.config.loop:
                raise CameraDisconnected(f"{self.label}: end of the recording after {self._index} frames")
            if self._video is not None:
                self._video.set(import_cv2().CAP_PROP_POS_FRAMES, 0)
            self._index = 0
            image = self._next_image()
            if image is None:
                raise CameraError(f"{self.label}: the recording holds no frames")
        delay = self._next_due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next_due = max(self._next_due + self._period, time.monotonic() - self._period)
        self._index += 1
        return CameraFrame(image, time.time(), self._index - 1, None, stamp_source="arrival")
