"""``robot-rl bench transport``: what the learner link costs, measured on the real sockets.

- **Episode ingest**: robots' spools full of episodes (two 96x96 cameras, ``steps`` steps each) go up
  through ``EpisodeUplink`` -> CurveZMQ -> ``EpisodeInbox`` (validation, fsync'd write) until every
  one is acknowledged; steps/s and MB/s for 1 and 4 robots at once, and the acknowledgement latency
  (send to ack, per episode). Baseline in the same run: writing the same episodes straight to the
  local disk with the same writer (what ingest would cost with no network and no checks). The clock
  starts when the first episode is on the wire (the CurveZMQ handshake is not counted).
- **Weight broadcast**: ``WeightsPublisher`` to 1, 4 and 8 ``WeightsListener`` s (each its own ZeroMQ
  context, as separate robots would be) for the shipped default policy and for a 100 MB model; the
  latency is publish call -> delivery in each listener. Baseline in the same run: the same frames over
  plain (unencrypted, unauthenticated) PUB/SUB, so the ratio is the price of CurveZMQ.

All on localhost: network bandwidth is not in these numbers, the protocol's and encryption's costs are.
"""

from __future__ import annotations

import json
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from robot_rl.data.episodes import EpisodeMeta, episode_from_arrays, new_episode_id, write_episode
from robot_rl.stats import summarise


def synthetic_episode(steps: int, rng: np.random.Generator, size: int = 96) -> object:
    joints = ["j0", "j1", "j2", "j3", "j4", "gripper"]
    meta = EpisodeMeta(new_episode_id("bench", 0), "bench", "bench the link", 0, False, "rl", ["front", "wrist"], size, size,
                       joints, 10.0, length=steps)
    arrays = {f"image_{c}": rng.integers(0, 255, (steps, size, size, 3), dtype=np.uint8) for c in meta.cameras}
    arrays.update(joint_positions=rng.normal(size=(steps, 6)).astype(np.float32),
                  action=rng.normal(size=(steps, 6)).astype(np.float32), intervention=np.zeros(steps, bool),
                  stamp=np.arange(steps) * 0.1, policy_version=np.zeros(steps, np.float32),
                  obs_step=np.arange(steps, dtype=np.float32), chunk_step=np.zeros(steps, np.float32),
                  reward=np.zeros(steps, np.float32))
    return episode_from_arrays(meta, arrays)


def _keys(root: Path, robots: int):
    from robot_rl.transport.security import ClientKeys, ServerKeys, generate_keypair

    generate_keypair(root, "learner")
    (root / "allowed").mkdir()
    clients = []
    for i in range(robots):
        generate_keypair(root, f"robot{i}")
        (root / "allowed" / f"robot{i}.key").write_bytes((root / f"robot{i}.key").read_bytes())
        clients.append(ClientKeys(str(root / f"robot{i}.key_secret"), str(root / "learner.key")))
    return ServerKeys(str(root / "learner.key_secret"), str(root / "allowed")), clients


def bench_ingest(root: Path, robots: int, episodes: int, steps: int, rng) -> dict:
    from robot_rl.transport.links import EpisodeInbox, EpisodeUplink
    from robot_rl.transport.spool import Spool

    server, clients = _keys(root / "keys", robots)
    inbox = EpisodeInbox("tcp://127.0.0.1:*", server, root / "inbox").start()
    uplinks = []
    try:
        for i, keys in enumerate(clients):
            spool = Spool(root / f"spool{i}")
            for _ in range(episodes):
                spool.put(synthetic_episode(steps, rng))
            uplinks.append(EpisodeUplink(spool, inbox.address, keys, f"robot{i}", context=zmq.Context()))
        total = robots * episodes
        nbytes = sum(p.stat().st_size for p in (root).glob("spool*/*/*") if p.is_file())
        for u in uplinks:
            u.start()
        while not any(u.sent for u in uplinks):  # the clock starts with the first episode on the wire
            time.sleep(0.0005)
        t0 = time.perf_counter()
        while sum(u.acked for u in uplinks) < total:
            if time.perf_counter() - t0 > 600:
                raise TimeoutError(f"ingest: {sum(u.acked for u in uplinks)} of {total} acknowledged after 600 s")
            time.sleep(0.005)
        seconds = time.perf_counter() - t0
        acks = [v for u in uplinks for v in u.ack_ms.samples]
    finally:
        for u in uplinks:
            u.close()
        inbox.close()
    return {"robots": robots, "episodes": total, "steps_per_episode": steps, "seconds": round(seconds, 3),
            "steps_per_s": round(total * steps / seconds, 1), "mb_per_s": round(nbytes / seconds / 1e6, 1),
            "ack_latency_ms": summarise(acks)}


def bench_disk_baseline(root: Path, episodes: int, steps: int, rng) -> dict:
    eps = [synthetic_episode(steps, rng) for _ in range(episodes)]
    t0 = time.perf_counter()
    for e in eps:
        write_episode(root / "disk", e)
    seconds = time.perf_counter() - t0
    return {"episodes": episodes, "seconds": round(seconds, 3), "steps_per_s": round(episodes * steps / seconds, 1)}


def _deliveries(publish, listeners_done, n: int, trials: int) -> list[float]:
    latencies = []
    for version in range(1, trials + 1):
        t0 = time.perf_counter()
        publish(version)
        got = listeners_done(version, t0)
        if len(got) < n:
            raise TimeoutError(f"weights v{version} reached {len(got)} of {n} listeners")
        latencies += got
    return latencies


def bench_broadcast_curve(root: Path, n: int, config: dict, blob: bytes, trials: int) -> list[float]:
    from robot_rl.transport.links import WeightsListener, WeightsPublisher

    server, clients = _keys(root / f"keys_b{n}_{len(blob)}", n)
    publisher = WeightsPublisher("tcp://127.0.0.1:*", server)
    arrivals: list[dict] = [dict() for _ in range(n)]
    listeners = []
    try:
        for i, keys in enumerate(clients):
            listeners.append(WeightsListener(publisher.address, keys,
                                             lambda v, c, b, i=i: arrivals[i].__setitem__(v, time.perf_counter()),
                                             context=zmq.Context()))
        deadline = time.time() + 30
        while publisher.subscribers < n and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)

        def done(version, t0):
            end = time.time() + 60
            while time.time() < end and not all(version in a for a in arrivals):
                time.sleep(0.001)
            return [(a[version] - t0) * 1e3 for a in arrivals if version in a]

        return _deliveries(lambda v: publisher.publish(v, config, blob), done, n, trials)
    finally:
        for listener in listeners:
            listener.close()
        publisher.close()


def bench_broadcast_plain(n: int, config: dict, blob: bytes, trials: int) -> list[float]:
    """The same frames over unencrypted PUB/SUB: the baseline."""
    from robot_rl.transport.messages import encode_weights
    from robot_rl.transport.wire import decode

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.bind("tcp://127.0.0.1:*")
    address = pub.last_endpoint.decode()
    arrivals: list[dict] = [dict() for _ in range(n)]
    running = True

    def listen(i):
        sub = zmq.Context().socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(address)
        arrivals[i]["ready"] = True
        while running:
            if sub.poll(100):
                header, _ = decode(sub.recv_multipart())
                arrivals[i][header["version"]] = time.perf_counter()
        sub.close(linger=0)

    threads = [threading.Thread(target=listen, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # PUB drops what it sends before subscriptions arrive

    def done(version, t0):
        end = time.time() + 60
        while time.time() < end and not all(version in a for a in arrivals):
            time.sleep(0.001)
        return [(a[version] - t0) * 1e3 for a in arrivals if version in a]

    try:
        return _deliveries(lambda v: pub.send_multipart(encode_weights(v, config, blob), copy=False), done, n, trials)
    finally:
        running = False
        for t in threads:
            t.join(2)
        pub.close(linger=0)
        ctx.term()


def bench_transport(json_path: str, quick: bool = False, echo=print) -> dict:
    from safetensors.numpy import save

    from robot_rl.learn.learner import load_start_policy, state_bytes
    from robot_rl.paths import data_path

    rng = np.random.default_rng(0)
    episodes, steps, trials = (3, 30, 2) if quick else (10, 100, 5)
    fan_out = (1, 4) if quick else (1, 4, 8)
    model, _ = load_start_policy(str(data_path("policies", "sim_default")))
    config = model.config.to_dict()
    models = {"default": state_bytes(model),
              "100MB": save({"weight": np.zeros(25_000_000 if not quick else 2_500_000, np.float32)})}
    result = {"machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count(),
                          "zmq": zmq.zmq_version(), "pyzmq": zmq.__version__},
              "quick": quick, "ingest": [], "broadcast": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        result["ingest_disk_baseline"] = bench_disk_baseline(root, episodes, steps, rng)
        for robots in (1, 4):
            r = bench_ingest(root / f"ingest{robots}", robots, episodes, steps, rng)
            r["ratio_to_disk"] = round(r["steps_per_s"] / result["ingest_disk_baseline"]["steps_per_s"], 3)
            result["ingest"].append(r)
            echo(f"ingest, {robots} robot(s): {r['steps_per_s']:.0f} steps/s ({r['mb_per_s']} MB/s), ack p50 "
                 f"{r['ack_latency_ms']['p50']:.1f} ms p99 {r['ack_latency_ms']['p99']:.1f} ms "
                 f"({r['ratio_to_disk']:.2f}x the local-disk baseline)")
        for name, blob in models.items():
            for n in fan_out:
                curve = summarise(bench_broadcast_curve(root, n, config, blob, trials))
                plain = summarise(bench_broadcast_plain(n, config, blob, trials))
                row = {"model": name, "megabytes": round(len(blob) / 1e6, 2), "subscribers": n, "curve_ms": curve,
                       "plain_ms": plain, "curve_over_plain_p50": round(curve["p50"] / max(plain["p50"], 1e-9), 2)}
                result["broadcast"].append(row)
                echo(f"weights {name} ({row['megabytes']} MB) to {n}: p50 {curve['p50']:.1f} ms p99 {curve['p99']:.1f} ms "
                     f"(plain PUB/SUB p50 {plain['p50']:.1f} ms, {row['curve_over_plain_p50']}x)")
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps(result, indent=2))
    return result
