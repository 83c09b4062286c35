import json
import shutil

import numpy as np
import pytest

from robot_rl.inference.backends import BackendError, available_backends, make_backend, read_metadata
from robot_rl.inference.export import observation_samples, validate_metadata
from robot_rl.learn.bc import load_checkpoint, model_from_checkpoint
from robot_rl.policy.base import Observation, PolicyConfig, make_policy


def test_export_writes_the_contract_and_passes_parity(tiny_export):
    m = read_metadata(tiny_export)
    assert (tiny_export / "policy.onnx").is_file() and (tiny_export / "weights.safetensors").is_file()
    assert [i["name"] for i in m["inputs"]] == ["image_front", "image_wrist", "joint_positions", "instruction"]
    assert m["chunk_length"] == 4 and m["image_height"] == 24 and m["action_mode"] == "delta"
    assert m["parity"]["max_abs_diff"]["actions"] <= m["parity"]["tolerance"]["actions"]
    assert m["parity"]["samples"] >= 8
    assert "reach the red cube" in m["instruction_embeddings"]


def test_a_version_the_learner_published_exports_on_its_base_and_acts_as_trained(tiny_export, tmp_path):
    """``robot-rl export --weights RUN/weights/v<N>.safetensors --base EXPORT``: the loop's result becomes
    a deployable export (ONNX Runtime, like any other) that runs the learned weights, not the base's."""
    import torch

    from robot_rl.cli import main
    from robot_rl.learn.learner import load_start_policy, state_bytes

    learned, _ = load_start_policy(str(tiny_export))
    torch.manual_seed(0)
    with torch.no_grad():  # what 40 updates might have done to the action head
        for p in learned.action_head.parameters():
            p.add_(0.1 * torch.randn_like(p))
    weights = tmp_path / "run" / "weights" / "v40.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(state_bytes(learned))
    out = tmp_path / "learned_policy"
    assert main(["export", "--weights", str(weights), "--base", str(tiny_export), "--out", str(out)]) == 0
    m, base = read_metadata(out), read_metadata(tiny_export)
    assert m["model_version"].startswith("learner-v40-") and m["learner_version"] == 40
    assert m["base_policy"] == {"dir": str(tiny_export), "model_version": base["model_version"]}
    assert m["instruction_embeddings"] == base["instruction_embeddings"] and m["model_config"] == base["model_config"]
    assert m["parity"]["max_abs_diff"]["actions"] <= m["parity"]["tolerance"]["actions"]
    sample = observation_samples(learned, None, count=2)
    sample["instruction"] = np.stack([base["instruction_embeddings"]["reach the red cube"]] * 2).astype(np.float32)
    with torch.no_grad():
        expected = learned({c: torch.from_numpy(sample[f"image_{c}"]) for c in base["cameras"]},
                           torch.from_numpy(sample["joint_positions"]), torch.from_numpy(sample["instruction"]))[0].numpy()
    acted = make_backend("onnxruntime", out).run(sample)["actions"]
    np.testing.assert_allclose(acted, expected, atol=1e-3)
    assert np.abs(acted - make_backend("onnxruntime", tiny_export).run(sample)["actions"]).max() > 1e-2

    other = tmp_path / "other.safetensors"  # weights of another architecture: refused, naming both
    other.write_bytes(state_bytes(torch.nn.Linear(2, 2)))
    with pytest.raises(ValueError, match=rf"{other}: weights do not fit the model.*not trained from {tiny_export}"):
        main(["export", "--weights", str(other), "--base", str(tiny_export), "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit, match="--base is required"):
        main(["export", "--weights", str(weights), "--out", str(tmp_path / "x")])


def test_every_installed_backend_gives_the_actions_of_torch(tiny_export, tiny_checkpoint):
    model = model_from_checkpoint(load_checkpoint(tiny_checkpoint[0]))
    sample = observation_samples(model, None, count=4)  # frames rendered in the sim, not the training data
    sample["instruction"] = np.stack([read_metadata(tiny_export)["instruction_embeddings"]["press the blue button"]] * 4).astype(np.float32)
    reference = make_backend("torch", tiny_export).run(sample)
    names = [b for b in available_backends() if b != "torch"]
    assert "onnxruntime" in names  # part of the base install: CI checks it for real
    for name in names:
        out = make_backend(name, tiny_export).run(sample)
        np.testing.assert_allclose(out["actions"], reference["actions"], atol=1e-3, err_msg=name)
        np.testing.assert_allclose(out["value"], reference["value"], atol=1e-3, err_msg=name)
    assert make_backend("auto", tiny_export).name in names


def test_metadata_that_disagrees_with_the_onnx_file_is_refused(tiny_export, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_export, broken)
    m = json.loads((broken / "metadata.json").read_text())
    m["inputs"][2]["name"] = "joints"
    (broken / "metadata.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="input 'joint_positions' should be float32"):
        make_backend("onnxruntime", broken)
    m = json.loads((tiny_export / "metadata.json").read_text())
    m["inputs"][0]["dtype"] = "float32"
    with pytest.raises(ValueError, match="input 'image_front' should be uint8"):
        validate_metadata(m)
    (broken / "metadata.json").write_text((tiny_export / "metadata.json").read_text())
    (broken / "policy.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="policy.onnx does not exist"):
        make_backend("onnxruntime", broken)
    with pytest.raises(FileNotFoundError, match="metadata.json does not exist"):
        make_backend("auto", tmp_path)
    with pytest.raises(ValueError, match="unknown inference backend 'cuda'"):
        make_backend("cuda", tiny_export)


def test_tensorrt_backend_says_plainly_when_tensorrt_is_missing(tiny_export):
    if "tensorrt" in available_backends():
        pytest.skip("tensorrt is installed here: the GPU checks cover it")
    with pytest.raises(BackendError, match="tensorrt"):
        make_backend("tensorrt", tiny_export)


def _vla(path, backend="onnxruntime"):
    joints = read_metadata(path)["joint_names"]
    return make_policy(PolicyConfig(type="vla", joint_names=joints, lower=[-3.0] * len(joints), upper=[3.0] * len(joints),
                                    options={"path": str(path), "backend": backend}))


def _observation(policy, size=(24, 32)):
    frame = np.zeros((*size, 3), np.uint8)
    return Observation(1.0, policy.joint_names, np.zeros(len(policy.joint_names)), "reach the red cube",
                       {"front": frame, "wrist": frame})


def test_vla_policy_acts_and_refuses_bad_frames(tiny_export):
    policy = _vla(tiny_export)
    policy.reset("reach the red cube")
    assert not policy.encoder.loaded  # trained instruction: embedding from the export's table
    chunk = policy.act(_observation(policy))
    assert chunk.positions.shape == (4, 6) and chunk.stamp == 1.0 and chunk.period == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"camera 'front' frame is \(48, 64, 3\) uint8; the policy was trained on \(24, 32, 3\)"):
        policy.act(_observation(policy, size=(48, 64)))
    obs = _observation(policy)
    del obs.images["wrist"]
    with pytest.raises(ValueError, match="policy needs camera 'wrist'"):
        policy.act(obs)


def test_vla_policy_refuses_non_finite_output(tiny_export, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "nan_policy"
    shutil.copytree(tiny_export, broken)
    weights = load_file(str(broken / "weights.safetensors"))
    weights["action_head.bias"][:] = float("nan")
    save_file(weights, str(broken / "weights.safetensors"))
    policy = _vla(broken, backend="torch")
    policy.reset("reach the red cube")
    with pytest.raises(ValueError, match="not finite"):
        policy.act(_observation(policy))


def test_vla_policy_resizes_frames_when_asked(tiny_export):
    from robot_rl.policy.vla_policy import resize_rgb

    joints = read_metadata(tiny_export)["joint_names"]
    policy = make_policy(PolicyConfig(type="vla", joint_names=joints,
                                      options={"path": str(tiny_export), "backend": "onnxruntime", "resize": True}))
    policy.reset("reach the red cube")
    big = _observation(policy, size=(48, 64))  # twice the trained size: box-filtered down
    assert policy.act(big).positions.shape == (4, 6)
    frame = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    np.testing.assert_array_equal(resize_rgb(frame, 2, 3)[0, 0], frame[:2, :2].reshape(-1, 3).mean(0).round())
    assert resize_rgb(frame, 3, 4).shape == (3, 4, 3)
