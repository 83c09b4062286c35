"""The reward node's logic: sampling at a stride, batching, episode resets, and a critic server that
goes away and comes back."""

import numpy as np
import pytest

from robot_rl.reward.base import CriticError, CriticUnavailableError, make_critic
from robot_rl.reward.remote import CriticServer
from robot_rl.reward.stream import ProgressStream


def offer(stream, t, seed):
    rng = np.random.default_rng(seed)
    frames = {c: rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for c in ("front", "wrist")}
    return stream.offer({"front": t, "wrist": t}, frames)


def test_pairs_at_the_stride_in_batches_and_reset(tiny_critic):
    stream = ProgressStream(make_critic(str(tiny_critic)), stride_s=0.2, max_batch=3)
    assert not offer(stream, 0.0, 0)  # no instruction yet: nothing is sampled
    stream.reset("reach the red cube")
    sampled = [offer(stream, round(0.05 * k, 3), k) for k in range(21)]  # 1 s at 20 Hz
    assert sum(sampled) == 6  # t = 0, 0.2, ..., 1.0
    first, second = stream.process(), stream.process()
    assert len(first) == 3 and len(second) == 2 and not stream.has_work()
    outs = first + second
    assert [o.stamp for o in outs] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert all(np.isfinite([o.delta, o.value, o.done_prob]).all() and 0 <= o.value <= 1 for o in outs)
    offer(stream, 1.2, 99)
    stream.reset("pick up the red cube")  # new episode: pending pairs dropped, value back to 0
    assert not stream.has_work() and stream.tracker.value == 0.0
    with pytest.raises(CriticError, match="not one the critic was trained on"):
        stream.reset("make me a sandwich")
    assert not offer(stream, 2.0, 1)  # refused instruction: nothing is scored


def test_critic_server_outage_loses_no_more_than_the_failed_pairs(tiny_critic):
    local = make_critic(str(tiny_critic))
    # its first pass pays one-off costs (PyTorch's kernels and thread pool): not on the 0.5 s budget below
    # (a loaded CI machine once took longer than that for the first answer)
    still = {c: np.zeros((24, 32, 3), np.uint8) for c in ("front", "wrist")}
    local.score_pair(still, still, "reach the red cube")
    server = CriticServer(local, "tcp://127.0.0.1:0", log=lambda *_: None)
    address = server.address
    server.start()
    stream = ProgressStream(make_critic(address, timeout_s=0.5), stride_s=0.2)
    stream.reset("reach the red cube")
    for k in range(3):
        offer(stream, 0.2 * k, k)
    assert len(stream.process()) == 2
    server.close()
    offer(stream, 0.6, 3)
    with pytest.raises(CriticUnavailableError, match="did not answer within 0.5 s"):
        stream.process()
    assert stream.errors == 1 and not stream.has_work()
    server = CriticServer(local, address, log=lambda *_: None)  # back on the same address
    server.start()
    try:
        offer(stream, 0.8, 4)
        outs = stream.process()
        assert len(outs) == 1 and outs[0].stamp == pytest.approx(0.8)  # spans the gap from 0.6
    finally:
        server.close()
