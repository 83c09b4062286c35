"""A critic over ZeroMQ: ``robot-rl critic-server`` and the :class:`RemoteCritic` client.

One GPU can score for many robots: the server's ROUTER socket takes requests from any number of
clients, scores every request waiting at that moment in one forward pass (up to ``max_batch`` pairs),
and answers each client. Messages use the project's wire format (``robot_rl/transport/wire.py``):
msgpack headers plus raw arrays, no pickle, size-limited, malformed ones answered with an error.

    client -> server  kind "info"                               -> kind "info": cameras, size, instructions
    client -> server  kind "score", requests: [{instruction, batch, references}],
                      arrays "<n>_early_<cam>", "<n>_late_<cam>", "<n>_reference_<cam>"
                                                                -> kind "scores", arrays "<n>_delta", "<n>_done_prob"
                                                                   or kind "error", error: text

The client is a REQ socket with a deadline: when the server does not answer in ``timeout_s`` it
raises :class:`CriticUnavailableError` (saying where it waited and for how long) and opens a fresh
socket, so the next call can succeed once the server is back ("lazy pirate"). Nothing blocks forever.
Transport security: the server speaks plain TCP; keep it on localhost or a trusted network until
the CurveZMQ keys of the learner channel cover it too.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np
import zmq

from robot_rl.reward.base import Critic, CriticError, CriticUnavailableError, PairRequest, PairScores
from robot_rl.transport.wire import WireError, decode, encode

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def request_arrays(requests: list[PairRequest]) -> tuple[list[dict], dict[str, np.ndarray]]:
    specs, arrays = [], {}
    for n, r in enumerate(requests):
        specs.append({"instruction": r.instruction, "batch": r.batch, "references": r.references is not None})
        for cam, a in r.early.items():
            arrays[f"{n}_early_{cam}"] = a
        for cam, a in r.late.items():
            arrays[f"{n}_late_{cam}"] = a
        for cam, a in (r.references or {}).items():
            arrays[f"{n}_reference_{cam}"] = a
    return specs, arrays


def parse_requests(header: dict, arrays: dict[str, np.ndarray]) -> list[PairRequest]:
    specs = header.get("requests")
    if not isinstance(specs, list) or not specs:
        raise WireError("a score message needs a non-empty 'requests' list")
    requests = []
    for n, spec in enumerate(specs):
        if not isinstance(spec, dict) or not isinstance(spec.get("instruction"), str):
            raise WireError(f"request {n} has no instruction string")

        def role(name: str) -> dict[str, np.ndarray]:
            prefix = f"{n}_{name}_"
            return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

        requests.append(PairRequest(role("early"), role("late"), spec["instruction"],
                                    role("reference") if spec.get("references") else None))
    return requests


class CriticServer:
    def __init__(self, critic: Critic, bind: str = "tcp://*:5557", max_batch: int = 64, context: zmq.Context | None = None,
                 log=print):
        self.critic, self.max_batch, self.log = critic, max_batch, log
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        self.socket.setsockopt(zmq.LINGER, 0)
        if bind.endswith(":0") or bind.endswith(":*"):  # pick a free port (tests)
            port = self.socket.bind_to_random_port(bind.rsplit(":", 1)[0])
            self.address = f"{bind.rsplit(':', 1)[0].replace('*', '127.0.0.1')}:{port}"
        else:
            self.socket.bind(bind)
            self.address = bind
        self._stop = threading.Event()
        self.served = {"messages": 0, "pairs": 0, "batches": 0, "errors": 0}

    def info(self) -> dict:
        return {"cameras": list(self.critic.cameras), "image_height": getattr(self.critic, "height", 0),
                "image_width": getattr(self.critic, "width", 0), "reference_frames": getattr(self.critic, "reference_frames", 0),
                "instructions": list(getattr(self.critic, "instructions", [])), "critic": self.critic.describe()}

    def serve_forever(self, poll_ms: int = 100) -> None:
        while not self._stop.is_set():
            if self.socket.poll(poll_ms) == 0:
                continue
            waiting = []
            pairs = 0
            while pairs < self.max_batch:  # every request already waiting, up to max_batch pairs
                try:
                    frames = self.socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                job = self._parse(frames)
                if job is not None:
                    waiting.append(job)
                    pairs += sum(r.batch for r in job[2])
            if waiting:
                self._answer(waiting)

    def _parse(self, frames: list[bytes]):
        identity, body = frames[0], frames[2:] if len(frames) > 1 and frames[1] == b"" else frames[1:]
        try:
            header, arrays = decode(body, MAX_MESSAGE_BYTES)
            if header["kind"] == "info":
                self._reply(identity, encode("info", {"id": header.get("id"), **self.info()}))
                return None
            if header["kind"] != "score":
                raise WireError(f"unknown message kind '{header['kind']}' (expected info or score)")
            return identity, header.get("id"), parse_requests(header, arrays)
        except (WireError, CriticError) as exc:
            self.served["errors"] += 1
            self.log(f"critic-server: rejected a message: {exc}")
            self._reply(identity, encode("error", {"error": str(exc)}))
            return None

    def _answer(self, jobs) -> None:
        everything = [r for _, _, requests in jobs for r in requests]
        try:
            scores = self.critic.score(everything)
        except CriticError:  # one bad request must not fail the others: score them one message at a time
            for job in jobs:
                self._answer_one(job)
            return
        self.served["batches"] += 1
        k = 0
        for identity, msg_id, requests in jobs:
            self._send_scores(identity, msg_id, scores[k:k + len(requests)])
            k += len(requests)

    def _answer_one(self, job) -> None:
        identity, msg_id, requests = job
        try:
            scores = self.critic.score(requests)
        except CriticError as exc:
            self.served["errors"] += 1
            self.log(f"critic-server: request failed: {exc}")
            self._reply(identity, encode("error", {"id": msg_id, "error": str(exc)}))
            return
        self._send_scores(identity, msg_id, scores)

    def _send_scores(self, identity: bytes, msg_id, scores: list[PairScores]) -> None:
        arrays = {}
        for n, s in enumerate(scores):
            arrays[f"{n}_delta"], arrays[f"{n}_done_prob"] = s.delta, s.done_prob
        self.served["messages"] += 1
        self.served["pairs"] += sum(len(s.delta) for s in scores)
        self._reply(identity, encode("scores", {"id": msg_id}, arrays))

    def _reply(self, identity: bytes, frames: list[bytes]) -> None:
        self.socket.send_multipart([identity, b"", *frames])

    def start(self) -> threading.Thread:
        """Serve on a background thread (tests, or a learner that hosts its own critic)."""
        thread = threading.Thread(target=self.serve_forever, name="critic-server", daemon=True)
        thread.start()
        self._thread = thread
        return thread

    def close(self) -> None:
        self._stop.set()
        thread = getattr(self, "_thread", None)
        if thread is not None:
            thread.join(timeout=2.0)
        self.socket.close(0)


class RemoteCritic(Critic):
    def __init__(self, address: str, timeout_s: float = 2.0, context: zmq.Context | None = None):
        self.address, self.timeout_s = address, float(timeout_s)
        self.context = context or zmq.Context.instance()
        self._socket = None
        self._ids = itertools.count()
        info = self._call("info", {}, {})[0]
        self.cameras = list(info["cameras"])
        self.height, self.width = int(info["image_height"]), int(info["image_width"])
        self.reference_frames = int(info["reference_frames"])
        self.instructions = list(info["instructions"])
        self.allow_unseen = False
        self.name = f"remote critic at {address} ({info['critic']})"

    def _connect(self):
        s = self.context.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        s.connect(self.address)
        return s

    def _call(self, kind: str, header: dict, arrays: dict) -> tuple[dict, dict]:
        if self._socket is None:
            self._socket = self._connect()
        msg_id = next(self._ids)
        self._socket.send_multipart(encode(kind, {**header, "id": msg_id}, arrays))
        if self._socket.poll(int(self.timeout_s * 1000)) == 0:
            self._socket.close(0)  # a REQ socket that missed its reply cannot send again: start afresh
            self._socket = None
            raise CriticUnavailableError(f"critic server at {self.address} did not answer within {self.timeout_s:.1f} s "
                                         "(is `robot-rl critic-server` running there?)")
        reply, out = decode(self._socket.recv_multipart(), MAX_MESSAGE_BYTES)
        if reply["kind"] == "error":
            raise CriticError(f"critic server at {self.address}: {reply.get('error')}")
        if reply.get("id") != msg_id:
            raise CriticUnavailableError(f"critic server at {self.address} answered message {reply.get('id')}, expected {msg_id}")
        return reply, out

    def score(self, requests: list[PairRequest]) -> list[PairScores]:
        specs, arrays = request_arrays(requests)
        _, out = self._call("score", {"requests": specs}, arrays)
        return [PairScores(out[f"{n}_delta"].copy(), out[f"{n}_done_prob"].copy()) for n in range(len(requests))]

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(0)
            self._socket = None
