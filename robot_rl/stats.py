"""Rolling statistics for status topics and benchmarks (percentiles over a bounded window)."""

from __future__ import annotations

from collections import deque

import numpy as np


class Window:
    """The last ``size`` samples of a quantity, with percentiles on demand."""

    def __init__(self, size: int = 300):
        self.samples: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self.samples.append(float(value))

    def __len__(self) -> int:
        return len(self.samples)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples, q)) if self.samples else float("nan")

    def summary(self) -> dict[str, float]:
        return summarise(list(self.samples))


def summarise(values) -> dict[str, float]:
    a = np.asarray(list(values), dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "mean": float("nan"), "max": float("nan")}
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean()), "max": float(a.max())}
