"""Episodes up and weights down over real CurveZMQ sockets: delivery, acknowledgement, duplicates,
unknown keys, malformed input, a learner restart and a full spool."""

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from robot_rl.data.episodes import EpisodeMeta, list_episodes, new_episode_id, read_episode
from robot_rl.data.episodes import Episode
from robot_rl.transport.links import EpisodeInbox, EpisodeUplink, WeightsListener, WeightsPublisher
from robot_rl.transport.messages import encode_episode
from robot_rl.transport.security import (ClientKeys, KeyFileError, ServerKeys, generate_keypair, load_keypair,
                                         make_client_socket)
from robot_rl.transport.spool import Spool, SpoolFullError
from robot_rl.transport.wire import decode, encode
from tests.helpers import wait_until

JOINTS = ["a", "b", "c"]


def make_episode(seed: int = 0, length: int = 5, **extras) -> Episode:
    rng = np.random.default_rng(seed)
    meta = EpisodeMeta(new_episode_id("reach_cube", seed), "reach_cube", "reach the red cube", seed, False, "policy",
                       ["front"], 6, 8, JOINTS, 10.0, length)
    return Episode(meta, {"front": rng.integers(0, 255, (length, 6, 8, 3), dtype=np.uint8)},
                   rng.normal(size=(length, 3)).astype(np.float32), rng.normal(size=(length, 3)).astype(np.float32),
                   np.zeros(length, bool), np.arange(length, dtype=np.float64) * 0.1,
                   {"reward": rng.normal(size=length).astype(np.float32), **extras})


@pytest.fixture
def keys(tmp_path):
    """A learner, two allowed robots and one stranger."""
    d = tmp_path / "keys"
    for name in ("learner", "robot1", "robot2", "stranger"):
        generate_keypair(d, name)
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    for name in ("robot1", "robot2"):
        (allowed / f"{name}.key").write_bytes((d / f"{name}.key").read_bytes())
    server = ServerKeys(str(d / "learner.key_secret"), str(allowed))
    client = {n: ClientKeys(str(d / f"{n}.key_secret"), str(d / "learner.key")) for n in ("robot1", "robot2", "stranger")}
    return server, client


def wait_for(predicate, timeout=10.0, what="condition"):
    wait_until(predicate, timeout, what)


def same_episode(a: Episode, b: Episode) -> bool:
    return (a.meta.episode_id == b.meta.episode_id and np.array_equal(a.images["front"], b.images["front"])
            and np.array_equal(a.actions, b.actions) and np.array_equal(a.stamps, b.stamps)
            and np.array_equal(a.extras["reward"], b.extras["reward"]))


def test_keygen_writes_a_private_secret_and_refuses_to_overwrite(tmp_path):
    public, secret = generate_keypair(tmp_path, "robot7")
    assert oct(secret.stat().st_mode & 0o777) == "0o600"
    assert load_keypair(secret)[0] == load_keypair(public.with_suffix(".key_secret"))[0]
    with pytest.raises(FileExistsError, match="--force"):
        generate_keypair(tmp_path, "robot7")
    with pytest.raises(KeyFileError, match="only a public key"):
        load_keypair(public)
    (tmp_path / "bad.key_secret").write_text("not a key")
    with pytest.raises(KeyFileError, match="bad.key_secret"):
        load_keypair(tmp_path / "bad.key_secret")


def test_two_robots_deliver_episodes_that_leave_the_spool_only_when_acknowledged(tmp_path, keys):
    server, client = keys
    inbox = EpisodeInbox("tcp://127.0.0.1:*", server, tmp_path / "inbox").start()
    spools, uplinks, sent = [], [], []
    try:
        for n, robot in enumerate(("robot1", "robot2")):
            spool = Spool(tmp_path / f"spool_{robot}")
            for i in range(3):
                e = make_episode(10 * n + i)
                spool.put(e)
                sent.append(e)
            spools.append(spool)
            uplinks.append(EpisodeUplink(spool, inbox.address, client[robot], robot).start())
        wait_for(lambda: inbox.received == 6 and all(len(s) == 0 for s in spools), what="six acknowledged episodes")
        stored = {p.name: read_episode(p) for p in list_episodes(tmp_path / "inbox")}
        assert all(same_episode(e, stored[e.meta.episode_id]) for e in sent)
        assert inbox.by_robot == {"robot1": 3, "robot2": 3}  # robots named by their allow-listed key file
        assert stored[sent[0].meta.episode_id].meta.extra["robot"] == "robot1"
        # a resend (a robot that crashed before it saw the ack) is acknowledged and not stored twice
        spools[0].put(sent[0])
        uplinks[0].notify()
        wait_for(lambda: uplinks[0].duplicates == 1 and len(spools[0]) == 0, what="duplicate acknowledged")
        assert inbox.received == 6 and len(list_episodes(tmp_path / "inbox")) == 6
    finally:
        for u in uplinks:
            u.close()
        inbox.close()


def test_an_unknown_robot_key_gets_nothing_in_and_nothing_out(tmp_path, keys, caplog):
    server, client = keys
    inbox = EpisodeInbox("tcp://127.0.0.1:*", server, tmp_path / "inbox").start()
    publisher = WeightsPublisher("tcp://127.0.0.1:*", server)
    got = []
    spool = Spool(tmp_path / "spool")
    episode = make_episode(1)
    spool.put(episode)
    uplink = EpisodeUplink(spool, inbox.address, client["stranger"], "stranger", ack_timeout_s=0.5, backoff_s=0.1).start()
    listener = WeightsListener(publisher.address, client["stranger"], lambda v, c, b: got.append(v))
    try:
        with caplog.at_level(logging.WARNING):
            publisher.publish(1, {"x": 1}, b"weights")
            wait_for(lambda: inbox.allow.denied >= 1 and publisher.allow.denied >= 1, what="both handshakes refused")
            time.sleep(1.0)
        assert inbox.received == 0 and got == [] and publisher.subscribers == 0
        assert spool.pending() == [episode.meta.episode_id]  # kept for when the key is allowed
        assert "unknown robot key" in caplog.text
    finally:
        uplink.close()
        listener.close()
        inbox.close()
        publisher.close()


def test_a_learner_restart_loses_nothing(tmp_path, keys):
    server, client = keys
    spool = Spool(tmp_path / "spool")
    first = make_episode(1)
    spool.put(first)
    uplink = EpisodeUplink(spool, "tcp://127.0.0.1:47251", client["robot1"], "robot1", ack_timeout_s=0.5, backoff_s=0.1).start()
    try:
        time.sleep(1.2)  # learner down: the episode waits, the uplink reconnects
        assert spool.pending() == [first.meta.episode_id] and uplink.reconnects >= 1
        inbox = EpisodeInbox("tcp://127.0.0.1:47251", server, tmp_path / "inbox").start()
        wait_for(lambda: len(spool) == 0, what="delivery after the learner came up")
        inbox.close()
        second = make_episode(2)
        spool.put(second)  # the learner is down again
        time.sleep(0.8)
        assert spool.pending() == [second.meta.episode_id]
        inbox = EpisodeInbox("tcp://127.0.0.1:47251", server, tmp_path / "inbox").start()  # restart, same inbox
        wait_for(lambda: len(spool) == 0, what="delivery after the restart")
        assert inbox.known >= {first.meta.episode_id, second.meta.episode_id}
        inbox.close()
    finally:
        uplink.close()


def test_garbage_and_malformed_episodes_are_rejected_with_a_reason_and_the_inbox_keeps_going(tmp_path, keys, caplog):
    server, client = keys
    inbox = EpisodeInbox("tcp://127.0.0.1:*", server, tmp_path / "inbox", max_bytes=200_000).start()
    ctx = zmq.Context()
    sock = make_client_socket(ctx, zmq.DEALER, client["robot1"])
    sock.linger = 0
    sock.connect(inbox.address)

    def ask(frames):
        sock.send_multipart(frames)
        assert sock.poll(5000), "no reply"
        return decode(sock.recv_multipart())[0]

    good = encode_episode(make_episode(3), "robot1")
    bad_action = make_episode(4)
    bad_action.actions[2, 1] = np.nan
    try:
        with caplog.at_level(logging.ERROR):
            assert ask([b"\x00garbage"])["kind"] == "reject"
            truncated = ask([good[0], *[f[: len(f) // 2] for f in good[1:]]])
            assert truncated["kind"] == "reject" and "needs" in truncated["reason"]
            assert "non-finite" in ask(encode_episode(bad_action, "robot1"))["reason"]
            assert "exceeds the limit" in ask(encode_episode(make_episode(5, length=2000), "robot1"))["reason"]
            assert "unknown message kind" in ask(encode("weights", {"episode_id": "x"}))["reason"]
            reply = ask(good)
        assert reply["kind"] == "ack" and not reply["duplicate"]
        assert inbox.rejected == 5 and inbox.received == 1 and len(list_episodes(tmp_path / "inbox")) == 1
        assert "rejected a message from robot robot1" in caplog.text
    finally:
        sock.close()
        ctx.term()
        inbox.close()


def test_a_rejected_episode_is_moved_aside_with_its_reason_never_deleted(tmp_path, keys):
    server, client = keys
    inbox = EpisodeInbox("tcp://127.0.0.1:*", server, tmp_path / "inbox").start()
    spool = Spool(tmp_path / "spool")
    bad = make_episode(6)
    bad.stamps[1] = np.inf
    spool.put(bad)
    uplink = EpisodeUplink(spool, inbox.address, client["robot1"], "robot1").start()
    try:
        wait_for(lambda: uplink.rejected == 1, what="rejection")
        assert spool.pending() == []
        kept = tmp_path / "spool" / "rejected" / bad.meta.episode_id
        assert read_episode(kept).meta.episode_id == bad.meta.episode_id
        assert "non-finite" in (kept.parent / f"{bad.meta.episode_id}.reason.txt").read_text()
    finally:
        uplink.close()
        inbox.close()


def test_weights_reach_every_subscriber_including_late_joiners(tmp_path, keys):
    server, client = keys
    publisher = WeightsPublisher("tcp://127.0.0.1:*", server)
    early, late = [], []
    first = WeightsListener(publisher.address, client["robot1"], lambda v, c, b: early.append((v, c, b)))
    try:
        wait_for(lambda: publisher.subscribers == 1, what="subscriber")
        publisher.publish(3, {"layers": 2}, b"\x01\x02weights-v3")
        wait_for(lambda: early, what="weights v3")
        assert early == [(3, {"layers": 2}, b"\x01\x02weights-v3")]
        second = WeightsListener(publisher.address, client["robot2"], lambda v, c, b: late.append(v))
        wait_for(lambda: late == [3], what="the newest weights for a late joiner")
        publisher.publish(4, {"layers": 2}, b"v4")
        wait_for(lambda: late == [3, 4] and len(early) == 2, what="v4 everywhere")
        assert [v for v, _, _ in early] == [3, 4]  # the repeat of v3 for the late joiner was skipped
        second.close()
    finally:
        first.close()
        publisher.close()


def test_a_full_disk_keeps_episodes_in_memory_until_space_returns(tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=1, max_memory_episodes=2)
    a, b, c = make_episode(1), make_episode(2), make_episode(3)
    spool.put(a)
    spool.put(b)
    assert spool.pending() == sorted([a.meta.episode_id, b.meta.episode_id]) and spool.write_errors >= 2
    assert same_episode(spool.load(a.meta.episode_id), a)
    with pytest.raises(SpoolFullError, match="cannot be kept"):
        spool.put(c)
    spool.max_bytes = None  # space is back: held episodes reach the disk
    assert len(spool.pending()) == 2 and not spool.memory
    assert {p.name for p in list_episodes(tmp_path / "spool")} == {a.meta.episode_id, b.meta.episode_id}


def test_a_write_that_fails_in_the_kernel_leaves_no_partial_episode(tmp_path):
    """A real write error (the file size limit, EFBIG) in a child process: the episode stays in memory."""
    script = f"""
import resource, signal, sys
sys.path.insert(0, {str(Path(__file__).parent.parent.parent)!r})
from tests.transport.test_links import make_episode
from robot_rl.transport.spool import Spool
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
spool = Spool({str(tmp_path / 'spool')!r})
e = make_episode(1, length=50)
spool.put(e)
print(len(spool.memory), spool.write_errors, spool.pending() == [e.meta.episode_id], spool.last_error)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=os.environ)
    assert out.returncode == 0, out.stderr
    held, errors, pending, error = out.stdout.split(" ", 3)
    assert (held, pending) == ("1", "True") and int(errors) >= 1 and "File too large" in error
    assert list((tmp_path / "spool").iterdir()) == []  # no partial directory left behind
