"""Label construction and value-curve maths of the progress critic, on hand-made sequences."""

import numpy as np
import pytest

from robot_rl.data.episodes import Episode, EpisodeMeta
from robot_rl.reward.labels import delta_from_values, done_labels, pair_label, progress_targets, value_curve
from robot_rl.reward.shaping import ProgressTracker, RewardConfig, progress_rewards
from robot_rl.sim.tasks import DISTRACTOR_INSTRUCTIONS, unrelated_instructions


def episode(length, success=True, source="oracle", success_step=None, progress=None):
    meta = EpisodeMeta("e", "reach_cube", "reach the red cube", 1, success, source, ["front"], 2, 2, ["j"], 10.0,
                       length=length, extra={"success_step": success_step} if success_step else {})
    extras = {"progress": np.asarray(progress, np.float32)} if progress is not None else {}
    z = np.zeros(length)
    return Episode(meta, {"front": np.zeros((length, 2, 2, 3), np.uint8)}, z[:, None], z[:, None], z.astype(bool), z, extras)


def test_time_labels_are_vlac_remaining_progress_and_reversal_negates():
    ep = episode(10)
    v = progress_targets(ep)
    for i, j in [(0, 5), (2, 9), (7, 8), (0, 9)]:
        assert pair_label(v, i, j) == pytest.approx((j - i) / (10 - i))
        assert pair_label(v, j, i) == pytest.approx(-(j - i) / (10 - i))
    assert pair_label(v, 4, 4) == 0.0


def test_settle_tail_after_success_is_done_and_flat():
    ep = episode(14, success_step=10)
    v = progress_targets(ep)
    assert v[10:] == pytest.approx(1.0)
    assert pair_label(v, 11, 13) == 0.0
    assert pair_label(v, 2, 12) == pytest.approx((10 - 2) / (10 - 2))
    done = done_labels(ep)
    assert (done[:8] == 0).all()  # t < 0.8 T with T = 10
    assert np.isnan(done[8])  # 0.8 T <= t < 0.95 T: unlabelled
    assert (done[10:] == 1).all()


def test_failures_use_measured_progress_or_give_no_progress_label():
    measured = [0.0, 0.2, 0.5, 0.25, 0.25]
    ep = episode(5, success=False, source="scripted", progress=measured)
    v = progress_targets(ep)
    assert pair_label(v, 1, 2) == pytest.approx((0.5 - 0.2) / 0.8)
    assert pair_label(v, 2, 3) == pytest.approx((0.25 - 0.5) / 0.5)  # regression: share of progress lost
    assert (done_labels(ep) == 0).all()
    assert progress_targets(episode(5, success=False, source="policy")) is None


def test_labels_invert_the_value_update_exactly():
    rng = np.random.default_rng(0)
    v = np.concatenate([[0.0], rng.uniform(0, 1, 30)])
    deltas = [delta_from_values(a, b) for a, b in zip(v[:-1], v[1:])]
    assert value_curve(deltas) == pytest.approx(v, abs=1e-9)


def test_value_curve_update_rules():
    assert value_curve([0.5, 0.5, -0.5]) == pytest.approx([0.0, 0.5, 0.75, 0.375])
    values = value_curve(np.random.default_rng(1).uniform(-1, 1, 200))
    assert values.min() >= 0.0 and values.max() <= 1.0


def test_unrelated_prompts_share_no_object_with_the_task():
    assert "press the blue button" in unrelated_instructions("pick_cube")
    assert "reach the red cube" not in unrelated_instructions("pick_cube")  # same object: not unrelated
    assert set(DISTRACTOR_INSTRUCTIONS) <= set(unrelated_instructions("press_button"))


def test_progress_reward_is_potential_shaping_plus_a_debounced_bonus():
    config = RewardConfig(gamma=0.9, shaping_scale=2.0, success_bonus=5.0, done_threshold=0.5, done_frames=2)
    values = np.array([0.0, 0.5, 0.8, 0.9, 0.9])
    rewards, fired = progress_rewards(values, [0.1, 0.7, 0.9, 0.9], config)
    assert fired == 2
    assert rewards[0] == pytest.approx(2.0 * (0.9 * 0.5 - 0.0))
    assert rewards[2] == pytest.approx(2.0 * (0.9 * 0.9 - 0.8) + 5.0)
    assert rewards[3] == 0.0  # the episode is over once done fired
    sparse, _ = progress_rewards(values, [0.1, 0.7, 0.9, 0.9], RewardConfig(shaping_scale=0.0, success_bonus=1.0))
    assert sparse.tolist() == [0.0, 0.0, 1.0, 0.0]
    tracker = ProgressTracker(config)
    outs = [tracker.update(d, p) for d, p in [(0.5, 0.1), (0.6, 0.7), (0.5, 0.9)]]
    assert [o[1] for o in outs] == [False, False, True]
    assert outs[-1][0] == pytest.approx(value_curve([0.5, 0.6, 0.5])[-1])


def test_done_of_an_imperfect_success_follows_its_measured_progress():
    ep = episode(6, success=True, source="scripted", success_step=3, progress=[0.0, 0.5, 1.0, 1.0, 0.9, 0.3])
    done = done_labels(ep)
    assert done[[0, 1, 5]].tolist() == [0, 0, 0] and done[[2, 3]].tolist() == [1, 1]  # drifted off the goal again
    assert np.isnan(done[4])
