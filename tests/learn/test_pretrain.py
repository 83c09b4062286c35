import numpy as np
import pytest
import torch

from robot_rl.data.dataset import DemoDataset
from robot_rl.learn.bc import BCConfig, load_checkpoint, train_bc
from robot_rl.learn.pretrain import PretrainConfig, load_encoders, pretrain_encoders, split_episodes
from tests.conftest import TINY_MODEL

ENCODER_MODEL = {k: TINY_MODEL[k] for k in ("cnn_channels", "image_features")} | {"pooling": "spatial_softmax",
                                                                                   "keypoints": 8}


@pytest.fixture(scope="module")
def pretrained(tiny_demos, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "encoders.pt"
    lines = []
    metrics = pretrain_encoders(PretrainConfig(data=str(tiny_demos), out=str(out), steps=200, batch_size=32, lr=3e-3,
                                               checkpoint_every=100, eval_fraction=0.25, model=dict(ENCODER_MODEL)),
                                progress=False, log=lines.append)
    return out, metrics, lines


def test_pretraining_learns_where_the_objects_are_from_frames_alone(pretrained):
    out, metrics, lines = pretrained
    # the training frames' error falls well below where the untrained encoders started (94 mm here: 8
    # layouts of 32x24 frames teach little that carries to new ones, but the error there falls too)
    assert metrics["train_last"]["objects_mm"] < 0.6 * metrics["eval_start"]["objects_mm"]
    assert metrics["eval_end"]["objects_mm"] < 0.9 * metrics["eval_start"]["objects_mm"]
    assert "episodes never trained on" in lines[-1]
    payload = load_encoders(out)
    assert payload["step"] == 200
    assert payload["encoder_config"]["pooling"] == "spatial_softmax" and payload["encoder_config"]["keypoints"] == 8
    assert payload["encoder_config"]["cameras"] == ["front", "wrist"] and payload["encoder_config"]["image_width"] == 32
    # only the camera encoders: no trunk, no action head, nothing that knows a task
    assert payload["encoders"] and all(k.split(".")[0] in ("front", "wrist") for k in payload["encoders"])
    assert payload["dataset"]["held_out_frames"] > 0


def test_held_out_rows_are_whole_episodes(tiny_demos):
    data = DemoDataset(str(tiny_demos), horizon=1, only_success=False, until_success=False)
    train, held = split_episodes(data, 0.25, seed=0)
    assert len(train) + len(held) == len(data) and len(held) > 0
    train_episodes, held_episodes = set(data.index[train, 0]), set(data.index[held, 0])
    assert not train_episodes & held_episodes
    assert len(held_episodes) == 2  # a quarter of the 8 episodes


def test_pretraining_resumes_and_refuses_other_encoders(tiny_demos, tmp_path):
    out = tmp_path / "enc.pt"
    config = PretrainConfig(data=str(tiny_demos), out=str(out), steps=4, batch_size=8, model=dict(ENCODER_MODEL))
    pretrain_encoders(config, progress=False, log=lambda *_: None)
    first = load_encoders(out)
    lines = []
    config.steps = 6
    pretrain_encoders(config, resume=True, progress=False, log=lines.append)
    assert "at step 4" in lines[0] and load_encoders(out)["step"] == 6
    assert not torch.equal(first["encoders"]["front.proj.weight"], load_encoders(out)["encoders"]["front.proj.weight"])
    config.model = {**ENCODER_MODEL, "keypoints": 4}
    with pytest.raises(ValueError, match="has encoders"):
        pretrain_encoders(config, resume=True, progress=False, log=lambda *_: None)


def test_train_bc_starts_a_new_policy_from_the_pretrained_encoders(pretrained, tiny_demos, tmp_path, encoder):
    source = str(pretrained[0])
    encoders = load_encoders(source)["encoders"]
    out = tmp_path / "from_encoders.pt"
    lines = []
    # zero steps: the checkpoint is the starting model, encoders as pretrained, the rest new
    config = BCConfig(data=str(tiny_demos), out=str(out), steps=0, init_encoders=source,
                      model={"chunk_length": 4, "action_mode": "delta", "hidden": 64})
    train_bc(config, encoder=encoder, progress=False, log=lines.append)
    payload = load_checkpoint(out)
    assert any("camera encoders from" in line for line in lines)
    assert payload["init_encoders"] == source
    # the encoders' settings came with them, the rest from the request
    assert payload["model_config"]["keypoints"] == 8 and payload["model_config"]["hidden"] == 64
    for key, value in encoders.items():
        assert torch.equal(payload["model"][f"encoders.{key}"], value), key
    # and they train on from there
    config.steps, config.batch_size, config.out = 5, 8, str(tmp_path / "trained.pt")
    train_bc(config, encoder=encoder, progress=False, log=lambda *_: None)
    trained = load_checkpoint(config.out)["model"]
    assert not torch.equal(trained["encoders.front.proj.weight"], encoders["front.proj.weight"])
    # an ordinary export, which says where its encoders came from
    from robot_rl.inference.export import export_policy

    metadata = export_policy(config.out, str(tmp_path / "policy"), log=lambda *_: None)
    assert metadata["training"]["init_encoders"] == source and "init" not in metadata["training"]


def test_train_bc_refuses_encoders_that_do_not_fit(pretrained, tiny_demos, tiny_export, tmp_path, encoder):
    source = str(pretrained[0])
    config = BCConfig(data=str(tiny_demos), out=str(tmp_path / "x.pt"), steps=0, init_encoders=source,
                      model={"keypoints": 16})
    with pytest.raises(ValueError, match=r"keypoints 16 \(the encoders': 8\)"):
        train_bc(config, encoder=encoder, progress=False, log=lambda *_: None)
    config.model, config.init = {}, str(tiny_export)
    with pytest.raises(ValueError, match="--init-encoders starts a new policy"):
        train_bc(config, encoder=encoder, progress=False, log=lambda *_: None)


def test_pretraining_names_data_without_object_positions(tiny_demos, tmp_path):
    from robot_rl.data.episodes import list_episodes, read_episode, write_episode

    plain = tmp_path / "hardware_like"
    for path in list_episodes(str(tiny_demos))[:2]:
        episode = read_episode(path)
        episode.extras.pop("object_positions")
        write_episode(str(plain), episode)
    with pytest.raises(ValueError, match="object_positions"):
        pretrain_encoders(PretrainConfig(data=str(plain), out=str(tmp_path / "x.pt"), steps=1),
                          progress=False, log=lambda *_: None)


def test_the_command_line_runs_both_stages(tiny_demos, tmp_path):
    from robot_rl.cli import main

    out = tmp_path / "cli.pt"
    assert main(["pretrain-encoder", "--data", str(tiny_demos), "--out", str(out), "--steps", "2", "--batch-size",
                 "4", "--keypoints", "4"]) == 0
    assert load_encoders(out)["encoder_config"]["keypoints"] == 4
    policy = tmp_path / "bc.pt"
    assert main(["train-bc", "--data", str(tiny_demos), "--out", str(policy), "--steps", "2", "--batch-size", "4",
                 "--init-encoders", str(out), "--chunk-length", "4"]) == 0
    config = load_checkpoint(policy)["model_config"]
    assert config["keypoints"] == 4 and config["pooling"] == "spatial_softmax" and config["chunk_length"] == 4
    # an explicit setting the encoders do not have is refused by name, with a non-zero exit
    assert main(["train-bc", "--data", str(tiny_demos), "--out", str(tmp_path / "no.pt"), "--steps", "1",
                 "--init-encoders", str(out), "--pooling", "mean"]) == 2
    assert np.isfinite(load_checkpoint(policy)["metrics"]["eval_end"]["mse"])


def test_closed_loop_estimates_read_a_pretraining_checkpoint(pretrained):
    """bench perception --estimates-from takes a pretrain-encoder checkpoint: the pretrained encoders and
    head, not fresh ones, place the objects in the world the perception bench renders."""
    from robot_rl.learn.bc import ObjectPositionHead
    from robot_rl.learn.perception import ObjectEstimates
    from robot_rl.sim.tabletop import TabletopWorld

    out, _, _ = pretrained
    payload = load_encoders(out)
    estimates = ObjectEstimates(str(out))
    for name, tensor in payload["encoders"].items():
        assert torch.equal(estimates.model.encoders.state_dict()[name], tensor)
    world = TabletopWorld(estimates.world_config())
    try:
        world.reset(10000, "push_cube_to_pad")
        truth = world.object_poses()
        seen = estimates.replace(world, truth, ("cube",))
        frames = {c: torch.from_numpy(world.render(c))[None] for c in estimates.model.config.cameras}
    finally:
        world.close()
    head = ObjectPositionHead(payload["object_head"]["linear.weight"].shape[1], np.zeros(9), np.ones(9))
    head.load_state_dict(payload["object_head"])
    with torch.no_grad():
        expected = head.positions(estimates.model.image_features(frames)).view(-1, 3)[0].numpy()
    assert np.allclose(seen["cube"].position, expected, atol=1e-6)
    assert seen["pad"] is truth["pad"]
    assert estimates.errors_mm["cube"] == [pytest.approx(np.linalg.norm(expected[:2] - truth["cube"].position[:2]) * 1e3)]
