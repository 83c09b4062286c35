"""Inference backends: one interface, the same inputs and outputs, different engines.

``run(inputs) -> outputs`` takes and returns numpy arrays keyed by the names of the export contract
(``docs/policy-export.md``): ``image_<camera>`` uint8 (B, H, W, 3), ``joint_positions`` float32 (B, J),
``instruction`` float32 (B, 384) in; ``actions`` (B, H, J), ``action_log_std``, ``value`` out.

- ``torch``: the PyTorch model rebuilt from the export's ``weights.safetensors`` (or a checkpoint);
  CUDA when available.
- ``onnxruntime``: ``policy.onnx`` with the best installed execution provider (TensorRT, CUDA, CPU).
- ``tensorrt``: an engine built from ``policy.onnx`` (FP16 where the GPU supports it), cached beside
  it under a name keyed by GPU and TensorRT version; see ``tensorrt_backend.py``.

``make_backend("auto", export_dir)`` takes the fastest one that is installed: tensorrt, then
onnxruntime with a GPU provider, then onnxruntime on CPU (measured 1.5x+ faster than torch eager on
CPU for the shipped policy; ``robot-rl bench inference``), then torch.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")


class BackendError(ValueError):
    """A backend cannot run this export here; the message says why and what to do."""


class InferenceBackend(ABC):
    name = "backend"
    device = "cpu"

    def __init__(self, metadata: dict):
        self.metadata = metadata
        self.input_names = [i["name"] for i in metadata["inputs"]]
        self.output_names = [o["name"] for o in metadata["outputs"]]

    @abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def describe(self) -> str:
        return f"{self.name} ({self.device})"

    def close(self) -> None:
        pass


def read_metadata_json(export_dir: str | Path, what: str) -> tuple[dict, Path]:
    """``metadata.json`` of an export directory, parsed; the error names the file and what it is not."""
    path = Path(export_dir) / "metadata.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not {what}")
    try:
        return json.loads(path.read_text()), path
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc


def read_metadata(export_dir: str | Path) -> dict:
    from robot_rl.inference.export import validate_metadata

    metadata, path = read_metadata_json(export_dir, "an exported policy directory")
    validate_metadata(metadata, str(path))
    return metadata


class TorchBackend(InferenceBackend):
    name = "torch"

    def __init__(self, metadata: dict, model, device: str | None = None, dtype=None):
        import torch

        super().__init__(metadata)
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = dtype or torch.float32
        self.model = model.to(self.device).eval()
        self.cameras = list(model.config.cameras)

    @classmethod
    def from_export(cls, export_dir: str | Path, metadata: dict | None = None, device: str | None = None):
        from safetensors.torch import load_file

        from robot_rl.policy.vla import VLAConfig, VLAModel

        metadata = metadata or read_metadata(export_dir)
        weights = Path(export_dir) / "weights.safetensors"
        if "model_config" not in metadata or not weights.is_file():
            raise BackendError(f"{export_dir}: the torch backend needs metadata 'model_config' and weights.safetensors "
                               "(exports of other models can use onnxruntime or tensorrt)")
        model = VLAModel(VLAConfig.from_dict(metadata["model_config"]))
        model.load_state_dict(load_file(str(weights)))
        return cls(metadata, model, device)

    def run(self, inputs):
        torch = self.torch
        with torch.inference_mode():
            t = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in inputs.items()}
            images = {c: t[f"image_{c}"] for c in self.cameras}
            actions, log_std, value = self.model(images, t["joint_positions"], t["instruction"])
            return {"actions": actions.float().cpu().numpy(), "action_log_std": log_std.float().cpu().numpy(),
                    "value": value.float().cpu().numpy()}


class OnnxRuntimeBackend(InferenceBackend):
    name = "onnxruntime"

    PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

    def __init__(self, export_dir: str | Path, metadata: dict | None = None, providers: list[str] | None = None,
                 threads: int = 0, model_bytes: bytes | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError("onnxruntime is not installed (pip install onnxruntime, or .[gpu] for CUDA)") from exc
        super().__init__(metadata or read_metadata(export_dir))
        path = Path(export_dir) / self.metadata.get("onnx_file", "policy.onnx")
        if model_bytes is None and not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        available = ort.get_available_providers()
        chosen = providers or [p for p in self.PREFERENCE if p in available]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        # model_bytes: the graph in memory (learner weights patched into the export's graph)
        self.session = ort.InferenceSession(model_bytes if model_bytes is not None else str(path), options,
                                            providers=chosen)
        self.device = self.session.get_providers()[0]
        _check_graph_against_metadata(self.session, self.metadata, str(path))

    def run(self, inputs):
        outputs = self.session.run(self.output_names, {k: inputs[k] for k in self.input_names})
        return dict(zip(self.output_names, outputs))


def _check_graph_against_metadata(session, metadata: dict, where: str) -> None:
    """The ONNX graph and metadata.json must describe the same inputs and outputs."""
    graph_in = {i.name: i for i in session.get_inputs()}
    graph_out = {o.name for o in session.get_outputs()}
    for spec in metadata["inputs"]:
        node = graph_in.get(spec["name"])
        if node is None:
            raise ValueError(f"{where}: metadata.json names input '{spec['name']}' but the graph has {sorted(graph_in)}")
        expected_type = f"tensor({'float' if spec['dtype'] == 'float32' else spec['dtype']})"
        if node.type != expected_type:
            raise ValueError(f"{where}: input '{spec['name']}' is {node.type} in the graph, {spec['dtype']} in metadata.json")
        dims = [d if isinstance(d, int) else -1 for d in node.shape]
        meta_dims = [d if isinstance(d, int) else -1 for d in spec["shape"]]
        if len(dims) != len(meta_dims) or any(a != b for a, b in zip(dims, meta_dims) if a != -1 and b != -1):
            raise ValueError(f"{where}: input '{spec['name']}' has shape {node.shape} in the graph, {spec['shape']} in metadata.json")
    missing = [o["name"] for o in metadata["outputs"] if o["name"] not in graph_out]
    if missing:
        raise ValueError(f"{where}: metadata.json names outputs {missing} that the graph lacks (graph: {sorted(graph_out)})")


def available_backends() -> list[str]:
    names = ["torch"]
    try:
        import onnxruntime  # noqa: F401

        names.append("onnxruntime")
    except ImportError:
        pass
    try:
        import tensorrt  # noqa: F401

        names.append("tensorrt")
    except ImportError:
        pass
    return names


def make_backend(kind: str, export_dir: str | Path, **options) -> InferenceBackend:
    if kind not in BACKENDS:
        raise ValueError(f"unknown inference backend '{kind}'; expected one of {list(BACKENDS)}")
    metadata = read_metadata(export_dir)
    if kind == "torch":
        return TorchBackend.from_export(export_dir, metadata, options.get("device"))
    if kind == "onnxruntime":
        return OnnxRuntimeBackend(export_dir, metadata, options.get("providers"), options.get("threads", 0))
    if kind == "tensorrt":
        from robot_rl.inference.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(export_dir, metadata, fp16=options.get("fp16", True))
    # auto: the fastest that works here
    errors = []
    if "tensorrt" in available_backends():
        try:
            from robot_rl.inference.tensorrt_backend import TensorRTBackend

            return TensorRTBackend(export_dir, metadata, fp16=options.get("fp16", True))
        except (BackendError, RuntimeError, OSError) as exc:
            errors.append(f"tensorrt: {exc}")
    try:
        return OnnxRuntimeBackend(export_dir, metadata, threads=options.get("threads", 0))
    except BackendError as exc:
        errors.append(f"onnxruntime: {exc}")
    try:
        return TorchBackend.from_export(export_dir, metadata, options.get("device"))
    except BackendError as exc:
        errors.append(f"torch: {exc}")
    raise BackendError(f"no inference backend can run {export_dir}: " + "; ".join(errors))
