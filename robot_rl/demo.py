"""``robot-rl demo``: the simulated robot controlled through the full ROS graph.

Brings up ``launch/sim_launch.yaml`` (sim bridge, policy, safety: one process each), runs episodes
cycling through the tasks, prints each outcome, the success rate and a latency table, then stops
every process. The measurements come from the client side of the real topics.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from robot_rl.graph import CommandRecord, SimGraph
from robot_rl.sim.tasks import TASKS, get_task
from robot_rl.stats import summarise


def latency_stats(commands: list[CommandRecord], period: float) -> dict:
    """Image-stamp-to-command latency of fresh policy commands, and jitter of the command stream."""
    fresh, seen = [], set()
    for c in commands:
        if c.source == "policy" and c.stamp not in seen:
            seen.add(c.stamp)
            fresh.append((c.received - c.stamp) * 1e3)
    received = [c.received for c in commands]
    intervals = [(b - a) * 1e3 for a, b in zip(received, received[1:])]
    jitter = [abs(i - period * 1e3) for i in intervals]
    return {"latency_ms": summarise(fresh), "period_ms": summarise(intervals), "period_jitter_ms": summarise(jitter)}


def run_demo(episodes: int = 8, policy: str = "oracle", rate_hz: float = 10.0, log_path: str | None = None,
             seed: int = 0, echo=print) -> dict:
    log_path = log_path or str(Path(tempfile.gettempdir()) / "robot_rl_demo.log")
    results = []
    with open(log_path, "w") as log:
        echo(f"starting the sim graph (sim_bridge, policy '{policy}', safety); node logs: {log_path}")
        overrides = {"policy": policy, "control_rate_hz": str(rate_hz), "seed": str(seed)}
        with SimGraph(overrides, out=log) as graph:
            client = graph.client
            client.wait_ready(timeout=90)
            for i in range(episodes):
                summary = client.reset()
                task = get_task(summary.split("task=")[1])
                start = time.monotonic()
                limit = task.max_duration_s + 2.0
                while time.monotonic() - start < limit and not client.rec.success:
                    graph.check_alive()
                    time.sleep(0.05)
                ok = client.rec.success
                took = (client.rec.success_at if ok else time.monotonic()) - start
                results.append({"task": task.name, "success": ok, "seconds": round(took, 2), "episode": summary})
                echo(f"episode {i + 1}/{episodes}: {task.instruction!r:40} {'SUCCESS' if ok else 'failure'} in {took:4.1f} s ({summary})")
            with client.lock:
                commands = list(client.rec.commands)
                status = dict(client.rec.status)
        alive = graph.runner.alive()
    stats = latency_stats(commands, 1.0 / rate_hz)
    policy_status = status.get("/policy/status", {})
    report = {
        "episodes": results,
        "success_rate": sum(r["success"] for r in results) / max(1, len(results)),
        "per_task": {t: _rate([r for r in results if r["task"] == t]) for t in TASKS},
        **stats,
        "inference_ms": {"p50": _float(policy_status.get("inference_ms_p50")), "p99": _float(policy_status.get("inference_ms_p99"))},
        "processes_left": alive,
    }
    echo("")
    echo(f"success rate: {report['success_rate'] * 100:.0f}% over {len(results)} episodes")
    for t, r in report["per_task"].items():
        if r is not None:
            echo(f"  {t:18} {r * 100:5.0f}%")
    echo("")
    echo(f"{'latency (ms)':34} {'p50':>8} {'p99':>8}")
    echo(f"{'image stamp -> safety command':34} {stats['latency_ms']['p50']:8.2f} {stats['latency_ms']['p99']:8.2f}")
    echo(f"{'policy inference':34} {report['inference_ms']['p50']:8.2f} {report['inference_ms']['p99']:8.2f}")
    echo(f"{'command period jitter':34} {stats['period_jitter_ms']['p50']:8.2f} {stats['period_jitter_ms']['p99']:8.2f}")
    echo("all graph processes stopped" if not alive else f"processes still running: {alive}")
    return report


def _rate(rows: list[dict]) -> float | None:
    return sum(r["success"] for r in rows) / len(rows) if rows else None


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


if __name__ == "__main__":
    sys.exit(0 if run_demo()["success_rate"] > 0 else 1)
