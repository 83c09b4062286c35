import numpy as np
import torch

from robot_rl.data.episodes import list_episodes, read_episode
from robot_rl.learn.buffers import DemoBuffer


def _buffer(episode, capacity=200, horizon=4):
    m = episode.meta
    return DemoBuffer(m.cameras, (m.image_height, m.image_width), len(m.joint_names), horizon, capacity)


def test_preloaded_demonstrations_end_where_the_task_was_done(tiny_demos):
    e = next(e for e in map(read_episode, list_episodes(tiny_demos)) if e.meta.task == "press_button")
    done = e.success_step
    assert done < len(e)  # collect recorded a settle tail, in which the oracle lifts off the button
    buffer = _buffer(e)
    assert buffer.add_demonstration(e) == done == len(buffer) == buffer.pinned
    np.testing.assert_array_equal(buffer.joints[:done], e.joint_positions[:done])
    # the last sample's chunk holds only the pressing action: nothing of the lift-off is a target
    np.testing.assert_array_equal(buffer.mask[done - 1], [True, False, False, False])
    np.testing.assert_array_equal(buffer.actions[done - 1, 0], e.actions[done - 1])
    np.testing.assert_array_equal(buffer.mask[done - 3], [True, True, True, False])
    for r in range(done):  # every chunk: the demonstrated commands from its step up to success, no further
        k = min(4, done - r)
        np.testing.assert_array_equal(buffer.mask[r], np.arange(4) < k)
        np.testing.assert_array_equal(buffer.actions[r, :k], e.actions[r:r + k])

    whole = _buffer(e)
    assert whole.add_episode(e, pin=True) == len(e)  # the plain call still takes every step


def test_a_preloaded_chunk_stops_after_a_label_the_arm_was_not_sent(tiny_demos):
    e = next(e for e in map(read_episode, list_episodes(tiny_demos)) if e.meta.task == "push_cube_to_pad")
    sent = e.actions.copy()
    sent[3:5, 1] -= 0.05  # collect --behaviour dart: rows 3 and 4 were sent off the oracle's labels
    e.extras["executed_action"] = sent
    buffer = _buffer(e)
    assert buffer.add_demonstration(e) == e.success_step  # every state is a sample: off target is the point
    # the state after row 3 came from a perturbed command, so no chunk reaches past row 3's label
    np.testing.assert_array_equal(buffer.mask[:7], [[True, True, True, True], [True, True, True, False],
                                                    [True, True, False, False], [True, False, False, False],
                                                    [True, False, False, False], [True, True, True, True],
                                                    [True, True, True, True]])
    np.testing.assert_array_equal(buffer.actions[3, 0], e.actions[3])  # the label, not what was sent


def test_human_steps_fill_behind_the_pinned_demonstrations_and_replace_each_other(tiny_demos):
    e = read_episode(list_episodes(tiny_demos)[0])
    buffer = _buffer(e, capacity=e.success_step + 3)
    pinned = buffer.add_demonstration(e)
    assert buffer.add_episode(e, np.arange(5)) == 5  # 3 free rows, then the oldest human rows go first
    assert len(buffer) == buffer.capacity and buffer.pinned == pinned and buffer.added_human == 5
    np.testing.assert_array_equal(buffer.joints[:pinned], e.joint_positions[:pinned])  # untouched
    np.testing.assert_array_equal(buffer.joints[pinned:], e.joint_positions[[3, 4, 2]])


def test_a_set_share_of_each_demo_batch_comes_from_the_human_steps(tiny_demos):
    demo, other = (read_episode(p) for p in list_episodes(tiny_demos)[:2])
    buffer = _buffer(demo)
    buffer.add_demonstration(demo)
    human = np.arange(3, 8)
    buffer.add_episode(other, human)
    rng = np.random.default_rng(0)
    embed = lambda text: np.zeros(3, np.float32)

    def human_rows(fraction):
        joints = buffer.sample(12, rng, embed, human_fraction=fraction)[1].numpy()
        assert len(joints) == 12
        return sum(any(np.allclose(j, h, atol=1e-6) for h in other.joint_positions[human]) for j in joints)

    assert len(buffer) > 12 and len(buffer) - buffer.pinned == 5
    assert human_rows(0.5) == 6 and human_rows(0.25) == 3
    assert sum(human_rows(0.0) for _ in range(20)) < 20 * 6  # uniform: 5 of the buffer's rows are the human's


def test_object_positions_ride_with_the_demonstrations_and_survive_a_save(tiny_demos, tmp_path):
    demo, other = (read_episode(p) for p in list_episodes(tiny_demos)[:2])
    assert "object_positions" in demo.extras  # robot-rl collect records them in simulation
    buffer = _buffer(demo)
    pinned = buffer.add_demonstration(demo)
    del other.extras["object_positions"]  # a human's steps on a real robot: nobody knows where the cube is
    buffer.add_episode(other, np.arange(3, 8))
    np.testing.assert_array_equal(buffer.object_rows(), np.arange(pinned))
    np.testing.assert_array_equal(buffer.objects[:pinned], demo.extras["object_positions"][:pinned])
    sample = buffer.sample(len(buffer), np.random.default_rng(0), lambda text: np.zeros(3, np.float32),
                           human_fraction=0.5, with_objects=True)
    joints, objects = sample[1].numpy(), sample[-1]
    assert objects.shape == (len(buffer), demo.extras["object_positions"].shape[1])
    human = np.array([any(np.allclose(j, h) for h in other.joint_positions[3:8]) for j in joints])
    assert 0 < human.sum() < len(joints)  # both kinds drawn: the human's rows are NaN, the demonstration's known
    np.testing.assert_array_equal(torch.isnan(objects).any(dim=1).numpy(), human)

    buffer.save(tmp_path / "buffer.npz")
    again = _buffer(demo)
    again.load(tmp_path / "buffer.npz")
    np.testing.assert_array_equal(again.object_rows(), np.arange(pinned))
    np.testing.assert_array_equal(again.objects[:len(again)], buffer.objects[:len(buffer)])
