"""Small helpers shared by the test modules."""

import time


def wait_until(predicate, timeout: float, what: str) -> None:
    """Poll ``predicate`` every 20 ms; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
