import numpy as np
import pytest
import torch

from robot_rl.policy.vla import ExportWrapper, VLAConfig, VLAModel

JOINTS = ["j0", "j1", "j2"]


def _model(**overrides):
    torch.manual_seed(0)
    config = VLAConfig(joint_names=JOINTS, image_height=24, image_width=32, chunk_length=5, cnn_channels=(8, 16),
                       image_features=16, hidden=64, **overrides)
    return VLAModel(config).eval()


def _inputs(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = {c: torch.randint(0, 256, (b, 24, 32, 3), dtype=torch.uint8, generator=g) for c in ("front", "wrist")}
    return images, torch.randn(b, 3, generator=g), torch.randn(b, 384, generator=g)


def test_output_shapes_and_determinism():
    model = _model()
    with torch.no_grad():
        a1, log_std, value = model(*_inputs())
        a2, _, _ = model(*_inputs())
    assert a1.shape == (2, 5, 3) and log_std.shape == (2, 5, 3) and value.shape == (2,)
    torch.testing.assert_close(a1, a2)
    with torch.no_grad():
        other, _, _ = model(*_inputs(seed=1))
    assert not torch.allclose(a1, other)  # the inputs matter


def test_delta_mode_adds_the_measured_joints_and_normalisation_is_applied():
    model = _model(action_mode="delta")
    model.set_normalisation(np.zeros(3), np.ones(3), np.full((5, 3), 0.1), np.full((5, 3), 2.0))
    images, joints, text = _inputs()
    with torch.no_grad():
        mean, _, _ = model.forward_normalised(images, joints, text)
        actions, _, _ = model(images, joints, text)
    torch.testing.assert_close(actions, mean * 2.0 + 0.1 + joints[:, None, :])
    torch.testing.assert_close(model.normalise_target(actions, joints), mean)


def test_normalisation_travels_in_the_state_dict():
    model = _model()
    model.set_normalisation(np.arange(3), np.ones(3) * 3, np.zeros((5, 3)), np.ones((5, 3)))
    state = model.state_dict()
    assert state["joint_mean"].tolist() == [0.0, 1.0, 2.0] and state["joint_std"].tolist() == [3.0, 3.0, 3.0]
    clone = _model()
    clone.load_state_dict(state)
    images, joints, text = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(clone(images, joints, text)[0], model(images, joints, text)[0])


def test_export_wrapper_orders_inputs_by_name():
    model = _model()
    wrapper = ExportWrapper(model)
    assert wrapper.input_names() == ["image_front", "image_wrist", "joint_positions", "instruction"]
    images, joints, text = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(wrapper(images["front"], images["wrist"], joints, text)[0], model(images, joints, text)[0])


@pytest.mark.parametrize("overrides, message", [
    ({"action_mode": "velocity"}, "action_mode must be one of"),
    ({"action_mode": "cartesian"}, "action_mode 'cartesian' needs arm_geometry"),
    ({"cameras": []}, "at least one camera"),
    ({"encoder": "resnet"}, "unknown image encoder 'resnet'"),
    ({"pooling": "max"}, "pooling must be one of"),
])
def test_bad_config_is_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        VLAModel(VLAConfig(joint_names=JOINTS, **overrides))


def test_unknown_config_field_is_named():
    with pytest.raises(ValueError, match=r"unknown VLA config fields \['colour'\]"):
        VLAConfig.from_dict({"colour": "red"})


def test_spatial_softmax_reports_where_the_feature_is():
    from robot_rl.policy.vla import SpatialSoftmax

    pool = SpatialSoftmax(channels=1, keypoints=1)
    with torch.no_grad():  # one keypoint map = the input channel, sharp (low temperature)
        pool.keypoints.weight.fill_(1.0)
        pool.keypoints.bias.zero_()
        pool.log_temperature.fill_(-3.0)
    x = torch.zeros(2, 1, 5, 9)
    x[0, 0, 0, 8] = 1.0  # top right
    x[1, 0, 4, 2] = 1.0  # bottom, a quarter in from the left
    with torch.no_grad():
        xy = pool(x)
    torch.testing.assert_close(xy, torch.tensor([[1.0, -1.0], [-0.5, 1.0]]), atol=0.02, rtol=0)


def test_spatial_softmax_model_exports_with_the_same_outputs(tmp_path):
    import onnxruntime as ort

    from robot_rl.inference.export import onnx_export

    model = _model(pooling="spatial_softmax", keypoints=4)
    images, joints, text = _inputs(b=3)
    feed = {"image_front": images["front"].numpy(), "image_wrist": images["wrist"].numpy(),
            "joint_positions": joints.numpy(), "instruction": text.numpy()}
    onnx_export(model, tmp_path / "ss.onnx", feed)
    session = ort.InferenceSession(str(tmp_path / "ss.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(["actions"], feed)[0]
    with torch.no_grad():
        expected = model(images, joints, text)[0].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-4)
