"""Learner weights into a running onnxruntime policy: patched into the export's graph, checked, or
exported afresh when the graph cannot be mapped."""

import shutil

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from robot_rl.inference.weights import OnnxWeightPatcher, backend_from_weights, patched_onnx_backend
from robot_rl.learn.learner import load_start_policy, state_bytes
from robot_rl.inference.backends import TorchBackend, read_metadata
from robot_rl.inference.weights import _probe


def perturbed(export_dir):
    model, _ = load_start_policy(str(export_dir))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_patched_graph_runs_the_new_weights(tiny_export):
    patcher = OnnxWeightPatcher(tiny_export)
    reference = load_file(str(tiny_export / "weights.safetensors"))
    assert patcher.mapping is not None and {k for k, _ in patcher.mapping.values()} == set(reference)
    model = perturbed(tiny_export)
    meta = read_metadata(tiny_export)
    backend = patched_onnx_backend(tiny_export, meta, model)
    assert backend is not None
    probe = _probe(model)
    probe["joint_positions"] = probe["joint_positions"] + 0.3  # not the probe the check used
    got, want = backend.run(probe), TorchBackend(meta, model).run(probe)
    np.testing.assert_allclose(got["actions"], want["actions"], atol=1e-4)
    old = TorchBackend(meta, load_start_policy(str(tiny_export))[0]).run(probe)
    assert np.abs(got["actions"] - old["actions"]).max() > 1e-3  # it is not the export's own weights


def test_a_graph_that_cannot_be_mapped_falls_back_to_a_fresh_export(tiny_export, tmp_path):
    broken = tmp_path / "export"
    shutil.copytree(tiny_export, broken)
    weights = load_file(str(broken / "weights.safetensors"))
    weights = {k: v + 1.0 if v.dtype == np.float32 else v for k, v in weights.items()}  # no longer the graph's values
    save_file(weights, str(broken / "weights.safetensors"))
    assert OnnxWeightPatcher(broken).mapping is None
    model = perturbed(tiny_export)
    meta = read_metadata(broken)
    assert patched_onnx_backend(broken, meta, model) is None
    backend = backend_from_weights("onnxruntime", meta, model.config.to_dict(), state_bytes(model), 3,
                                   export_dir=broken)
    probe = _probe(model)
    np.testing.assert_allclose(backend.run(probe)["actions"], TorchBackend(meta, model).run(probe)["actions"], atol=1e-4)
