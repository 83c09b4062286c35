"""The pretrained encoder: the right network for the shipped ImageNet weights, and a policy built on it
that trains, keeps its frozen layers at ImageNet's values and exports with parity."""

from pathlib import Path

import numpy as np
import pytest
import torch

from robot_rl.policy import efficientnet_lite as effnet
from robot_rl.policy.vla import VLAConfig, VLAModel

PHOTOS = Path(__file__).parent / "photos"
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {504, 967, 968}  # coffee mug, espresso, cup


def _photo(name: str) -> torch.Tensor:
    from PIL import Image

    pixels = np.array(Image.open(PHOTOS / name).convert("RGB"))
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255.0


def test_the_imagenet_weights_load_into_the_network_and_recognise_photographs():
    # every key of the checkpoint has a place (strict load), and the network computes what was
    # trained: a wrong block order, activation or input normalisation would not name these photos
    classifier = effnet.efficientnet_lite0_classifier().eval()
    assert set(classifier.state_dict()) == set(effnet.imagenet_state_dict())
    with torch.no_grad():
        cat = classifier(_photo("cat.jpg")).softmax(-1)[0]
        coffee = classifier(_photo("coffee.jpg")).softmax(-1)[0]
    assert int(cat.argmax()) in CAT_CLASSES and float(cat[list(CAT_CLASSES)].sum()) > 0.5
    assert int(coffee.argmax()) in COFFEE_CLASSES


def test_same_padding_puts_the_odd_pixel_after_as_tensorflow_does():
    assert effnet.same_padding(96, 3, 2) == (0, 1)
    assert effnet.same_padding(97, 3, 2) == (1, 1)
    assert effnet.same_padding(48, 5, 2) == (1, 2)
    assert effnet.same_padding(12, 5, 1) == (2, 2)
    trunk = effnet.EfficientNetLite0Trunk(3)
    assert trunk(torch.zeros(1, 3, 96, 128)).shape == (1, 40, 12, 16) and trunk.stride == 8


def test_batch_norm_keeps_imagenet_statistics_in_training_mode():
    trunk = effnet.load_pretrained(effnet.EfficientNetLite0Trunk(2))
    before = {k: v.clone() for k, v in trunk.state_dict().items() if "running" in k}
    trunk.train()
    trunk(torch.rand(4, 3, 48, 64))
    assert all(torch.equal(before[k], trunk.state_dict()[k]) for k in before)
    assert not any(m.training for m in trunk.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_a_trunk_with_unknown_stages_is_refused():
    with pytest.raises(ValueError, match="7 stages"):
        effnet.EfficientNetLite0Trunk(8)
    with pytest.raises(ValueError, match="unknown image encoder 'resnet'; expected one of"):
        VLAConfig(joint_names=["j0"], encoder="resnet")


def _pretrained_model(freeze: bool) -> VLAModel:
    config = VLAConfig(joint_names=["j0", "j1", "j2"], image_height=24, image_width=32, chunk_length=4,
                       encoder="efficientnet_lite0", pretrained_stages=2, freeze_pretrained=freeze,
                       pooling="spatial_softmax", cnn_channels=(16,), image_features=16, keypoints=8, hidden=64)
    return VLAModel(config, pretrained=True)


def test_a_frozen_trunk_stays_at_imagenet_weights_while_the_layers_on_top_learn():
    torch.manual_seed(0)
    model = _pretrained_model(freeze=True).train()
    imagenet = {k: v.clone() for k, v in model.encoders["front"].trunk.state_dict().items()}
    head = model.encoders["front"].conv[0].weight.detach().clone()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    images = {c: torch.randint(0, 256, (8, 24, 32, 3), dtype=torch.uint8) for c in ("front", "wrist")}
    target = torch.randn(8, 4, 3)
    for _ in range(3):
        mean, _, _ = model.forward_normalised(images, torch.zeros(8, 3), torch.zeros(8, 384))
        loss = (mean - target).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    trunk = model.encoders["front"].trunk.state_dict()
    assert all(torch.equal(imagenet[k], trunk[k]) for k in imagenet)
    assert not torch.equal(head, model.encoders["front"].conv[0].weight)


def test_a_model_rebuilt_from_its_state_dict_needs_no_weights_package(monkeypatch):
    trained = _pretrained_model(freeze=False).eval()
    # what the learner and the policy node do: build from the config, then load the export's weights
    monkeypatch.setattr(effnet, "weights_path", lambda: (_ for _ in ()).throw(AssertionError("read the weights")))
    rebuilt = VLAModel(trained.config).eval()
    rebuilt.load_state_dict(trained.state_dict())
    images = {c: torch.randint(0, 256, (2, 24, 32, 3), dtype=torch.uint8) for c in ("front", "wrist")}
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images, torch.zeros(2, 3), torch.zeros(2, 384))[0],
                                   trained(images, torch.zeros(2, 3), torch.zeros(2, 384))[0])


def test_train_bc_and_export_with_the_pretrained_encoder(tiny_demos, tmp_path, encoder):
    from robot_rl.inference.export import export_policy
    from robot_rl.learn.bc import BCConfig, load_checkpoint, train_bc

    out = tmp_path / "bc.pt"
    model = {"chunk_length": 4, "encoder": "efficientnet_lite0", "pretrained_stages": 2, "freeze_pretrained": True,
             "pooling": "spatial_softmax", "cnn_channels": [16], "image_features": 16, "keypoints": 8, "hidden": 64}
    train_bc(BCConfig(data=str(tiny_demos), out=str(out), steps=10, batch_size=8, model=model),
             encoder=encoder, progress=False, log=lambda *_: None)
    state = load_checkpoint(str(out))["model"]
    imagenet = effnet.imagenet_state_dict()
    assert torch.equal(state["encoders.front.trunk._blocks.1._depthwise_conv.weight"],
                       imagenet["_blocks.1._depthwise_conv.weight"])
    metadata = export_policy(str(out), str(tmp_path / "export"), log=lambda *_: None)  # fails above the tolerance
    assert metadata["model_config"]["encoder"] == "efficientnet_lite0"
    assert (tmp_path / "export" / "policy.onnx").is_file()
