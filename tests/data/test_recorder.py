"""The episode recorder: decisions point at the exact observation their chunk saw."""

import numpy as np

from robot_rl.data.recorder import EpisodeRecorder, RecorderConfig
from robot_rl.data.episodes import episode_arrays
from robot_rl.policy.base import ActionChunk

NAMES = ["a", "b"]


def frame(value):
    return np.full((4, 6, 3), value, np.uint8)


def make():
    return EpisodeRecorder(RecorderConfig(["front"], 6, 4, NAMES, 10.0, max_duration_s=100.0, done_frames=2))


def observe(rec, t, value):
    rec.on_frame("front", t, frame(value))
    rec.on_joints(t, np.array([value, -value], np.float32))


def test_steps_record_who_acted_which_version_which_observation_and_the_reward():
    rec = make()
    rec.start("do it", "", now=0.0)
    observe(rec, 0.0, 10)
    chunk = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    # the chunk arrives in the other joint order: the recorder reorders
    rec.on_chunk(ActionChunk(0.0, 0.1, ["b", "a"], chunk[:, ::-1], version=3))
    observe(rec, 0.1, 11)
    rec.on_reward(0.25, 0.1)
    assert rec.on_executed(chunk[0], "policy", 0.0, now=0.1) is None
    observe(rec, 0.2, 12)
    rec.on_executed(chunk[1], "policy", 0.0, now=0.2)
    observe(rec, 0.3, 13)
    rec.on_executed(np.array([5.0, 5.0]), "teleop", 0.3, now=0.3)
    rec.on_executed(np.array([5.0, 5.0]), "handover", 0.3, now=0.4)
    observe(rec, 0.4, 14)
    rec.on_chunk(ActionChunk(0.4, 0.1, NAMES, chunk + 10, version=4))
    observe(rec, 0.5, 15)
    rec.on_executed(chunk[1] + 10, "policy", 0.4, now=0.5)
    # a command within half a period of the last takes its step (the safety node's timer and a fresh
    # chunk both fired): one step per control period
    rec.on_executed(chunk[2] + 10, "policy", 0.4, now=0.52)  # point 1's time passed too
    assert rec.on_reward(0.5, 0.9) is None
    outcome = rec.on_reward(0.0, 0.8)
    assert outcome.reason == "done" and outcome.success
    episode, outcome = rec.stop("stopped")
    assert outcome.reason == "done" and episode.meta.success
    arr = episode_arrays(episode)
    np.testing.assert_array_equal(arr["policy_version"], [3, 3, -1, -1, 4])
    np.testing.assert_array_equal(arr["obs_step"], [0, 0, -1, -1, 4])
    np.testing.assert_array_equal(arr["chunk_step"], [0, 1, -1, -1, 2])
    np.testing.assert_array_equal(arr["intervention"], [False, False, True, False, False])
    np.testing.assert_allclose(arr["reward"], [0.25, 0, 0, 0, 0.5])  # deltas since the previous step
    # a decision's step holds the observation its chunk was computed from, not the newest frame
    assert arr["image_front"][0, 0, 0, 0] == 10 and arr["image_front"][1, 0, 0, 0] == 12
    assert arr["image_front"][4, 0, 0, 0] == 14 and arr["joint_positions"][4, 0] == 14
    assert episode.meta.extra["intervened_steps"] == 1 and episode.meta.extra["outcome"] == "done"
    assert episode.meta.extra["exploration"] == "step"  # the noise the learner will score (the default)


def test_a_decision_whose_observation_was_lost_is_not_a_decision_and_short_episodes_are_dropped():
    rec = make()
    rec.start("do it", "", now=0.0)
    observe(rec, 1.0, 1)
    rec.on_chunk(ActionChunk(0.5, 0.1, NAMES, np.zeros((2, 2)), version=0))  # frames of 0.5 never arrived
    rec.on_executed(np.zeros(2), "policy", 0.5, now=1.0)
    rec.on_executed(np.zeros(2), "policy", 0.5, now=1.1)
    rec.on_sim_success(True)
    episode, outcome = rec.stop("failure", success=False)
    assert (episode_arrays(episode)["policy_version"] == -1).all() and episode.meta.extra["unmatched_decisions"] == 1
    assert outcome.success and episode.meta.success  # simulator truth is what is reported
    rec.start("again", "", now=2.0)
    observe(rec, 2.0, 2)
    rec.on_executed(np.zeros(2), "policy", 1.0, now=2.0)
    episode, outcome = rec.stop("stopped")
    assert episode is None and outcome.reason == "stopped"  # one step < min_steps: discarded
    rec.start("again", "", now=3.0)
    assert rec.check_time(50.0) is None and rec.check_time(103.0).reason == "time_limit"
