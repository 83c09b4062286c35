"""An inference backend for weights the learner published (a safetensors state dict + model config).

``torch``: the model with the new state dict. ``onnxruntime``: the new weights are written into the
running export's ONNX graph (:class:`OnnxWeightPatcher`: each graph initializer was mapped once to
the state-dict entry it holds) and a session opened on the patched graph in memory; the patched
session must reproduce the PyTorch model's outputs on a probe input, else (and whenever the graph
cannot be mapped) the model is exported to ONNX afresh (about 0.7 s of CPU for the shipped policy,
which competes with the running policy). With ``tensorrt`` the engine is built from a fresh ONNX file
(minutes on a Jetson: weights then arrive less often than they are published, never half-loaded).
Everything runs off the control thread; the caller swaps the returned backend in.
"""

from __future__ import annotations

import functools
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


class OnnxWeightPatcher:
    """Writes a state dict into an exported ONNX graph without exporting again.

    The exporter keeps most parameters as initializers named ``model.<key>``; some it reshapes and
    renames (GroupNorm's affine parameters become anonymous ``(C, 1, 1)`` constants). Each initializer
    is mapped once to the state-dict entry it holds, by name or else by its exact values in the
    export's own ``weights.safetensors``; a graph where some entry has no initializer, or where values
    are ambiguous, cannot be patched (``mapping`` is None) and the caller exports instead.
    """

    def __init__(self, export_dir: str | Path, onnx_file: str = "policy.onnx"):
        import onnx
        from onnx import numpy_helper
        from safetensors.numpy import load_file

        self.graph = onnx.load(str(Path(export_dir) / onnx_file))
        reference = load_file(str(Path(export_dir) / "weights.safetensors"))
        self.mapping: dict[str, tuple[str, tuple[int, ...]]] | None = {}
        for init in self.graph.graph.initializer:
            value = numpy_helper.to_array(init)
            key = init.name[len("model."):] if init.name.startswith("model.") else None
            if key not in reference:
                same = [k for k, v in reference.items() if v.size == value.size and v.dtype == value.dtype
                        and np.array_equal(v.reshape(value.shape), value)]
                key = same[0] if len(same) == 1 else None
                if len(same) > 1:
                    self.mapping = None  # ambiguous: cannot tell which entry this constant holds
                    return
            if key is not None:
                self.mapping[init.name] = (key, value.shape)
        if {k for k, _ in self.mapping.values()} != set(reference):
            self.mapping = None  # an entry was folded into something else: patching would leave it stale

    def patched(self, state: dict[str, np.ndarray]) -> bytes:
        from onnx import numpy_helper

        graph = type(self.graph)()
        graph.CopyFrom(self.graph)
        for init in graph.graph.initializer:
            if init.name in self.mapping:
                key, shape = self.mapping[init.name]
                init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(state[key]).reshape(shape), init.name))
        return graph.SerializeToString()


@functools.lru_cache(maxsize=4)
def _patcher(export_dir: str, onnx_file: str) -> OnnxWeightPatcher:
    return OnnxWeightPatcher(export_dir, onnx_file)


def _probe(model) -> dict[str, np.ndarray]:
    c = model.config
    rng = np.random.default_rng(0)
    probe = {f"image_{cam}": rng.integers(0, 255, (1, c.image_height, c.image_width, 3), dtype=np.uint8) for cam in c.cameras}
    probe["joint_positions"] = rng.normal(size=(1, len(c.joint_names))).astype(np.float32) * 0.1
    probe["instruction"] = rng.normal(size=(1, c.text_dim)).astype(np.float32)
    return probe


def patched_onnx_backend(export_dir: str | Path, meta: dict, model) -> OnnxRuntimeBackend | None:
    """An onnxruntime session on the export's graph with ``model``'s weights, checked against
    ``model`` on a probe input; None when the graph cannot be patched or the check fails."""
    try:
        patcher = _patcher(str(Path(export_dir).resolve()), meta.get("onnx_file", "policy.onnx"))
    except (OSError, ValueError, ImportError):
        return None
    if patcher.mapping is None:
        return None
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    backend = OnnxRuntimeBackend(export_dir, meta, model_bytes=patcher.patched(state))
    probe = _probe(model)
    got = backend.run(probe)
    want = TorchBackend(meta, model).run(probe)
    if not all(np.allclose(got[k], want[k], atol=1e-4, rtol=1e-4) for k in want if k in got):
        backend.close()
        return None
    return backend


def backend_from_weights(kind: str, metadata: dict, model_config: dict, safetensors_bytes: bytes, version: int,
                         workdir: str | None = None, export_dir: str | Path | None = None) -> InferenceBackend:
    """``export_dir``: the running export, whose ONNX graph new weights can be patched into."""
    model = model_from_weights(model_config, safetensors_bytes)
    meta = {**metadata, "model_version": f"{metadata.get('model_version', 'export')}+learner-v{version}"}
    if kind == "torch":
        return TorchBackend(meta, model)
    if export_dir is not None and (kind == "onnxruntime" or (kind == "auto" and not _has_tensorrt())):
        patched = patched_onnx_backend(export_dir, meta, model)
        if patched is not None:
            return patched
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
