import numpy as np
import pytest
import torch

from robot_rl.learn.bc import BCConfig, ObjectPositionHead, bc_loss, load_checkpoint, random_shift, to_tensors, train_bc
from robot_rl.policy.vla import VLAConfig, VLAModel
from tests.conftest import TINY_MODEL


def test_bc_lowers_the_held_out_loss(tiny_checkpoint):
    _, metrics = tiny_checkpoint
    assert metrics["eval_end"]["mse"] < 0.7 * metrics["eval_start"]["mse"]
    assert metrics["eval_end"]["nll"] < metrics["eval_start"]["nll"]


def test_checkpoint_holds_config_weights_normalisation_and_embeddings(tiny_checkpoint):
    payload = load_checkpoint(tiny_checkpoint[0])
    assert payload["step"] == 100
    assert payload["model_config"]["chunk_length"] == 4 and payload["model_config"]["image_width"] == 32
    assert payload["model"]["action_std"].shape == (4, 6) and float(payload["model"]["action_std"].min()) > 0
    assert "reach the red cube" in payload["instruction_embeddings"]


def test_training_resumes_from_the_checkpoint(tiny_demos, tmp_path, encoder):
    out = tmp_path / "resume.pt"
    config = BCConfig(data=str(tiny_demos), out=str(out), steps=10, batch_size=8, checkpoint_every=5, model=dict(TINY_MODEL))
    train_bc(config, encoder=encoder, progress=False, log=lambda *_: None)
    first = load_checkpoint(out)
    lines = []
    config.steps = 14
    train_bc(config, resume=True, encoder=encoder, progress=False, log=lines.append)
    second = load_checkpoint(out)
    assert "resuming" in lines[0] and "at step 10" in lines[0]
    assert second["step"] == 14
    assert not torch.equal(first["model"]["action_head.weight"], second["model"]["action_head.weight"])
    config.model = {**TINY_MODEL, "hidden": 32}
    with pytest.raises(ValueError, match="different model config"):
        train_bc(config, resume=True, encoder=encoder, progress=False, log=lambda *_: None)


def test_random_shift_keeps_shape_and_moves_pixels():
    images = torch.arange(2 * 8 * 8 * 3, dtype=torch.int64).remainder(256).to(torch.uint8).view(2, 8, 8, 3)
    shifted = random_shift(images, 2, torch.Generator().manual_seed(3))
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8
    assert not torch.equal(shifted, images)
    # every frame is a crop of the edge-padded frame at an offset within the pad
    batch = torch.randint(0, 256, (16, 6, 9, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    padded = np.pad(batch.numpy(), ((0, 0), (3, 3), (3, 3), (0, 0)), mode="edge")
    out = random_shift(batch, 3, torch.Generator().manual_seed(4)).numpy()
    offsets = set()
    for i in range(len(batch)):
        found = [(dy, dx) for dy in range(7) for dx in range(7) if np.array_equal(out[i], padded[i, dy:dy + 6, dx:dx + 9])]
        assert found, f"frame {i} is no crop of its padded frame"
        offsets.add(found[0])
    assert len(offsets) > 4  # the offsets vary across the batch


def test_fine_tuning_starts_from_the_exported_policy_and_keeps_its_normalisation(tiny_checkpoint, tiny_export,
                                                                                 tiny_demos, tmp_path, encoder):
    trained = load_checkpoint(tiny_checkpoint[0])
    out = tmp_path / "fine.pt"
    # the same data and split as the tiny policy's: its held-out loss at the start is the policy's own at the end
    config = BCConfig(data=[str(tiny_demos)], out=str(out), init=str(tiny_export), steps=6, batch_size=8, lr=1e-3,
                      until_success=False, checkpoint_every=100)
    lines = []
    metrics = train_bc(config, encoder=encoder, progress=False, log=lines.append)
    assert "fine-tuning" in lines[0]
    assert metrics["eval_start"]["mse"] == pytest.approx(tiny_checkpoint[1]["eval_end"]["mse"], rel=1e-4)
    fine = load_checkpoint(out)
    assert fine["model_config"] == trained["model_config"] and fine["init"] == str(tiny_export)
    for key in ("action_mean", "action_std", "joint_mean", "joint_std"):
        assert torch.equal(fine["model"][key], trained["model"][key])
    assert not torch.equal(fine["model"]["action_head.weight"], trained["model"]["action_head.weight"])
    assert fine["dataset"]["dirs"] == [str(tiny_demos)]


def test_fine_tuning_refuses_another_model_or_a_missing_policy(tiny_export, tiny_demos, tmp_path, encoder):
    config = BCConfig(data=str(tiny_demos), out=str(tmp_path / "x.pt"), init=str(tiny_export), steps=1,
                      model={"pooling": "spatial_softmax"})
    with pytest.raises(ValueError, match="pooling 'spatial_softmax'.*fine-tuning keeps"):
        train_bc(config, encoder=encoder, progress=False, log=lambda *_: None)
    config = BCConfig(data=str(tiny_demos), out=str(tmp_path / "x.pt"), init=str(tmp_path / "nothing"), steps=1)
    with pytest.raises(FileNotFoundError, match="nothing"):
        train_bc(config, encoder=encoder, progress=False, log=lambda *_: None)


def test_fine_tuning_refuses_demonstrations_the_policy_cannot_read(tiny_export):
    from types import SimpleNamespace

    from robot_rl.learn.bc import check_data_fits, initial_model

    model = initial_model(str(tiny_export), {})
    c = model.config
    fits = SimpleNamespace(joint_names=list(c.joint_names), image_size=(c.image_height, c.image_width),
                           control_rate_hz=c.control_rate_hz, episodes=[])
    check_data_fits(c, fits, "p")
    smaller = SimpleNamespace(**{**vars(fits), "image_size": (c.image_height // 2, c.image_width // 2)})
    with pytest.raises(ValueError, match=f"images {c.image_height // 2}x{c.image_width // 2}"):
        check_data_fits(c, smaller, "p")


def test_the_auxiliary_object_loss_learns_where_the_objects_are_and_is_never_exported(tiny_demos, tmp_path, encoder):
    from robot_rl.data.dataset import DemoDataset

    data = DemoDataset(str(tiny_demos), horizon=4)
    assert data.has_objects  # collect records the objects' ground-truth positions
    batch = data.batch(np.arange(3))
    assert batch.objects.shape == (3, 9) and np.all(np.isfinite(batch.objects))
    # the loss reaches the encoder: a few steps on one batch fit the positions of its objects
    torch.manual_seed(0)
    model = VLAModel(VLAConfig.from_dict({**TINY_MODEL, "joint_names": data.joint_names, "image_height": 24,
                                          "image_width": 32}))
    stats = data.object_statistics()
    head = ObjectPositionHead(TINY_MODEL["image_features"] * 2, stats["mean"], stats["std"])
    images, joints, text, actions, returns, objects = to_tensors(batch, {i: encoder.encode(i) for i in batch.instructions})
    optimiser = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=1e-2)
    errors = []
    for _ in range(40):
        loss, parts = bc_loss(model, images, joints, text, actions, returns, 0.1, objects, head, objects_coef=1.0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        errors.append(parts["objects_mm"])
    assert errors[-1] < 0.2 * errors[0]
    assert model.encoders["front"].conv[0].weight.grad.abs().sum() > 0

    out = tmp_path / "aux.pt"
    config = BCConfig(data=str(tiny_demos), out=str(out), steps=20, batch_size=16, lr=2e-3, checkpoint_every=10,
                      objects_coef=1.0, model=dict(TINY_MODEL))
    lines = []
    metrics = train_bc(config, encoder=encoder, progress=False, log=lines.append)
    assert metrics["eval_end"]["objects_mm"] > 0 and "objects" in metrics["train_last"]
    assert "object positions off by" in lines[-1]
    payload = load_checkpoint(out)
    assert set(payload["object_head"]) == {"linear.weight", "linear.bias", "mean", "std"}
    assert not any(k.startswith("object") for k in payload["model"])  # the policy itself is unchanged
    # resuming needs the same setting: the head is part of what was trained
    config.objects_coef, config.steps = 0.0, 30
    with pytest.raises(ValueError, match="auxiliary object loss"):
        train_bc(config, resume=True, encoder=encoder, progress=False, log=lambda *_: None)


def test_the_auxiliary_object_loss_names_data_without_object_positions(tiny_demos, tmp_path, encoder):
    import shutil

    from robot_rl.data.episodes import list_episodes, read_episode, write_episode

    plain = tmp_path / "hardware_like"
    for path in list_episodes(str(tiny_demos))[:2]:
        episode = read_episode(path)
        episode.extras.pop("object_positions")
        write_episode(str(plain), episode)
    config = BCConfig(data=str(plain), out=str(tmp_path / "x.pt"), steps=1, objects_coef=1.0, model=dict(TINY_MODEL))
    with pytest.raises(ValueError, match="object_positions"):
        train_bc(config, encoder=encoder, progress=False, log=lambda *_: None)
    shutil.rmtree(plain)
