import ast
import threading

import numpy as np

from robot_rl.data import npz
from robot_rl.data.episodes import EpisodeMeta, EpisodeWriter, read_episode
from robot_rl.sim.failure_states import FailureStates


def _episode(tmp_path, episode_id="ep1"):
    meta = EpisodeMeta(episode_id=episode_id, task="reach_cube", instruction="reach the red cube", seed=0,
                       success=True, source="teleop", cameras=["front"], image_height=4, image_width=5,
                       joint_names=["a", "b"], control_rate_hz=10.0)
    writer = EpisodeWriter(tmp_path, meta)
    for t in range(6):
        writer.add({"front": np.full((4, 5, 3), t, np.uint8)}, [t, -t], [t + 1, 0], stamp=0.1 * t)
    return writer.finish(success=True)


def test_every_npy_header_is_parsed_under_the_read_lock(tmp_path, monkeypatch):
    """numpy parses .npy headers with ast.literal_eval, which CPython 3.11 cannot run in two threads at once."""
    parses, unlocked = [], []
    real_literal_eval = ast.literal_eval

    def watched_literal_eval(source):
        parses.append(source)
        if not npz.NPZ_READ_LOCK.locked():
            unlocked.append(source)
        return real_literal_eval(source)

    monkeypatch.setattr(ast, "literal_eval", watched_literal_eval)
    read_episode(_episode(tmp_path))
    bank = FailureStates(tmp_path / "bank")
    bank.add({"qpos": np.arange(4.0), "qvel": np.zeros(4)})
    bank.sample()
    assert len(parses) >= 7 and unlocked == []


def test_many_threads_reading_one_episode_all_get_the_whole_episode(tmp_path):
    path = _episode(tmp_path)
    results, errors = [], []

    def reader():
        try:
            for _ in range(20):
                results.append(read_episode(path))
        except Exception as exc:  # noqa: BLE001 - the test reports whatever a reader hit
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 120
    assert all(ep.actions[:, 0].tolist() == [1, 2, 3, 4, 5, 6] and ep.images["front"][5].max() == 5 for ep in results)
