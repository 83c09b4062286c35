"""An inference backend for weights the learner published (a safetensors state dict + model config).

``torch``: the model with the new state dict. ``onnxruntime`` / ``auto``: the model is exported to
ONNX in a private directory (about a second for the shipped policy, off the control thread) and a
new session opened on it; with ``tensorrt`` the engine is built from that ONNX file (minutes on a
Jetson: weights then arrive less often than they are published, never half-loaded). The caller swaps
the returned backend in.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from robot_rl.inference.backends import InferenceBackend, OnnxRuntimeBackend, TorchBackend


def model_from_weights(model_config: dict, safetensors_bytes: bytes):
    from safetensors import SafetensorError
    from safetensors.torch import load

    from robot_rl.policy.vla import VLAConfig, VLAModel

    model = VLAModel(VLAConfig.from_dict(model_config))
    try:
        state = load(safetensors_bytes)
    except SafetensorError as exc:
        raise ValueError(f"weights are not a valid safetensors file: {exc}") from exc
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # names or shapes differ
        raise ValueError(f"weights do not fit the model: {str(exc).splitlines()[0]}") from exc
    return model.eval()


def backend_from_weights(kind: str, metadata: dict, model_config: dict, safetensors_bytes: bytes, version: int,
                         workdir: str | None = None) -> InferenceBackend:
    model = model_from_weights(model_config, safetensors_bytes)
    meta = {**metadata, "model_version": f"{metadata.get('model_version', 'export')}+learner-v{version}"}
    if kind == "torch":
        return TorchBackend(meta, model)
    if workdir is None:  # the session holds the graph in memory once built: the files can go
        with tempfile.TemporaryDirectory(prefix="robot_rl_weights_") as tmp:
            return _onnx_backend(kind, meta, model, Path(tmp) / f"v{version}")
    return _onnx_backend(kind, meta, model, Path(workdir) / f"v{version}")


def _onnx_backend(kind: str, meta: dict, model, out: Path) -> InferenceBackend:
    from robot_rl.inference.export import onnx_export

    c = model.config
    out.mkdir(parents=True, exist_ok=True)
    example = {f"image_{cam}": np.zeros((1, c.image_height, c.image_width, 3), np.uint8) for cam in c.cameras}
    example["joint_positions"] = np.zeros((1, len(c.joint_names)), np.float32)
    example["instruction"] = np.zeros((1, c.text_dim), np.float32)
    onnx_export(model, out / meta.get("onnx_file", "policy.onnx"), example)
    (out / "metadata.json").write_text(json.dumps(meta))
    if kind == "tensorrt" or (kind == "auto" and _has_tensorrt()):
        from robot_rl.inference.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(out, meta)
    return OnnxRuntimeBackend(out, meta)


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True
