"""``robot-rl bench inference``: batch-1 latency of every backend, against PyTorch eager in the same run.

Two models: the shipped default (``policies/sim_default``, or the default config untrained when it is
not there) and a VLA-sized reference configuration (>= 100M parameters; random weights, which do not
change the cost). Each is exported (with the parity check) to a scratch directory and run on:

- ``torch_eager_fp32``: the baseline every speed-up is relative to;
- ``onnxruntime``: with the best installed execution provider;
- ``tensorrt``: where the tensorrt package and a GPU exist;
- on a CUDA machine also ``torch_eager_fp16``/``bf16`` and ``torch_cuda_graph_bf16`` (the forward
  pass captured once and replayed, which removes per-kernel launch cost at batch 1).

Inputs are real observations (frames rendered in the simulated world at the model's size).
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from robot_rl.stats import summarise

GOAL_ORT_CPU_SPEEDUP = 1.5
GOAL_GPU_SPEEDUP = 4.0


def reference_config(joint_names: list[str]) -> dict:
    """A VLA-shaped model of ~106M parameters: two 224x224 cameras, a 5-stage CNN, a 6x4096 trunk."""
    return {"cameras": ["front", "wrist"], "image_height": 224, "image_width": 224, "joint_names": joint_names,
            "chunk_length": 16, "cnn_channels": [64, 128, 256, 512, 512], "image_features": 512, "hidden": 4096,
            "trunk_layers": 6}


def _time(fn, iterations: int, warmup: int, sync=None) -> dict:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        samples.append((time.perf_counter() - t0) * 1e3)
    s = summarise(samples)
    return {"p50_ms": s["p50"], "p99_ms": s["p99"], "mean_ms": s["mean"], "n": s["n"]}


def _cuda_variants(model, sample: dict, iterations: int, warmup: int) -> dict:
    import torch

    results = {}
    cams = list(model.config.cameras)
    for name, dtype in (("torch_eager_fp16", torch.float16), ("torch_eager_bf16", torch.bfloat16)):
        m = model.to("cuda", dtype=dtype).eval()
        t = {k: torch.from_numpy(v).cuda() for k, v in sample.items()}
        t["joint_positions"], t["instruction"] = t["joint_positions"].to(dtype), t["instruction"].to(dtype)

        def run(m=m, t=t):
            with torch.inference_mode():
                m({c: t[f"image_{c}"] for c in cams}, t["joint_positions"], t["instruction"])

        results[name] = _time(run, iterations, warmup, torch.cuda.synchronize)
    # CUDA graph: capture the bf16 forward once, replay with inputs copied into static buffers
    m = model.to("cuda", dtype=torch.bfloat16).eval()
    static = {k: torch.from_numpy(v).cuda() for k, v in sample.items()}
    static["joint_positions"], static["instruction"] = static["joint_positions"].bfloat16(), static["instruction"].bfloat16()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(stream):
        for _ in range(3):
            m({c: static[f"image_{c}"] for c in cams}, static["joint_positions"], static["instruction"])
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        m({c: static[f"image_{c}"] for c in cams}, static["joint_positions"], static["instruction"])
    host = {k: torch.from_numpy(v).pin_memory() for k, v in sample.items()}

    def replay():
        for k, v in host.items():
            static[k].copy_(v, non_blocking=True)
        graph.replay()

    results["torch_cuda_graph_bf16"] = _time(replay, iterations, warmup, torch.cuda.synchronize)
    model.to("cpu", dtype=torch.float32)
    return results


def bench_model(label: str, model, embeddings: dict, iterations: int, warmup: int, echo=print) -> dict:
    import torch

    from robot_rl.inference.backends import TorchBackend, available_backends, make_backend
    from robot_rl.inference.export import export_model, observation_samples
    from robot_rl.policy.vla import parameter_count

    sample = observation_samples(model, None, count=1)
    text = next(iter(embeddings.values())) if embeddings else np.zeros(model.config.text_dim, np.float32)
    sample["instruction"] = np.asarray(text, np.float32)[None]
    entry = {"parameters": parameter_count(model), "image": [model.config.image_height, model.config.image_width],
             "cameras": len(model.config.cameras), "chunk_length": model.config.chunk_length, "backends": {}}
    echo(f"{label}: {entry['parameters'] / 1e6:.1f}M parameters, exporting ...")
    with tempfile.TemporaryDirectory(prefix="robot_rl_bench_") as scratch:
        metadata = export_model(model, scratch, embeddings)
        entry["parity_max_abs_diff_actions"] = metadata["parity"]["max_abs_diff"]["actions"]
        eager = TorchBackend(metadata, model, device="cuda" if torch.cuda.is_available() else "cpu")
        sync = torch.cuda.synchronize if eager.device == "cuda" else None
        entry["backends"]["torch_eager_fp32"] = {**_time(lambda: eager.run(sample), iterations, warmup, sync),
                                                 "device": eager.device}
        for name in available_backends():
            if name == "torch":
                continue
            try:
                backend = make_backend(name, scratch)
            except (ValueError, RuntimeError, OSError) as exc:
                entry["backends"][name] = {"error": str(exc)}
                continue
            entry["backends"][name] = {**_time(lambda b=backend: b.run(sample), iterations, warmup), "device": backend.device}
        if torch.cuda.is_available():
            entry["backends"].update(_cuda_variants(model, sample, iterations, warmup))
            model.to("cpu")
    base = entry["backends"]["torch_eager_fp32"]["p50_ms"]
    for name, r in entry["backends"].items():
        if "p50_ms" in r:
            r["speedup_vs_torch_eager_fp32"] = round(base / r["p50_ms"], 3)
            echo(f"  {name:24} p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms  x{r['speedup_vs_torch_eager_fp32']:.2f}")
        else:
            echo(f"  {name:24} unavailable: {r['error']}")
    return entry


def bench_inference(json_path: str, policy_dir: str | None = None, quick: bool = False, threads: int = 0,
                    echo=print) -> dict:
    import torch

    from robot_rl.policy.vla import VLAConfig, VLAModel

    if threads:
        torch.set_num_threads(threads)
    report = {"benchmark": "inference", "batch": 1, "quick": quick, "models": {},
              "machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                          "cpu_threads": torch.get_num_threads()}}
    from robot_rl.paths import data_path

    policy_dir = policy_dir or str(data_path("policies", "sim_default"))
    if Path(policy_dir, "weights.safetensors").is_file():
        from robot_rl.inference.backends import TorchBackend

        backend = TorchBackend.from_export(policy_dir)
        default, embeddings = backend.model.cpu(), backend.metadata.get("instruction_embeddings", {})
        source = policy_dir
    else:
        from robot_rl.sim.tabletop import JOINT_NAMES

        default, embeddings, source = VLAModel(VLAConfig(joint_names=list(JOINT_NAMES))), {}, "default config, untrained"
    embeddings = {k: np.asarray(v, np.float32) for k, v in embeddings.items()}
    iterations, warmup = (20, 3) if quick else (200, 20)
    report["models"]["default"] = {"source": source, **bench_model("default policy", default, embeddings, iterations, warmup, echo)}
    if not quick:
        torch.manual_seed(0)
        reference = VLAModel(VLAConfig(**reference_config(list(default.config.joint_names))))
        report["models"]["reference"] = {"source": "VLA-sized reference config, random weights",
                                         **bench_model("reference", reference, embeddings, 50, 5, echo)}
    d = report["models"]["default"]["backends"]
    ort = d.get("onnxruntime", {})
    report["goals"] = {"onnxruntime_cpu_speedup_default": {
        "goal": GOAL_ORT_CPU_SPEEDUP, "measured": ort.get("speedup_vs_torch_eager_fp32"),
        "met": bool(ort.get("device") == "CPUExecutionProvider" and ort.get("speedup_vs_torch_eager_fp32", 0) >= GOAL_ORT_CPU_SPEEDUP)}}
    if torch.cuda.is_available() and "reference" in report["models"]:
        r = report["models"]["reference"]["backends"]
        best = max((v.get("speedup_vs_torch_eager_fp32", 0), k) for k, v in r.items())
        report["goals"]["gpu_accelerated_speedup_reference"] = {"goal": GOAL_GPU_SPEEDUP, "best": best[1], "measured": best[0],
                                                                "met": best[0] >= GOAL_GPU_SPEEDUP}
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps(report, indent=2))
    echo(f"-> {json_path}")
    return report
