"""Real-time scheduling for the processes on the command path (opt-in, ``realtime_priority``).

On a machine whose few cores the pipeline shares with a renderer or camera driver, a recorder and a
learner's actor, what the image -> command latency loses at p99 is mostly waiting: a DDS receive
thread or an executor thread is runnable but a busy normal-priority process holds the core
(docs/design-notes.md, issue 2). Under ``SCHED_FIFO`` those threads preempt every normal thread the
moment they wake. ros2_control's controller manager runs its control loop the same way
(``thread_priority``, 50 by default).

:func:`apply_realtime_priority` moves every thread of the calling process to ``SCHED_FIFO`` at the
given priority. Call it once the node has created its publishers and subscriptions, so the
middleware's receive threads exist; threads started later (executor threads) inherit the policy
from the thread that starts them. ``priority`` 0 leaves the process as it is.

It needs permission: root, ``CAP_SYS_NICE``, or an ``rtprio`` limit (``/etc/security/limits.conf``:
``@realtime - rtprio 98`` and the user in group ``realtime``). Without it the node says so once and
runs at normal priority: a missing permission never stops a robot. The kernel's RT throttling
(``/proc/sys/kernel/sched_rt_runtime_us``, 95% by default) keeps a runaway FIFO thread from locking a
machine up, but a CPU-heavy policy at FIFO priority does starve normal processes on its cores: keep
this for processes whose callbacks are short (the safety node; a policy whose inference runs on a GPU
or takes a millisecond or two).
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_PRIORITY = 98  # 99 is left to the kernel's own threads (watchdogs, migration)


def process_thread_ids() -> list[int]:
    """The kernel thread ids of every thread of this process."""
    return sorted(int(tid) for tid in os.listdir("/proc/self/task"))


def check_priority(priority, who: str = "parameter 'realtime_priority'") -> int:
    """``priority`` if it is an integer 0 (off) .. MAX_PRIORITY, else a ValueError naming ``who``."""
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(f"{who} = {priority!r}: expected an integer 0 (off) .. {MAX_PRIORITY} (SCHED_FIFO priority)")
    return priority


def apply_realtime_priority(priority: int, info=None, warn=None) -> bool:
    """Put every thread of this process under SCHED_FIFO at ``priority`` (1..98); 0 does nothing.

    Returns True when every thread was moved (said through ``info(message)``). Bad values raise
    ``ValueError``; a refusal by the kernel (no permission, not Linux) is said through
    ``warn(message)``, leaves every thread at normal priority and returns False.
    """
    if check_priority(priority) == 0:
        return False
    if not hasattr(os, "sched_setscheduler") or not Path("/proc/self/task").is_dir():
        _say(warn, f"realtime_priority {priority}: SCHED_FIFO is not available on this system; running at normal priority")
        return False
    param = os.sched_param(priority)
    moved, failed = 0, []
    for tid in process_thread_ids():
        try:
            os.sched_setscheduler(tid, os.SCHED_FIFO, param)
            moved += 1
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        except PermissionError as exc:
            failed.append(exc.strerror)
    if failed:
        _say(warn, f"realtime_priority {priority}: SCHED_FIFO refused for {len(failed)} thread(s) ({failed[0]}): needs root, "
                  "CAP_SYS_NICE or an rtprio limit (limits.conf); running at normal priority")
        if moved:  # do not leave the process half real-time
            for tid in process_thread_ids():
                try:
                    os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
                except OSError:
                    pass
        return False
    _say(info, f"SCHED_FIFO priority {priority} for the {moved} thread(s) of this process")
    return True


def current_fifo_priority() -> int:
    """The calling thread's SCHED_FIFO priority, 0 when it runs under another policy (the status
    topics report it, so a refused ``realtime_priority`` is visible from outside)."""
    if not hasattr(os, "sched_getscheduler") or os.sched_getscheduler(0) != os.SCHED_FIFO:
        return 0
    return os.sched_getparam(0).sched_priority


def _say(log, message: str) -> None:
    if log is not None:
        log(message)
