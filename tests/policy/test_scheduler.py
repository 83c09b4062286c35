import numpy as np
import pytest

from robot_rl.policy.base import ActionChunk
from robot_rl.policy.scheduler import ActionScheduler

P = 0.1
NAMES = ["a", "b"]


def chunk(stamp, values):
    return ActionChunk(stamp, P, NAMES, np.array([[v, -v] for v in values], dtype=float))


def test_latest_replaces_overlapping_slots_and_drops_the_past():
    s = ActionScheduler(P, "latest")
    s.add(chunk(1.0, [1, 2, 3, 4]))  # slots 11..14
    assert s.depth(1.0) == 4
    assert s.next_target(1.0).tolist() == [1, -1]
    s.add(chunk(1.1, [20, 30, 40]))  # slots 12..14 replaced
    assert s.next_target(1.1).tolist() == [20, -20]
    # late: at 1.25 the slot of 1.2 has passed; the next target is the one for 1.3
    assert s.next_target(1.25).tolist() == [30, -30]
    assert s.depth(1.25) == 2


def test_ensemble_weights_the_older_proposal_more():
    s = ActionScheduler(P, "ensemble", decay=1.0)
    s.add(chunk(1.0, [0, 0, 0]))
    s.add(chunk(1.1, [10, 10]))
    w = np.exp(-np.arange(2))
    expected = (w * np.array([0, 10])).sum() / w.sum()
    assert s.next_target(1.1)[0] == pytest.approx(expected)
    assert s.next_target(1.1)[0] < 5.0  # the earlier commitment dominates


def test_slots_follow_the_control_grid_despite_stamp_jitter():
    s = ActionScheduler(P, "ensemble", decay=0.0)
    s.add(chunk(1.003, [1, 1]))
    s.add(chunk(1.098, [3]))  # jittered stamp of the next frame: same slot 12 as the first chunk's row 1
    assert s.target(12)[0] == pytest.approx(2.0)


def test_chunk_view_and_latency_compensation():
    s = ActionScheduler(P, "latest")
    s.add(chunk(2.0, [1, 2, 3]), now=2.15)  # arrives 150 ms late: the target for 2.1 is gone
    view = s.chunk(2.15)
    assert view.positions[:, 0].tolist() == [2, 3] and view.times()[0] == pytest.approx(2.2)


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="unknown chunk merging 'blend'"):
        ActionScheduler(P, "blend")
