"""The ZeroMQ links between robots and the learner: episodes up, acknowledgements back, weights down.

Robot side:
  :class:`EpisodeUplink`   a thread that sends the spool's episodes (oldest first, ``window`` in
                           flight) over a CURVE DEALER socket and removes each from the spool only
                           when its "ack" arrives. No answer within ``ack_timeout_s``: the socket is
                           closed and reopened (a fresh CURVE handshake) and everything unacknowledged
                           is sent again, after a back-off.
  :class:`WeightsListener` a thread on a CURVE SUB socket that hands each valid "weights" message
                           to a callback (the policy node swaps the weights in).
Learner side:
  :class:`EpisodeInbox`    a thread on a CURVE ROUTER socket: decode and check each episode, write it
                           durably into the inbox directory, then acknowledge; an id it already holds
                           is acknowledged as a duplicate and not written again; anything malformed
                           is answered "reject" with the reason and logged.
  :class:`WeightsPublisher` an XPUB socket: publishes versioned weights and repeats the newest to
                           every subscriber that joins later (a robot that starts after a publish
                           still gets the current weights).

All four authenticate with CurveZMQ (``security.py``): an unknown robot key completes no handshake,
so it can neither deliver episodes nor receive weights.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

import zmq

from robot_rl.data.episodes import EpisodeFormatError, list_episodes, write_episode
from robot_rl.stats import Window
from robot_rl.transport.messages import (MAX_EPISODE_BYTES, MAX_WEIGHTS_BYTES, encode_episode, encode_weights,
                                         episode_from_message, weights_from_message)
from robot_rl.transport.security import (ClientKeys, ServerKeys, make_client_socket, make_server_socket,
                                         start_authenticator)
from robot_rl.transport.spool import Spool
from robot_rl.transport.wire import WireError, decode, encode

log = logging.getLogger("robot_rl.transport")


class EpisodeUplink:
    def __init__(self, spool: Spool, address: str, keys: ClientKeys, robot: str, window: int = 2,
                 ack_timeout_s: float = 10.0, backoff_s: float = 1.0, context: zmq.Context | None = None):
        self.spool, self.address, self.keys, self.robot = spool, address, keys, robot
        self.window, self.ack_timeout, self.backoff = max(1, window), ack_timeout_s, backoff_s
        self.context = context or zmq.Context.instance()
        self.sock: zmq.Socket | None = None
        self.in_flight: dict[str, float] = {}  # episode id -> send time
        self.wake = threading.Event()
        self.running = False
        self.thread: threading.Thread | None = None
        self.sent = self.acked = self.duplicates = self.rejected = self.reconnects = 0
        self.ack_ms = Window(200)
        self.blocked_since = 0.0
        self.last_problem = ""

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "EpisodeUplink":
        self.running = True
        self.thread = threading.Thread(target=self._run, name="episode_uplink", daemon=True)
        self.thread.start()
        return self

    def notify(self) -> None:
        """A new episode is in the spool: send without waiting for the next poll."""
        self.wake.set()

    def close(self, timeout: float = 2.0) -> None:
        self.running = False
        self.wake.set()
        if self.thread:
            self.thread.join(timeout)
        self._close_socket()

    def _open(self) -> None:
        self.sock = make_client_socket(self.context, zmq.DEALER, self.keys)
        self.sock.linger = 0
        self.sock.immediate = True  # queue only to a completed (authenticated) connection
        self.sock.connect(self.address)

    def _close_socket(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    def _reconnect(self, why: str) -> None:
        if why != self.last_problem:
            log.warning("episode uplink to %s: %s; reconnecting (%d episodes stay in the spool)", self.address, why,
                        len(self.spool.pending()))
        self.last_problem = why
        self.reconnects += 1
        self._close_socket()
        self.in_flight.clear()
        self.wake.wait(self.backoff)
        self.wake.clear()
        self._open()

    # -- the loop -------------------------------------------------------------------------------
    def _run(self) -> None:
        self._open()
        while self.running:
            self._send_more()
            if self.sock.poll(100, zmq.POLLIN):
                self._on_reply(self.sock.recv_multipart())
                continue
            now = time.monotonic()
            if self.in_flight and now - min(self.in_flight.values()) > self.ack_timeout:
                self._reconnect(f"no acknowledgement within {self.ack_timeout:.1f} s (learner down, unreachable, "
                                "or it refuses this robot's key)")
            elif self.blocked_since and now - self.blocked_since > self.ack_timeout:
                self.blocked_since = 0.0
                self._reconnect(f"no authenticated connection within {self.ack_timeout:.1f} s (learner down, "
                                "unreachable, or it refuses this robot's key)")
            elif not self.in_flight:
                # waiting for the handshake to finish: look again soon; idle: wait for notify()
                self.wake.wait(0.01 if self.blocked_since else 0.2)
                self.wake.clear()

    def _send_more(self) -> None:
        if len(self.in_flight) >= self.window:
            return
        for eid in self.spool.pending():
            if len(self.in_flight) >= self.window:
                return
            if eid in self.in_flight:
                continue
            try:
                frames = encode_episode(self.spool.load(eid), self.robot)
            except (EpisodeFormatError, OSError, WireError) as exc:
                self.spool.reject(eid, f"unreadable in the spool: {exc}")
                continue
            try:
                self.sock.send_multipart(frames, flags=zmq.NOBLOCK)
            except zmq.Again:  # no authenticated connection (yet)
                self.blocked_since = self.blocked_since or time.monotonic()
                return
            self.blocked_since = 0.0
            self.in_flight[eid] = time.monotonic()
            self.sent += 1

    def _on_reply(self, frames: list[bytes]) -> None:
        try:
            header, _ = decode(frames, max_bytes=64 * 1024)
        except WireError as exc:
            log.error("episode uplink: malformed reply from the learner ignored: %s", exc)
            return
        eid = header.get("episode_id")
        sent = self.in_flight.pop(eid, None) if isinstance(eid, str) else None
        if header["kind"] == "ack" and isinstance(eid, str):
            if sent is not None:
                self.ack_ms.add((time.monotonic() - sent) * 1e3)
            self.spool.acknowledge(eid)
            self.acked += 1
            self.duplicates += bool(header.get("duplicate"))
            self.last_problem = ""
        elif header["kind"] == "reject" and isinstance(eid, str):
            self.rejected += 1
            self.spool.reject(eid, str(header.get("reason")))
        else:
            log.error("episode uplink: unexpected reply %s", {k: header.get(k) for k in ("kind", "episode_id", "reason")})

    def stats(self) -> dict:
        return {"sent": self.sent, "acked": self.acked, "duplicates": self.duplicates, "rejected": self.rejected,
                "reconnects": self.reconnects, "in_flight": len(self.in_flight),
                "ack_ms_p50": self.ack_ms.percentile(50), "ack_ms_p99": self.ack_ms.percentile(99)}


class EpisodeInbox:
    """Learner side: receive, check, store durably, acknowledge. ``on_episode(path)`` runs after each
    new episode is on disk (the learner's queue)."""

    def __init__(self, bind: str, keys: ServerKeys, inbox_dir: str | Path, known_ids: set[str] | None = None,
                 max_bytes: int = MAX_EPISODE_BYTES, on_episode: Callable[[Path], None] | None = None):
        self.dir = Path(inbox_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.on_episode = on_episode
        self.known = set(known_ids or ()) | {p.name for p in list_episodes(self.dir)}
        self.context = zmq.Context()
        self.auth, self.allow = start_authenticator(self.context, keys)
        self.sock = make_server_socket(self.context, zmq.ROUTER, keys)
        self.sock.linger = 0
        self.sock.maxmsgsize = max_bytes + 1024 * 1024  # libzmq drops bigger messages before buffering them
        self.sock.bind(bind)  # "tcp://127.0.0.1:*" picks a free port: see .address
        self.address = self.sock.last_endpoint.decode()
        self.running = False
        self.thread: threading.Thread | None = None
        self.received = self.duplicates = self.rejected = 0
        self.steps = 0
        self.last_rejection = ""
        self.by_robot: dict[str, int] = {}

    def start(self) -> "EpisodeInbox":
        self.running = True
        self.thread = threading.Thread(target=self._run, name="episode_inbox", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        while self.running:
            if not self.sock.poll(100, zmq.POLLIN):
                continue
            frames = self.sock.recv_multipart(copy=False)
            identity, body = frames[0].bytes, frames[1:]
            robot = body[0].get("User-Id") if body else "?"
            self._handle(identity, robot, [f.bytes for f in body])

    def _handle(self, identity: bytes, robot: str, frames: list[bytes]) -> None:
        eid = None
        try:
            header, arrays = decode(frames, max_bytes=self.max_bytes)
            eid = header.get("episode_id") if isinstance(header.get("episode_id"), str) else None
            if header["kind"] != "episode":
                raise WireError(f"unknown message kind '{header['kind']}' on the episode port")
            if eid in self.known:
                self.duplicates += 1
                return self._reply(identity, "ack", eid, duplicate=True)
            episode = episode_from_message(header, arrays)
            episode.meta.extra = {**(episode.meta.extra or {}), "robot": robot, "received": time.time()}
            path = write_episode(self.dir, episode)
        except WireError as exc:
            self.rejected += 1
            self.last_rejection = str(exc)
            log.error("learner inbox: rejected a message from robot %s: %s", robot, exc)
            return self._reply(identity, "reject", eid, reason=str(exc))
        except OSError as exc:  # our disk: do not acknowledge, the robot keeps it and resends
            log.error("learner inbox: cannot store episode %s from robot %s (%s); not acknowledged", eid, robot, exc)
            return
        self.known.add(eid)
        self.received += 1
        self.steps += episode.meta.length
        self.by_robot[robot] = self.by_robot.get(robot, 0) + 1
        self._reply(identity, "ack", eid, duplicate=False)
        if self.on_episode:
            self.on_episode(path)

    def _reply(self, identity: bytes, kind: str, eid: str | None, **fields) -> None:
        self.sock.send_multipart([identity, *encode(kind, {"episode_id": eid, **fields})])

    def close(self) -> None:
        self.running = False
        if self.thread:
            self.thread.join(2.0)
        self.sock.close(linger=0)
        self.auth.stop()
        self.context.term()


class WeightsPublisher:
    def __init__(self, bind: str, keys: ServerKeys):
        self.context = zmq.Context()
        self.auth, self.allow = start_authenticator(self.context, keys)
        self.sock = make_server_socket(self.context, zmq.XPUB, keys)
        self.sock.linger = 0
        self.sock.sndhwm = 4  # a slow robot misses intermediate versions, never blocks the learner
        self.sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscriber's join, not only the first
        self.sock.bind(bind)
        self.address = self.sock.last_endpoint.decode()
        self.lock = threading.Lock()
        self.latest: list[bytes] | None = None
        self.version = -1
        self.published = 0
        self.subscribers = 0
        self.running = True
        self.thread = threading.Thread(target=self._watch_subscriptions, name="weights_xpub", daemon=True)
        self.thread.start()

    def publish(self, version: int, model_config: dict, safetensors_bytes: bytes) -> None:
        frames = encode_weights(version, model_config, safetensors_bytes)
        with self.lock:
            self.latest, self.version = frames, version
            self.sock.send_multipart(frames, copy=False)
            self.published += 1

    def _watch_subscriptions(self) -> None:
        while self.running:
            with self.lock:
                event = self.sock.recv(zmq.NOBLOCK) if self.sock.poll(0, zmq.POLLIN) else None
                if event and event[0] == 1:  # a subscriber joined: it gets the newest weights now
                    self.subscribers += 1
                    if self.latest is not None:
                        self.sock.send_multipart(self.latest, copy=False)
                elif event and event[0] == 0:
                    self.subscribers -= 1
            time.sleep(0.02)

    def close(self) -> None:
        self.running = False
        self.thread.join(2.0)
        self.sock.close(linger=0)
        self.auth.stop()
        self.context.term()


class WeightsListener:
    """Robot side: ``on_weights(version, model_config, safetensors_bytes)`` for each valid message.
    Versions not newer than the last one delivered are skipped (the publisher repeats the newest to
    late joiners). Malformed messages are logged and counted, never delivered."""

    def __init__(self, address: str, keys: ClientKeys, on_weights: Callable[[int, dict, bytes], None],
                 max_bytes: int = MAX_WEIGHTS_BYTES, context: zmq.Context | None = None):
        self.context = context or zmq.Context.instance()
        self.sock = make_client_socket(self.context, zmq.SUB, keys)
        self.sock.linger = 0
        self.sock.maxmsgsize = max_bytes
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(address)
        self.address, self.max_bytes, self.on_weights = address, max_bytes, on_weights
        self.version = -1
        self.received = self.errors = 0
        self.last_error = ""
        self.latency_ms = Window(100)
        self.running = True
        self.thread = threading.Thread(target=self._run, name="weights_listener", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            if not self.sock.poll(100, zmq.POLLIN):
                continue
            frames = self.sock.recv_multipart()
            while self.sock.poll(0, zmq.POLLIN):  # only the newest of what queued up matters
                frames = self.sock.recv_multipart()
            try:
                header, arrays = decode(frames, max_bytes=self.max_bytes)
                version, _, config, blob = weights_from_message(header, arrays)
            except WireError as exc:
                self.errors += 1
                self.last_error = str(exc)
                log.error("weights from %s rejected: %s", self.address, exc)
                continue
            if version <= self.version:
                continue
            self.received += 1
            self.latency_ms.add((time.time() - float(header.get("created", time.time()))) * 1e3)
            try:
                self.on_weights(version, config, blob)
                self.version = version
            except (ValueError, RuntimeError, OSError) as exc:
                self.errors += 1
                self.last_error = str(exc)
                log.error("weights v%d from %s not used: %s", version, self.address, exc)

    def close(self) -> None:
        self.running = False
        self.thread.join(2.0)
        self.sock.close(linger=0)
