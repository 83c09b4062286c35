"""Scripted behaviours beside the oracle: DART's perturbed oracle, whose labels stay the oracle's."""

import numpy as np

from robot_rl.data.collect import CollectConfig, collect
from robot_rl.data.episodes import list_episodes, read_episode
from robot_rl.sim.behaviours import DartConfig, DartOracle


class _ConstantOracle:
    """Stands in for ScriptedOracle where only the perturbation is under test: always the same target."""

    dt = 0.1

    def __init__(self):
        self.target = np.array([0.1, 0.2, -0.3, 0.4, 0.5, 0.03])
        self.resets = 0

    def reset(self, task):
        self.resets += 1

    def act(self, q, objects):
        return self.target[None].copy()


def _run(dart, steps=200, seed=3):
    dart.reset("push_cube_to_pad", seed)
    return [dart.label_and_command(np.zeros(6), {}) for _ in range(steps)]


def test_dart_labels_are_the_oracles_and_only_the_arm_is_sent_off_target_for_a_while():
    oracle = _ConstantOracle()
    config = DartConfig(scale_range=(1.0, 1.0), joint_noise=0.0)
    rows = _run(DartOracle(oracle, config))
    labels, commands = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    np.testing.assert_array_equal(labels, np.broadcast_to(oracle.target, labels.shape))
    np.testing.assert_array_equal(commands[:, 5], labels[:, 5])  # the gripper is never perturbed
    offset = commands[:, :5] - labels[:, :5]
    biased = np.any(offset != 0, axis=1)
    assert 0.1 < biased.mean() < 0.9  # biased for a while, then released so the oracle can recover
    # a bias is held: within one run of biased steps the offset does not change
    runs = np.flatnonzero(np.diff(biased.astype(int)) != 0) + 1
    for start, stop in zip(runs[biased[runs]], list(runs[~biased[runs]]) + [len(biased)]):
        assert stop - start <= config.bias_steps[1]
        np.testing.assert_array_equal(offset[start:stop], np.broadcast_to(offset[start], offset[start:stop].shape))
    assert 0.02 < np.abs(offset[biased]).mean() < 0.1  # about bias_std rad


def test_dart_is_reproducible_from_the_seed_and_scale_zero_is_the_oracle():
    config = DartConfig(joint_noise=0.01)
    first, again = _run(DartOracle(_ConstantOracle(), config)), _run(DartOracle(_ConstantOracle(), config))
    np.testing.assert_array_equal(np.array([c for _, c in first]), np.array([c for _, c in again]))
    other = _run(DartOracle(_ConstantOracle(), config), seed=4)
    assert not np.array_equal(np.array([c for _, c in first]), np.array([c for _, c in other]))
    clean = _run(DartOracle(_ConstantOracle(), DartConfig(scale_range=(0.0, 0.0))))
    for label, command in clean:
        np.testing.assert_array_equal(label, command)


def test_collect_dart_records_the_label_as_the_action_and_what_the_arm_was_sent(tmp_path):
    summary = collect(CollectConfig(out=str(tmp_path), tasks=["push_cube_to_pad"], episodes=4, seed=5,
                                    image_width=32, image_height=24, behaviour="dart"))
    assert summary["push_cube_to_pad"]["written"] >= 3  # the oracle recovers from its biases
    offsets = []
    for path in list_episodes(str(tmp_path)):
        episode = read_episode(path)
        assert episode.meta.source == "oracle" and episode.meta.extra["behaviour"] == "dart"
        assert episode.meta.success and "success_step" in episode.meta.extra
        sent = episode.extras["executed_action"]
        assert sent.shape == episode.actions.shape
        np.testing.assert_array_equal(sent[:, 5], episode.actions[:, 5])
        offsets.append(np.abs(sent[:, :5] - episode.actions[:, :5]).max())
    assert max(offsets) > 0.02  # some episode was sent well off the oracle's targets
