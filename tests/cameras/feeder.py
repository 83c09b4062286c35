"""A camera's own clock for librealsense's software device: frames made on a fixed-rate grid.

A real camera exposes frames a period apart and stamps them with the exposure time, whatever the
host is doing; librealsense's syncer relies on it: it pairs colour with depth by timestamp and
expects each stream's next frame one period after the last. Stamping with the time of the push
instead, a loaded host's late, bunched pushes become irregular timestamps, the syncer stops pairing
and hands out lone streams (measured: 50 lone sets in 4 s with gaps of 2-90 ms, 2 with a grid), so
this feeder keeps the grid: late frames are pushed at once with their scheduled stamps, and a feeder
more than 0.1 s behind skips whole frames, as a camera drops them.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np

from robot_rl.cameras.realsense import SoftwareRealSense


class Feeder:
    """Pushes ``frame(k) -> (colour, depth)`` into a software device at ``rate`` while ``running`` is set.

    ``global_time``: colour and depth stamped on the host clock, as a D400 sends by default.
    ``hardware_clock``: colour only, on a device clock that starts at 5000 s (the driver maps it to the
    host clock). ``pushed``: (k, host time the frame was made) of every frame pushed.
    """

    def __init__(self, device: SoftwareRealSense, frame: Callable[[int], tuple[np.ndarray, np.ndarray]],
                 rate: float = 30.0, domain: str = "global_time", running: bool = True):
        self.device, self.frame, self.period, self.domain = device, frame, 1.0 / rate, domain
        self.pushed: list[tuple[int, float]] = []
        self.running = threading.Event()  # cleared: the camera sends nothing (unplugged, or covered)
        if running:
            self.running.set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.offset = 5000.0 - time.time() if domain == "hardware_clock" else 0.0

    def run(self) -> None:
        k, mono0, wall0 = 0, time.monotonic(), time.time()
        tick = mono0
        while not self.stop.is_set():
            if self.running.is_set():
                color, depth = self.frame(k)
                made = wall0 + (tick - mono0)
                self.device.push(color, None if self.domain == "hardware_clock" else depth, made + self.offset,
                                 self.domain)
                self.pushed.append((k, made))
                k += 1
            tick += self.period
            while tick < time.monotonic() - 0.1:
                tick += self.period
            time.sleep(max(0.0, tick - time.monotonic()))

    def start(self) -> "Feeder":
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join()

    def __enter__(self) -> "Feeder":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
