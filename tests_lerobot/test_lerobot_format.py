"""Episodes <-> LeRobotDataset v3 with lerobot's own classes (run in .venv-lerobot: make test-lerobot).

Round trips real files: the exporter writes with LeRobotDataset.create/add_frame/save_episode, the
importer and these tests read with LeRobotDataset, and a dataset written by lerobot directly (the way
its HIL-SERL recorder writes one) imports too. Damaged datasets are refused with the file and reason.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402

from robot_rl.data.episodes import (Episode, EpisodeMeta, list_episodes, read_episode,  # noqa: E402
                                    write_episode)
from robot_rl.data.lerobot_format import LeRobotFormatError, export_lerobot, import_lerobot  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
H, W = 48, 64


def make_episode(index: int, length: int, extras: bool = True, rate: float = 10.0) -> Episode:
    """An RL episode with smooth images (a moving gradient and a square), interventions and extras."""
    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:H, 0:W]
    frames = {}
    for cam, phase in (("front", 0), ("wrist", 40)):
        stack = []
        for t in range(length):
            # a greenish moving gradient (never red), and a red square that moves down a pixel a step
            img = np.stack([20 + (x + t + phase) % 60, 100 + (2 * y + phase) % 80, (3 * x + 5 * t) % 256], -1)
            img[10 + t % 20:20 + t % 20, 20:34] = [230, 30, 30]
            stack.append(img.astype(np.uint8))
        frames[cam] = np.stack(stack)
    meta = EpisodeMeta(f"20261123-000000.00000000{index}_reach_cube_s{index}_abc{index:03d}", "reach_cube",
                       "reach the red cube", index, index % 2 == 0, "mixed", ["front", "wrist"], H, W, JOINTS, rate,
                       length, extra={"robot": "so101_a", "policy_versions": [3, 4], "outcome": "done"})
    # joints within the SO-101 sim arm's limits (a replayed policy refuses targets far outside them)
    q = np.concatenate([rng.uniform(-0.4, 0.4, (length, len(JOINTS) - 1)), rng.uniform(0.0, 0.04, (length, 1))],
                       axis=1).astype(np.float32)
    extra_arrays = {}
    if extras:
        extra_arrays = {"reward": rng.normal(size=length).astype(np.float32),
                        "policy_version": np.where(np.arange(length) % 5 == 0, -1, 3).astype(np.float32),
                        "done_prob": rng.uniform(size=length).astype(np.float32)}
    return Episode(meta, frames, q, q + 0.01, np.arange(length) % 4 == 1,
                   1.795e9 + np.cumsum(rng.uniform(0.09, 0.11, length)), extra_arrays)


@pytest.fixture
def episodes_dir(tmp_path):
    out = tmp_path / "episodes"
    for i, length in enumerate([23, 17]):
        write_episode(out, make_episode(i, length))
    return out


def assert_same_except_images(a: Episode, b: Episode):
    assert vars(b.meta) == vars(a.meta)
    assert np.array_equal(b.joint_positions, a.joint_positions) and np.array_equal(b.actions, a.actions)
    assert np.array_equal(b.intervention, a.intervention)
    assert np.array_equal(b.stamps, a.stamps)  # float64, to the nanosecond
    assert set(b.extras) == set(a.extras)
    for name in a.extras:
        assert np.array_equal(b.extras[name], a.extras[name]), name


def test_png_round_trip_is_exact_and_lerobot_reads_what_was_written(episodes_dir, tmp_path):
    summary = export_lerobot(episodes_dir, tmp_path / "ds", images="png")
    assert summary["episodes"] == 2 and summary["frames"] == 40

    ds = LeRobotDataset("local/robot_rl", root=tmp_path / "ds", video_backend="pyav")
    assert ds.meta.total_episodes == 2 and len(ds) == 40 and ds.fps == 10
    assert ds.meta.features["observation.state"]["names"] == JOINTS
    item = ds[23]  # the first frame of the second episode
    assert int(item["episode_index"]) == 1 and item["task"] == "reach the red cube"
    original = read_episode(list_episodes(episodes_dir)[1])
    assert np.allclose(item["observation.state"].numpy(), original.joint_positions[0])
    assert bool(item["complementary_info.is_intervention"]) is False and bool(ds[24]["complementary_info.is_intervention"])
    assert bool(ds[22]["next.done"]) and not bool(ds[21]["next.done"])

    back = import_lerobot(tmp_path / "ds", tmp_path / "back")
    for path, episode in zip(list_episodes(episodes_dir), back):
        a = read_episode(path)
        assert_same_except_images(a, episode)
        for cam in a.meta.cameras:
            assert np.array_equal(episode.images[cam], a.images[cam]), cam
    assert len(list_episodes(tmp_path / "back")) == 2


def test_video_round_trip_keeps_everything_but_exact_pixels(episodes_dir, tmp_path):
    export_lerobot(episodes_dir, tmp_path / "ds")  # LeRobot's default: AV1 video
    assert list((tmp_path / "ds" / "videos").rglob("*.mp4"))
    back = import_lerobot(tmp_path / "ds", None)
    for path, episode in zip(list_episodes(episodes_dir), back):
        a = read_episode(path)
        assert_same_except_images(a, episode)
        for cam in a.meta.cameras:
            err = episode.images[cam].astype(np.float64) - a.images[cam]
            psnr = 10 * np.log10(255.0**2 / np.mean(err**2))
            assert psnr > 25.0, (cam, psnr)  # lossy (AV1, CRF 30 at 64x48: 27-35 dB here), but the same scene
            for decoded, original in zip(episode.images[cam], a.images[cam]):
                red = np.argwhere((decoded[..., 0] > 170) & (decoded[..., 1] < 100)).mean(axis=0)
                truth = np.argwhere((original[..., 0] == 230) & (original[..., 1] == 30)).mean(axis=0)
                assert np.abs(red - truth).max() < 1.5, (cam, red, truth)  # and each frame is its own, not a neighbour


def test_optional_arrays_some_episodes_lack_come_back_absent_not_as_nan(tmp_path):
    write_episode(tmp_path / "eps", make_episode(0, 12, extras=True))
    write_episode(tmp_path / "eps", make_episode(1, 9, extras=False))
    export_lerobot(tmp_path / "eps", tmp_path / "ds", images="png")
    first, second = import_lerobot(tmp_path / "ds", None)
    assert set(first.extras) == {"reward", "policy_version", "done_prob"}
    assert second.extras == {}


def test_a_dataset_lerobot_wrote_itself_imports_with_what_it_has(tmp_path):
    """Written the way lerobot's HIL-SERL recorder (gym_manipulator) writes: no side file of ours."""
    features = {"observation.images.front": {"dtype": "video", "shape": (H, W, 3), "names": ["height", "width", "channels"]},
                "observation.state": {"dtype": "float32", "shape": (3,), "names": ["a", "b", "c"]},
                "action": {"dtype": "float32", "shape": (3,), "names": ["a", "b", "c"]},
                "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
                "next.done": {"dtype": "bool", "shape": (1,), "names": None},
                "complementary_info.discrete_penalty": {"dtype": "float32", "shape": (1,), "names": ["discrete_penalty"]}}
    ds = LeRobotDataset.create("local/hil", 15, features, root=tmp_path / "hil", use_videos=True)
    for t in range(12):
        ds.add_frame({"observation.images.front": np.full((H, W, 3), 20 * t % 256, np.uint8),
                      "observation.state": np.full(3, t, np.float32), "action": np.full(3, t + 1, np.float32),
                      "next.reward": np.array([float(t == 11)], np.float32), "next.done": np.array([t == 11]),
                      "complementary_info.discrete_penalty": np.array([0.0], np.float32), "task": "pick the cube"})
    ds.save_episode()
    ds.finalize()

    (episode,) = import_lerobot(tmp_path / "hil", tmp_path / "eps")
    m = episode.meta
    assert (m.instruction, m.source, m.seed, m.control_rate_hz, m.joint_names) == ("pick the cube", "lerobot", -1, 15.0, ["a", "b", "c"])
    assert m.cameras == ["front"] and (m.image_height, m.image_width) == (H, W)
    assert np.array_equal(episode.actions[:, 0], np.arange(1, 13, dtype=np.float32))
    assert episode.extras["reward"][-1] == 1.0 and set(episode.extras) == {"reward", "discrete_penalty"}
    assert np.allclose(np.diff(episode.stamps), 1 / 15, atol=1e-6) and not episode.intervention.any()
    assert read_episode(list_episodes(tmp_path / "eps")[0]).meta.length == 12


def test_damaged_and_foreign_datasets_are_refused_with_the_file_and_the_reason(episodes_dir, tmp_path):
    export_lerobot(episodes_dir, tmp_path / "ds", images="png")

    with pytest.raises(LeRobotFormatError, match="no meta/info.json"):
        import_lerobot(tmp_path / "episodes", None)

    old = tmp_path / "old"
    shutil.copytree(tmp_path / "ds", old)
    info = json.loads((old / "meta" / "info.json").read_text())
    (old / "meta" / "info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(LeRobotFormatError, match=r"codebase_version 'v2.1'.*v3.0"):
        import_lerobot(old, None)

    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "ds", cut)
    (parquet,) = (cut / "data").rglob("*.parquet")
    parquet.write_bytes(parquet.read_bytes()[:200])  # truncated by a full disk or a killed copy
    with pytest.raises(LeRobotFormatError, match=str(cut)):
        import_lerobot(cut, tmp_path / "cut_eps")
    assert not (tmp_path / "cut_eps").exists() or not list_episodes(tmp_path / "cut_eps")

    # the exporter refuses what the format cannot hold, and leaves nothing half-written
    write_episode(tmp_path / "odd", make_episode(5, 6, rate=12.5))
    with pytest.raises(LeRobotFormatError, match="control_rate_hz 12.5"):
        export_lerobot(tmp_path / "odd", tmp_path / "odd_ds")
    assert not (tmp_path / "odd_ds").exists()
    with pytest.raises(LeRobotFormatError, match="already exists"):
        export_lerobot(episodes_dir, tmp_path / "ds")


def test_robot_rl_convert_from_the_main_environment_runs_here(episodes_dir, tmp_path):
    """The user's command: `robot-rl convert to-lerobot` in .venv hands the work to this environment."""
    main_cli = REPO / ".venv" / "bin" / "robot-rl"
    assert main_cli.exists(), "make test-lerobot runs after make setup: the main environment is there"
    env = {**os.environ, "ROBOT_RL_LEROBOT_PYTHON": sys.executable}
    done = subprocess.run([str(main_cli), "convert", "to-lerobot", str(episodes_dir), "--out", str(tmp_path / "ds"),
                           "--images", "png"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["frames"] == 40
    done = subprocess.run([str(main_cli), "convert", "from-lerobot", str(tmp_path / "ds"), "--out", str(tmp_path / "back")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [read_episode(p).meta.episode_id for p in list_episodes(tmp_path / "back")] == \
        [read_episode(p).meta.episode_id for p in list_episodes(episodes_dir)]


def test_robot_rl_replay_takes_a_lerobot_dataset(episodes_dir, tmp_path):
    """The user's first check on real data kept as a LeRobotDataset: replay it through the nodes."""
    export_lerobot(episodes_dir, tmp_path / "ds")
    env = {**os.environ, "ROBOT_RL_LEROBOT_PYTHON": sys.executable, "MUJOCO_GL": "egl",
           "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(10 + os.getpid() % 90)}
    done = subprocess.run([str(REPO / ".venv" / "bin" / "robot-rl"), "replay", str(tmp_path / "ds"), "--episode", "1",
                           "--critic", "none", "--out", str(tmp_path / "replay")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "replay" / "replay.json").read_text())
    assert report["steps"] == 17 and report["chunks_received"] == 17
    assert report["episode"] == read_episode(list_episodes(episodes_dir)[1]).meta.episode_id
    assert report["first_action"]["human_steps"]["steps"] == 4  # steps 1, 5, 9, 13 were the human's
