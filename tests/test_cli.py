"""The robot-rl commands as a user runs them (subprocesses, the real graph)."""

import json
import subprocess
import sys

import pytest

from tests.helpers import may_use_sched_fifo


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
    # both layouts measured in the one run; the top level is the composed one's
    assert set(report["layouts"]) == {"processes", "composed"} and report["layout"] == "composed"
    assert all(r["latency_ms"]["n"] > 50 for r in report["layouts"].values())
    assert report["composed_vs_processes"]["latency_p99_ratio"] > 0


@pytest.mark.skipif(not may_use_sched_fifo(20), reason="this user may not use SCHED_FIFO (no CAP_SYS_NICE, rtprio limit < 20)")
def test_bench_loop_quick_measures_a_layout_again_under_sched_fifo(tmp_path):
    out = tmp_path / "loop.json"
    proc = run("bench", "loop", "--quick", "--layout", "composed", "--realtime-priority", "20", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert set(report["layouts"]) == {"composed", "composed_fifo"}
    assert [report["layouts"][k]["realtime_priority"] for k in ("composed", "composed_fifo")] == [0, 20]
    assert [report["layouts"][k]["driver_realtime_priority"] for k in ("composed", "composed_fifo")] == [0, 10]
    assert all(r["latency_ms"]["n"] > 50 for r in report["layouts"].values())
    assert report["fifo_vs_normal"]["composed"]["latency_p99_ratio"] > 0


def test_export_with_evaluation_and_evaluate_command(tiny_checkpoint, tmp_path):
    out = tmp_path / "policy"
    proc = run("export", "--checkpoint", str(tiny_checkpoint[0]), "--out", str(out), "--evaluate", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metadata = json.loads((out / "metadata.json").read_text())
    assert set(metadata["evaluation"]["per_task"]) == {"reach_cube", "press_button", "push_cube_to_pad", "pick_cube"}
    assert metadata["evaluation"]["seeds"] == [10000, 10000]
    result = tmp_path / "eval.json"
    proc = run("evaluate", "--policy", str(out), "--episodes", "1", "--backend", "onnxruntime", "--json", str(result))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(result.read_text())["per_task"] == metadata["evaluation"]["per_task"]  # same seeds, same policy


def test_evaluate_with_the_learning_benchmarks_protocol(tiny_export, tmp_path):
    from robot_rl.learn.benchmark import evaluate_weights
    from robot_rl.policy.base import PolicyConfig, make_policy

    result = tmp_path / "eval.json"
    proc = run("evaluate", "--policy", str(tiny_export), "--episodes", "2", "--execute-steps", "4", "--backend", "torch",
               "--json", str(result))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(result.read_text())
    assert report["execute_steps"] == 4 and report["seeds"] == [10000, 10001]
    assert report["threads"] == 1  # bench learning's evaluator runs on one thread: the default reproduces it
    policy = make_policy(PolicyConfig(type="vla", options={"path": str(tiny_export), "backend": "torch"}))
    expected = evaluate_weights(policy, list(report["per_task"]), 2, 4)  # what bench learning's evaluator measures
    assert report["per_task"] == expected["per_task"] and report["mean"] == expected["mean"]


def test_bench_inference_quick_writes_json(tiny_export, tmp_path):
    out = tmp_path / "inference.json"
    proc = run("bench", "inference", "--quick", "--policy-dir", str(tiny_export), "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    backends = report["models"]["default"]["backends"]
    assert backends["torch_eager_fp32"]["speedup_vs_torch_eager_fp32"] == 1.0
    assert backends["onnxruntime"]["n"] == 20 and backends["onnxruntime"]["p50_ms"] > 0
    assert report["goals"]["onnxruntime_cpu_speedup_default"]["measured"] == backends["onnxruntime"]["speedup_vs_torch_eager_fp32"]


def test_convert_to_lerobot_without_a_lerobot_environment_says_how_to_make_one(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "ROBOT_RL_LEROBOT_PYTHON": str(tmp_path / "no-such-python")}
    done = subprocess.run([sys.executable, "-m", "robot_rl.cli", "convert", "to-lerobot", str(tmp_path), "--out",
                           str(tmp_path / "ds")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "no lerobot environment" in done.stderr and "make lerobot-env" in done.stderr
    assert not (tmp_path / "ds").exists()


def test_bench_refit_refuses_a_missing_directory_naming_the_flag(tmp_path):
    (tmp_path / "demos").mkdir()
    proc = run("bench", "refit", "--demos", str(tmp_path / "demos"), "--episodes", str(tmp_path / "kept"),
               "--json", str(tmp_path / "refit.json"))
    assert proc.returncode == 2 and f"--episodes {tmp_path / 'kept'}: no such directory" in proc.stderr
    proc = run("bench", "refit", "--demos", str(tmp_path / "demos"), "--episodes", str(tmp_path / "demos"),
               "--steps", "100,50", "--json", str(tmp_path / "refit.json"))
    assert proc.returncode == 2 and "expected increasing positive step counts" in proc.stderr
    assert not (tmp_path / "refit.json").exists()


def test_train_bc_names_a_bad_arm_geometry_file_and_exits_2(tmp_path):
    bad = tmp_path / "arm.yaml"
    bad.write_text("shoulder: [0, 0, 0.1]\nupper_arm: 0.2\n")
    proc = run("train-bc", "--data", str(tmp_path), "--out", str(tmp_path / "bc.pt"), "--action-mode", "cartesian",
               "--arm-geometry", str(bad), timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"robot-rl train-bc: arm geometry {bad}: arm_geometry: expected fields" in proc.stderr
