"""A camera kept streaming: a capture thread that reads frames and recovers from timeouts and unplugs.

The loop: connect (retrying with a growing back-off while the device is absent), read frames and hand
each to ``on_frame``; a read that times out counts as a stall, and ``reconnect_after`` stalls in a row
close the device and open it again (a USB camera that stopped delivering rarely recovers without
being reopened). A device that disappears goes straight to reconnecting. :meth:`CameraStream.stats`
gives what diagnostics publish: state, measured rate, frames, drops (device frame-number gaps plus
stalls), reconnects and the last error.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable

from robot_rl.cameras.base import Camera, CameraError, CameraFrame, CameraTimeout


@dataclass
class StreamStats:
    state: str  # "connecting", "streaming", "stalled", "reconnecting", "stopped"
    rate_hz: float  # measured over the last frames
    frames: int
    dropped: int  # frames the device numbered but we never got, plus stalled reads
    stalls: int
    reconnects: int
    last_error: str
    last_frame_age_s: float

    def as_dict(self) -> dict:
        return asdict(self)


class CameraStream:
    def __init__(self, camera: Camera, on_frame: Callable[[CameraFrame], None], reconnect_after: int = 2,
                 backoff_s: tuple[float, float] = (0.1, 2.0), log: Callable[[str], None] = print):
        self.camera = camera
        self.on_frame = on_frame
        self.reconnect_after = reconnect_after
        self.backoff_s = backoff_s
        self.log = log
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._arrivals: collections.deque[float] = collections.deque(maxlen=30)
        self.state = "stopped"
        self.frames = self.dropped = self.stalls = self.reconnects = 0
        self.last_error = ""
        self._last_number: int | None = None
        self._last_arrival = float("nan")

    def start(self) -> "CameraStream":
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.camera.config.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.camera.disconnect()
        self.state = "stopped"

    # -- the loop ------------------------------------------------------------------------------------
    def _set(self, state: str, error: str = "") -> None:
        with self._lock:
            if state != self.state and error:
                self.log(f"camera {self.camera.config.name}: {state}: {error}")
            self.state = state
            if error:
                self.last_error = error

    def _connect(self) -> bool:
        delay = self.backoff_s[0]
        while not self._stop.is_set():
            try:
                self.camera.connect()
                self._last_number = None
                return True
            except CameraError as exc:
                self._set("reconnecting" if self.frames else "connecting", str(exc))
                self._stop.wait(delay)
                delay = min(delay * 2.0, self.backoff_s[1])
        return False

    def _run(self) -> None:
        self._set("connecting")
        if not self._connect():
            return
        stalls_in_a_row = 0
        while not self._stop.is_set():
            try:
                frame = self.camera.read()
            except CameraTimeout as exc:
                stalls_in_a_row += 1
                with self._lock:
                    self.stalls += 1
                    self.dropped += 1
                self._set("stalled", str(exc))
                if stalls_in_a_row < self.reconnect_after:
                    continue
                error = f"{stalls_in_a_row} reads timed out in a row; reopening the device"
            except CameraError as exc:  # gone, or failing: reopen
                error = str(exc)
            else:
                stalls_in_a_row = 0
                self._count(frame)
                try:
                    self.on_frame(frame)
                except Exception as exc:  # noqa: BLE001 - a consumer bug must not end the capture thread
                    with self._lock:
                        self.last_error = f"frame handler failed: {exc!r}"
                    self.log(f"camera {self.camera.config.name}: frame handler failed: {exc!r}")
                continue
            stalls_in_a_row = 0
            self._set("reconnecting", error)
            self.camera.disconnect()
            if not self._connect():
                return
            with self._lock:
                self.reconnects += 1

    def _count(self, frame: CameraFrame) -> None:
        now = time.monotonic()
        with self._lock:
            if self._last_number is not None and frame.frame_number > self._last_number + 1:
                self.dropped += frame.frame_number - self._last_number - 1
            self._last_number = frame.frame_number
            self.frames += 1
            self._arrivals.append(now)
            self._last_arrival = now
            self.state = "streaming"

    def stats(self) -> StreamStats:
        with self._lock:
            arrivals = list(self._arrivals)
            rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 and arrivals[-1] > arrivals[0] else 0.0
            return StreamStats(self.state, rate, self.frames, self.dropped, self.stalls, self.reconnects,
                               self.last_error, time.monotonic() - self._last_arrival if self.frames else float("inf"))
