"""The critic server and client over a real ZeroMQ socket: round trip, batching, errors, timeout."""

import threading
import time

import numpy as np
import pytest
import zmq

from robot_rl.reward.base import CriticError, CriticUnavailableError, PairRequest, make_critic
from robot_rl.reward.remote import CriticServer
from robot_rl.transport.wire import decode


@pytest.fixture
def server(tiny_critic):
    critic = make_critic(str(tiny_critic))
    srv = CriticServer(critic, "tcp://127.0.0.1:0", log=lambda *_: None)
    srv.start()
    yield srv, critic
    srv.close()


def frames(n, seed):
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 255, (n, 24, 32, 3), dtype=np.uint8) for c in ("front", "wrist")}


def test_remote_scores_equal_local_scores(server):
    srv, local = server
    remote = make_critic(srv.address, timeout_s=5.0)
    assert remote.cameras == local.cameras and remote.instructions == local.instructions
    request = PairRequest(frames(4, 0), frames(4, 1), "pick up the red cube")
    got, want = remote.score([request])[0], local.score([request])[0]
    assert np.allclose(got.delta, want.delta, atol=1e-6) and np.allclose(got.done_prob, want.done_prob, atol=1e-6)
    with pytest.raises(CriticError, match="not one the critic was trained on"):  # the server's error, passed on
        remote.score([PairRequest(frames(1, 0), frames(1, 1), "make me a sandwich")])
    # the client is usable after an error
    assert remote.score([request])[0].delta.shape == (4,)
    remote.close()


def test_many_clients_are_answered_each_with_their_own_pairs(server):
    srv, local = server
    results, errors = {}, []

    def client(k):
        try:
            c = make_critic(srv.address, timeout_s=10.0)
            req = PairRequest(frames(k + 1, k), frames(k + 1, 100 + k), "reach the red cube")
            results[k] = (c.score([req])[0].delta, local.score([req])[0].delta)
            c.close()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(results) == 6
    for k, (got, want) in results.items():
        assert got.shape == (k + 1,) and np.allclose(got, want, atol=1e-6)


def test_malformed_message_gets_an_error_reply_not_a_crash(server):
    srv, _ = server
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(srv.address)
    sock.send_multipart([b"\x93not a map"])
    assert sock.poll(5000)
    header, _ = decode(sock.recv_multipart())
    assert header["kind"] == "error" and "not valid msgpack" in header["error"]
    sock.close(0)
    assert srv.served["errors"] == 1
    assert make_critic(srv.address, timeout_s=5.0).score([PairRequest(frames(1, 0), frames(1, 1), "reach the red cube")])


def test_unreachable_server_times_out_with_a_clear_error():
    ctx = zmq.Context.instance()
    silent = ctx.socket(zmq.ROUTER)  # accepts the connection, never answers
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    start = time.monotonic()
    with pytest.raises(CriticUnavailableError, match=rf"tcp://127.0.0.1:{port} did not answer within 0.3 s"):
        make_critic(f"tcp://127.0.0.1:{port}", timeout_s=0.3)
    assert time.monotonic() - start < 3.0
    silent.close(0)
