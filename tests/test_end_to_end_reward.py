"""End to end with the shipped progress critic: the sim graph plus reward_node (launch argument
reward:=true). A module of its own, like the VLA one: one graph per ROS domain at a time."""

import time

import numpy as np

from robot_rl.graph import SimGraph


def test_reward_node_scores_an_oracle_episode_as_progress_to_done(tmp_path):
    overrides = {"policy": "oracle", "task": "pick_cube", "reward": "true"}
    with open(tmp_path / "nodes.log", "w") as log, SimGraph(overrides, out=log) as g:
        client = g.client
        client.wait_ready(timeout=90)
        client.wait_for(lambda: "/reward/status" in client.rec.status, 30, "/reward/status")
        client.clear_success()
        client.reset()
        reset_at = time.time()
        client.wait_for(lambda: client.rec.success, 30, "the oracle to pick up the cube")
        time.sleep(1.0)  # the settle after success, scored too
        with client.lock:
            episode = [d for t, d in client.rec.progress if t > reset_at + 0.3]  # after the reset's own pairs
        data = np.array(episode)
        assert len(data) >= 5 and np.isfinite(data).all()
        values, done = data[:, 1], data[:, 2]
        assert values[-1] > 0.6, values  # the critic saw the task get done
        assert values[-1] > values[: len(values) // 3].max()  # and the value rose over the episode
        assert done[-1] > 0.5 and done[: len(done) // 3].max() < 0.5, done
    assert g.runner.alive() == []
