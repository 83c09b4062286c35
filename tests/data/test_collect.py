"""robot-rl collect: what a simulated demonstration records beside the frames, for train-bc's auxiliary loss."""

import numpy as np
import pytest
import torch

from robot_rl.data.dataset import DemoDataset
from robot_rl.data.episodes import list_episodes, read_episode, write_episode


def _pairwise(positions: np.ndarray) -> np.ndarray:
    """(T, 9) three objects' positions -> (T, 3) their distances from each other."""
    p = positions.reshape(len(positions), 3, 3)
    return np.stack([np.linalg.norm(p[:, a] - p[:, b], axis=1) for a, b in ((0, 1), (0, 2), (1, 2))], axis=1)


def test_each_camera_records_where_it_sees_the_objects(tiny_demos):
    episode = read_episode(next(p for p in list_episodes(str(tiny_demos)) if "push_cube" in str(p)))
    world = episode.extras["object_positions"]
    front, wrist = episode.extras["object_positions_in_front"], episode.extras["object_positions_in_wrist"]
    assert front.shape == wrist.shape == world.shape == (len(episode), 9)
    # a camera's frame is the world's turned and moved: distances between the objects stay what they are
    np.testing.assert_allclose(_pairwise(front), _pairwise(world), atol=1e-5)
    np.testing.assert_allclose(_pairwise(wrist), _pairwise(world), atol=1e-5)
    # every object is in front of the fixed camera (MuJoCo cameras look along their -z), and the pad,
    # which nothing moves, stays where that camera sees it
    assert np.all(front.reshape(-1, 3, 3)[:, :, 2] < 0)
    np.testing.assert_allclose(front[:, 3:6], np.broadcast_to(front[0, 3:6], front[:, 3:6].shape), atol=1e-5)
    # the wrist camera travels with the gripper: the pad moves in its view, and the cube, which the push
    # starts from, comes closer than it was at the first step
    assert np.ptp(wrist[:, 3:6], axis=0).max() > 0.05
    cube_distance = np.linalg.norm(wrist[:, :3], axis=1)
    assert cube_distance.min() < 0.6 * cube_distance[0]


def test_the_dataset_offers_the_cameras_view_of_the_objects_only_when_asked_and_recorded(tiny_demos, tmp_path):
    data = DemoDataset(str(tiny_demos), horizon=4, objects_in_cameras=True)
    batch = data.batch(np.arange(5))
    assert batch.objects.shape == (5, 9 * 3)  # the world's, then the front camera's and the wrist camera's
    assert data.object_statistics()["mean"].shape == (27,)
    assert DemoDataset(str(tiny_demos), horizon=4).batch(np.arange(5)).objects.shape == (5, 9)
    # episodes recorded before collect wrote the cameras' view: named, not guessed
    for path in list_episodes(str(tiny_demos))[:2]:
        episode = read_episode(path)
        episode.extras.pop("object_positions_in_wrist")
        write_episode(str(tmp_path), episode)
    older = DemoDataset(str(tmp_path), horizon=4, objects_in_cameras=True)
    assert not older.has_objects and older.batch(np.arange(2)).objects is None
    with pytest.raises(ValueError, match="'object_positions_in_wrist'"):
        older.object_statistics()


def test_train_bc_fits_the_cameras_view_with_the_auxiliary_head(tiny_demos, tmp_path, encoder):
    from robot_rl.learn.bc import BCConfig, load_checkpoint, train_bc
    from tests.conftest import TINY_MODEL

    config = BCConfig(data=str(tiny_demos), out=str(tmp_path / "cams.pt"), steps=3, batch_size=8, objects_coef=1.0,
                      objects_in_cameras=True, model=dict(TINY_MODEL))
    train_bc(config, encoder=encoder, progress=False, log=lambda *_: None)
    head = load_checkpoint(config.out)["object_head"]
    assert head["linear.weight"].shape[0] == 27 and torch.all(head["std"] > 0)
    # a resume must predict the same coordinates
    config.objects_in_cameras, config.steps = False, 4
    with pytest.raises(ValueError, match="--objects-in-cameras"):
        train_bc(config, resume=True, encoder=encoder, progress=False, log=lambda *_: None)
    with pytest.raises(ValueError, match="--objects-coef"):
        train_bc(BCConfig(data=str(tiny_demos), out=str(tmp_path / "x.pt"), steps=1, objects_in_cameras=True,
                          model=dict(TINY_MODEL)), encoder=encoder, progress=False, log=lambda *_: None)
