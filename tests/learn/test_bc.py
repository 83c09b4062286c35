import pytest
import torch

from robot_rl.learn.bc import BCConfig, load_checkpoint, random_shift, train_bc
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
