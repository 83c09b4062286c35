import json

import numpy as np
import pytest

from robot_rl.data.dataset import DemoDataset
from robot_rl.data.episodes import (EpisodeFormatError, EpisodeMeta, EpisodeWriter, list_episodes, read_episode,
                                    remove_partials, write_episode)
from robot_rl.sim.tasks import TASKS


def _meta(episode_id="ep1", cameras=("front",)):
    return EpisodeMeta(episode_id=episode_id, task="reach_cube", instruction="reach the red cube", seed=3, success=False,
                       source="teleop", cameras=list(cameras), image_height=4, image_width=5,
                       joint_names=["a", "b"], control_rate_hz=10.0)


def test_writer_and_reader_round_trip(tmp_path):
    writer = EpisodeWriter(tmp_path, _meta())
    for t in range(3):
        writer.add({"front": np.full((4, 5, 3), t, np.uint8)}, [t, -t], [t + 1, 0], stamp=0.1 * t, intervention=t == 1)
    path = writer.finish(success=True)
    episode = read_episode(path)
    assert episode.meta.success and episode.meta.length == 3 and episode.meta.source == "teleop"
    assert episode.images["front"][2].max() == 2 and episode.joint_positions[1].tolist() == [1, -1]
    assert episode.actions[:, 0].tolist() == [1, 2, 3] and episode.intervention.tolist() == [False, True, False]
    assert list_episodes(tmp_path) == [path]


def test_partial_episodes_are_invisible_to_readers(tmp_path):
    (tmp_path / "ep9.partial").mkdir()
    (tmp_path / "ep9.partial" / "meta.json").write_text("{}")
    assert list_episodes(tmp_path) == []
    assert [p.name for p in remove_partials(tmp_path)] == ["ep9.partial"]


def test_bad_frames_and_files_are_refused_with_the_episode_and_field(tmp_path):
    writer = EpisodeWriter(tmp_path, _meta())
    with pytest.raises(EpisodeFormatError, match=r"camera 'front' frame is \(4, 4, 3\)"):
        writer.add({"front": np.zeros((4, 4, 3), np.uint8)}, [0, 0], [0, 0], 0.0)
    writer.add({"front": np.zeros((4, 5, 3), np.uint8)}, [0, 0], [0, 0], 0.0)
    path = writer.finish(success=False)
    meta = json.loads((path / "meta.json").read_text())
    meta["length"] = 7
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(EpisodeFormatError, match=r"steps.npz: array 'image_front' has 1 rows, meta.json says length 7"):
        read_episode(path)
    meta["format_version"] = 99
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(EpisodeFormatError, match="format_version 99"):
        read_episode(path)


def test_collect_writes_successful_oracle_demos_for_every_task(tiny_demos):
    episodes = [read_episode(p) for p in list_episodes(tiny_demos)]
    assert sorted({e.meta.task for e in episodes}) == sorted(TASKS)
    assert all(e.meta.success and e.meta.source == "oracle" for e in episodes)
    e = episodes[0]
    assert e.images["wrist"].shape == (len(e), 24, 32, 3)
    # the commanded target leads the measured joints: the arm moves toward what was commanded
    assert np.abs(e.actions[:-1] - e.joint_positions[1:]).mean() < np.abs(e.actions[:-1] - e.joint_positions[:-1]).mean()


def test_dataset_chunks_repeat_the_last_action_past_the_end(tiny_demos):
    data = DemoDataset(tiny_demos, horizon=4, until_success=False)
    last = len(data.episodes[0]) - 1
    row = int(np.nonzero((data.index[:, 0] == 0) & (data.index[:, 1] == last))[0][0])
    batch = data.batch(np.array([row]))
    np.testing.assert_array_equal(batch.actions[0], np.repeat(data.episodes[0].actions[-1:], 4, axis=0))
    assert batch.returns[0] == pytest.approx(1.0)


def test_dataset_ends_demonstrations_at_success_and_holds_the_finishing_action(tiny_demos):
    whole = DemoDataset(tiny_demos, horizon=4, until_success=False)
    data = DemoDataset(tiny_demos, horizon=4)
    press = next(i for i, e in enumerate(data.episodes) if e.meta.task == "press_button")
    e = data.episodes[press]
    done = e.meta.extra["success_step"]  # the first row after the action that pressed the button
    assert done < len(e)  # collect recorded a settle tail, in which the oracle lifts off
    rows = data.index[data.index[:, 0] == press, 1]
    np.testing.assert_array_equal(rows, np.arange(done))  # no sample from the settle tail
    assert len(data) < len(whole)
    row = int(np.nonzero((data.index[:, 0] == press) & (data.index[:, 1] == done - 2))[0][0])
    batch = data.batch(np.array([row]))
    # the chunk holds the pressing action instead of following the lift-off the tail recorded
    np.testing.assert_array_equal(batch.actions[0], e.actions[[done - 2, done - 1, done - 1, done - 1]])
    assert not np.allclose(batch.actions[0, -1], e.actions[min(done + 1, len(e) - 1)])
    assert batch.returns[0] == pytest.approx(0.99)  # one step before the task was done


def test_dataset_uses_episodes_without_success_step_whole_and_refuses_a_bad_one(tiny_demos, tmp_path):
    src = list_episodes(tiny_demos)[0]
    for name, step in (("none", None), ("bad", 10_000)):
        out = tmp_path / name / src.name
        out.mkdir(parents=True)
        (out / "steps.npz").write_bytes((src / "steps.npz").read_bytes())
        meta = json.loads((src / "meta.json").read_text())
        meta["extra"].pop("success_step")
        if step is not None:
            meta["extra"]["success_step"] = step
        (out / "meta.json").write_text(json.dumps(meta))
    data = DemoDataset(tmp_path / "none", horizon=4)
    assert len(data) == len(data.episodes[0])
    with pytest.raises(EpisodeFormatError, match=r"success_step 10000 is outside"):
        DemoDataset(tmp_path / "bad", horizon=4)


def test_several_directories_are_one_dataset(tiny_demos, tmp_path):
    one = DemoDataset(tiny_demos, horizon=4)
    (tmp_path / "empty").mkdir()
    both = DemoDataset([tiny_demos, tiny_demos, tmp_path / "empty"], horizon=4)
    assert len(both.episodes) == 2 * len(one.episodes) and len(both) == 2 * len(one)
    with pytest.raises(FileNotFoundError, match="missing"):
        DemoDataset([tiny_demos, tmp_path / "missing"], horizon=4)


def test_dataset_samples_only_chunks_that_the_arm_executed_as_labelled(tiny_demos, tmp_path):
    # collect --behaviour dart records the oracle's label as the action and what the arm was sent beside it
    e = next(e for e in map(read_episode, list_episodes(tiny_demos)) if e.meta.task == "push_cube_to_pad")
    sent = e.actions.copy()
    sent[3:5, 0] += 0.05  # rows 3 and 4 were sent off their labels
    e.extras["executed_action"] = sent
    write_episode(str(tmp_path), e)
    np.testing.assert_array_equal(read_episode(list_episodes(tmp_path)[0]).executed_as_labelled(),
                                  ~np.isin(np.arange(len(e)), [3, 4]))
    data = DemoDataset(tmp_path, horizon=4)
    # row t's chunk holds the labels of rows t..t+3, whose states rows t..t+2's commands made
    np.testing.assert_array_equal(data.index[:, 1], [0] + list(range(5, e.success_step)))
    assert data.statistics(lambda chunks, joints: chunks)["joint_mean"] == pytest.approx(
        e.joint_positions[data.index[:, 1]].mean(0), abs=1e-5)
    assert len(DemoDataset(tmp_path, horizon=1)) == e.success_step  # a one-step chunk is always its own label
