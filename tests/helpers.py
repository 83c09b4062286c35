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


def may_use_sched_fifo(priority: int) -> bool:
    """Whether this user may put a thread under SCHED_FIFO at ``priority`` (root with CAP_SYS_NICE, or
    an rtprio limit), tried in a child process so this one stays as it is."""
    import subprocess
    import sys

    probe = f"import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param({priority}))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30).returncode == 0
