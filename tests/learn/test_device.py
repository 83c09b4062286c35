"""Where the learner and behaviour cloning compute (learn/device.py), and ``robot-rl bench learner``.

CI has no GPU, so these tests check the rules that pick a device, the errors for a GPU that is not
there (``cuda:64``: no machine has it, with or without GPUs), and that everything runs through the
device-aware code on the device ``auto`` picks. The CUDA path itself is not run in CI: ``robot-rl
bench learner --devices cpu,cuda`` checks it on a GPU machine (README, "What is verified where")."""

import json
import subprocess
import sys

import pytest
import torch

from robot_rl.learn.device import model_device, process_group_backend, resolve_device, to_device
from robot_rl.learn.learner import Learner, LearnerConfig


def test_auto_takes_the_gpu_when_there_is_one_and_each_torchrun_rank_its_own():
    assert resolve_device("auto", cuda_available=False) == torch.device("cpu")
    assert resolve_device("auto", cuda_available=True, cuda_count=2, local_rank=0) == torch.device("cuda", 0)
    assert resolve_device("auto", cuda_available=True, cuda_count=2, local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda", cuda_available=True, cuda_count=4, local_rank=3) == torch.device("cuda", 3)
    assert resolve_device("CUDA:1", cuda_available=True, cuda_count=2, local_rank=0) == torch.device("cuda", 1)
    assert resolve_device(" cpu ", cuda_available=True, cuda_count=2) == torch.device("cpu")
    assert process_group_backend(torch.device("cuda", 0)) == "nccl"
    assert process_group_backend(torch.device("cpu")) == "gloo"


@pytest.mark.parametrize("spec, available, count, rank, message", [
    ("cuda", False, 0, 0, "learner device 'cuda': PyTorch sees no CUDA GPU on this machine"),
    ("cuda:0", False, 0, 0, "no CUDA GPU"),
    ("cuda:2", True, 2, 0, "GPU 2 asked for .*this machine has 2"),
    ("cuda", True, 1, 1, "GPU 1 asked for \\(local rank 1\\).*--nproc-per-node"),
    ("cuda:x", True, 1, 0, "expected 'cuda:N'"),
    ("tpu", True, 1, 0, "learner device 'tpu': expected auto, cpu, cuda or cuda:N"),
])
def test_a_device_that_is_not_there_is_an_error_that_names_the_setting(spec, available, count, rank, message):
    with pytest.raises(ValueError, match=message):
        resolve_device(spec, cuda_available=available, cuda_count=count, local_rank=rank, what="learner device")


def test_to_device_moves_nested_batches_and_leaves_the_rest():
    images = {"front": torch.zeros(2, 3), "wrist": torch.ones(2, 3)}
    batch = (images, torch.arange(3), None, [torch.zeros(1)], "text")
    moved = to_device(batch, torch.device("cpu"))
    assert isinstance(moved, tuple) and moved[2] is None and moved[4] == "text"
    assert moved[0]["front"] is images["front"] and isinstance(moved[3], list)  # already there: not copied
    assert model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(torch.nn.Identity()) == torch.device("cpu")


MISSING_GPU = "cuda:64"  # refused on every machine: no GPU at all, or fewer than 65


def test_the_learner_computes_where_auto_says_and_refuses_a_missing_gpu(tmp_path, tiny_export, tiny_critic):
    base = {"run_dir": str(tmp_path / "run"), "policy": str(tiny_export), "critic": str(tiny_critic), "tensorboard": False}
    learner = Learner(LearnerConfig.from_dict(base), log_fn=lambda *_: None)
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert learner.device == expected and model_device(learner.model) == expected
    learner.close()
    with pytest.raises(ValueError, match="learner device 'cuda:64': (PyTorch sees no CUDA GPU|GPU 64 asked for)"):
        Learner(LearnerConfig.from_dict({**base, "run_dir": str(tmp_path / "run2"), "device": MISSING_GPU}))
    with pytest.raises(ValueError, match="unknown learner config fields \\['devices'\\]"):  # a misspelt setting is named
        LearnerConfig.from_dict({**base, "devices": "cpu"})


def test_cli_commands_refuse_a_missing_gpu_with_exit_2(tmp_path, tiny_export):
    runs = [
        [sys.executable, "-m", "robot_rl.cli", "train-bc", "--data", str(tmp_path), "--out", str(tmp_path / "x.pt"),
         "--device", MISSING_GPU],
        [sys.executable, "-m", "robot_rl.cli", "bench", "learner", "--devices", f"cpu,{MISSING_GPU}", "--json",
         str(tmp_path / "b.json")],
    ]
    for argv in runs:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert f"'{MISSING_GPU}':" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "b.json").exists()  # refused before any work


def test_bench_learner_quick_times_updates_on_the_cpu_and_writes_json(tmp_path):
    out, saved = tmp_path / "learner.json", tmp_path / "episodes"
    bench = [sys.executable, "-m", "robot_rl.cli", "bench", "learner", "--quick", "--devices", "cpu"]
    done = subprocess.run(bench + ["--json", str(out), "--save-episodes", str(saved)], capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    cpu = report["devices"]["cpu"]
    assert cpu["update_ms"]["n"] == 2 and cpu["update_ms"]["p50"] > 0 and cpu["prepare_ms"]["n"] == 2
    assert cpu["batch_decisions"] > 0 and cpu["demo_steps"] == 3 and cpu["speedup_vs_cpu"] == 1.0
    assert cpu["weights_vs_cpu"]["max_abs"] == 0.0  # the CPU against itself
    assert report["steps"] > 0 and report["machine"]["torch"] == torch.__version__
    # the same batch read back (as a machine without MuJoCo would) learns the same update
    again = subprocess.run(bench + ["--json", str(tmp_path / "again.json"), "--episodes-dir", str(saved), "--repeats", "1"],
                           capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-2000:]
    replayed = json.loads((tmp_path / "again.json").read_text())
    assert replayed["steps"] == report["steps"] and replayed["devices"]["cpu"]["batch_decisions"] == cpu["batch_decisions"]
    (tmp_path / "empty").mkdir()
    short = subprocess.run(bench + ["--json", str(tmp_path / "x.json"), "--episodes-dir", str(tmp_path / "empty")],
                           capture_output=True, text=True, timeout=240)
    assert short.returncode == 2 and "0 episodes, the benchmark needs 2" in short.stderr
