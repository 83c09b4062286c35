"""robot-rl replay: a recorded episode through the real policy and reward nodes (DDS, sim time)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from robot_rl.data.episodes import write_episode
from robot_rl.data.replay import ReplayConfig, load_episode, replay
from robot_rl.learn.actor import SimActor
from robot_rl.policy.base import PolicyConfig, make_policy


@pytest.fixture(scope="module")
def policy_episode(tiny_export, tmp_path_factory):
    """An episode the tiny policy itself drove in the simulator (deterministic, one action per chunk)."""
    policy = make_policy(PolicyConfig(type="vla", options={"path": str(tiny_export), "backend": "torch"}))
    m = json.loads((tiny_export / "metadata.json").read_text())
    actor = SimActor(policy, list(m["cameras"]), m["image_width"], m["image_height"], execute_steps=1)
    episode = actor.episode("reach_cube", seed=3, max_steps=25)
    out = tmp_path_factory.mktemp("replay_source")
    return episode, write_episode(out, episode)


def test_replaying_the_policys_own_episode_reproduces_its_actions(policy_episode, tiny_export, tiny_critic, tmp_path):
    episode, path = policy_episode
    report = replay(load_episode(path), ReplayConfig(policy_path=str(tiny_export), backend="torch",
                                                     critic=str(tiny_critic), allow_unseen_instructions=True),
                    tmp_path / "out", log=lambda *_: None)
    assert report["steps"] == len(episode) == 25
    assert report["chunks_received"] == 25, report["missing_steps"]
    # the same model on the same frames and joints: the recorded actions, to float precision
    assert report["first_action"]["all"]["worst_joint_max"] < 1e-4, report["first_action"]
    assert report["first_action"]["human_steps"] == {"steps": 0}
    assert report["open_loop_mae_by_chunk_position"][0] < 1e-4
    # the critic scored the real frames: a value per pair, stamped within the episode
    values = report["critic"]
    assert len(values) >= 10 and all(0 <= v["step"] < 25 for v in values)
    assert all(np.isfinite([v["value"], v["done_prob"]]).all() for v in values)
    saved = json.loads((tmp_path / "out" / "replay.json").read_text())
    assert saved["chunks_received"] == 25 and (tmp_path / "out" / "replay.png").stat().st_size > 10_000


def test_a_different_policy_shows_up_as_action_error(policy_episode, tiny_export, tmp_path):
    """Replaying human-labelled steps: the same frames, but the recorded actions are someone else's."""
    episode, _ = policy_episode
    episode.actions = episode.actions + np.float32(0.2)
    episode.intervention[10:] = True
    report = replay(episode, ReplayConfig(policy_path=str(tiny_export), backend="torch", critic="none"),
                    None, log=lambda *_: None)
    assert report["critic"] == [] and report["chunks_received"] == 25
    assert report["first_action"]["all"]["mae"] == pytest.approx(0.2, abs=1e-3)
    assert report["first_action"]["human_steps"]["steps"] == 15 and report["first_action"]["policy_steps"]["steps"] == 10


def test_replay_command_refuses_what_it_cannot_replay(tmp_path):
    (tmp_path / "lerobot" / "meta").mkdir(parents=True)
    (tmp_path / "lerobot" / "meta" / "info.json").write_text("{}")
    env = {**os.environ, "ROBOT_RL_LEROBOT_PYTHON": str(tmp_path / "no-such-python")}
    for source, reason in [(tmp_path / "absent", "no episode, dataset or bag"),
                           (tmp_path / "lerobot", "no lerobot environment")]:
        done = subprocess.run([sys.executable, "-m", "robot_rl.cli", "replay", str(source)], capture_output=True,
                              text=True, timeout=120, env=env)
        assert done.returncode == 2 and reason in done.stderr, done.stderr
