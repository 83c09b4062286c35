"""SCHED_FIFO for the command path: checked on real processes (a helper script, and safety_node)."""

import os
import resource
import subprocess
import sys
import textwrap
import time

import pytest

from robot_rl.ros.realtime import MAX_PRIORITY, apply_realtime_priority, check_priority
from tests.helpers import may_use_sched_fifo

# Starts a thread, applies the priority, starts another thread, then prints each thread's policy.
PROBE = textwrap.dedent("""
    import os, sys, threading
    from robot_rl.ros.realtime import apply_realtime_priority, process_thread_ids
    gate = threading.Event()
    early = threading.Thread(target=gate.wait, daemon=True); early.start()
    said = []
    ok = apply_realtime_priority(int(sys.argv[1]), info=said.append, warn=said.append)
    late_policy = []
    late = threading.Thread(target=lambda: late_policy.append(os.sched_getscheduler(0))); late.start(); late.join()
    policies = set()
    for tid in process_thread_ids():
        try:
            policies.add(os.sched_getscheduler(tid))
        except ProcessLookupError:  # the late thread, joined but not yet reaped by the kernel
            pass
    gate.set(); early.join()
    print(ok, sorted(policies), late_policy, "|".join(said), sep="\t")
""")


def _probe(priority: int, prefix=(), preexec=None) -> list[str]:
    proc = subprocess.run([*prefix, sys.executable, "-c", PROBE, str(priority)], capture_output=True, text=True,
                          timeout=60, preexec_fn=preexec)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.rstrip("\n").split("\t")


@pytest.mark.parametrize("bad", [-1, MAX_PRIORITY + 1, 2.5, True, "50"])
def test_a_bad_priority_is_refused_with_the_parameter_named(bad):
    with pytest.raises(ValueError, match=r"realtime_priority' = .*expected an integer 0 \(off\) .. 98"):
        check_priority(bad)


def test_priority_zero_changes_nothing():
    before = os.sched_getscheduler(0)
    assert apply_realtime_priority(0) is False and os.sched_getscheduler(0) == before
    ok, policies, late, _ = _probe(0)
    assert ok == "False" and policies == f"[{os.SCHED_OTHER}]" and late == f"[{os.SCHED_OTHER}]"


@pytest.mark.skipif(not may_use_sched_fifo(20), reason="this user may not use SCHED_FIFO (no CAP_SYS_NICE, rtprio limit < 20)")
def test_every_thread_and_every_later_thread_runs_fifo():
    ok, policies, late, said = _probe(20)
    assert ok == "True" and policies == f"[{os.SCHED_FIFO}]" and late == f"[{os.SCHED_FIFO}]"
    assert "SCHED_FIFO priority 20 for the 2 thread(s)" in said


def test_without_permission_the_process_says_so_and_stays_at_normal_priority():
    # What a robot computer without an rtprio grant gives a user: a limit of 0 and, for root, no
    # CAP_SYS_NICE (setpriv drops it from the bounding set, so the probe never has it).
    prefix = ("setpriv", "--bounding-set", "-sys_nice", "--") if os.geteuid() == 0 and may_use_sched_fifo(20) else ()
    ok, policies, late, said = _probe(20, prefix, preexec=lambda: resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0)))
    assert ok == "False" and policies == f"[{os.SCHED_OTHER}]" and late == f"[{os.SCHED_OTHER}]"
    assert "SCHED_FIFO refused" in said and "rtprio" in said


@pytest.mark.skipif(not may_use_sched_fifo(30), reason="this user may not use SCHED_FIFO (no CAP_SYS_NICE, rtprio limit < 30)")
def test_safety_node_with_a_realtime_priority_runs_every_thread_fifo(tmp_path):
    env = dict(os.environ, ROS_DOMAIN_ID=str(40 + os.getpid() % 50))
    log = open(tmp_path / "safety.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "robot_rl.nodes.safety_node", "--ros-args", "-p",
                             "realtime_priority:=30"], stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while "SCHED_FIFO priority 30" not in (tmp_path / "safety.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "safety.log").read_text()
            time.sleep(0.2)
        tids = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task")]
        assert len(tids) > 2  # the middleware's threads, not only the main thread
        assert {os.sched_getscheduler(t) for t in tids} == {os.SCHED_FIFO}
        assert {os.sched_getparam(t).sched_priority for t in tids} == {30}
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        log.close()
