"""The robot-rl commands as a user runs them (subprocesses, the real graph)."""

import json
import subprocess
import sys


def run(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "robot_rl.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_demo_runs_episodes_reports_and_leaves_no_process():
    proc = run("demo", "--episodes", "2", "--min-success", "0.5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "success rate:" in proc.stdout and "image stamp -> safety command" in proc.stdout
    assert "all graph processes stopped" in proc.stdout


def test_bench_loop_quick_writes_json(tmp_path):
    out = tmp_path / "loop.json"
    proc = run("bench", "loop", "--quick", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    for key in ("latency_ms", "inference_ms", "period_jitter_ms", "image", "rate_hz", "pipeline_overhead_ms_p99"):
        assert key in report
    assert report["image"] == [120, 160] and report["rate_hz"] == 30.0
    assert report["latency_ms"]["n"] > 50
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"] < 1000
