"""Inference off the control thread (the policy node's ``schedule: queue`` mode).

The control loop calls :meth:`AsyncPolicyRunner.tick` once per control period and publishes what it
returns: the queued future targets, merged by the :class:`ActionScheduler`. When fewer than
``threshold`` future targets are queued, the newest observation is handed to a worker thread; its
chunk joins the scheduler when inference returns, and targets whose time passed meanwhile are dropped.
A slow model therefore never stalls the control stream: it only makes the queue run lower, and if
it runs dry, nothing is published and the safety node holds.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from robot_rl.policy.base import ActionChunk, Observation, Policy
from robot_rl.policy.scheduler import ActionScheduler
from robot_rl.stats import Window


class AsyncPolicyRunner:
    def __init__(self, policy: Policy, scheduler: ActionScheduler, threshold: int = 2,
                 clock: Callable[[], float] = time.time):
        self.policy = policy
        self.scheduler = scheduler
        self.threshold = threshold
        self.clock = clock
        self.lock = threading.Lock()  # scheduler and the observation slot
        self.policy_lock = threading.Lock()  # policy.act vs policy.reset
        self.wake = threading.Event()
        self.latest: Observation | None = None
        self.used_stamp: float | None = None
        self.busy = False
        self.running = True
        self.inference_ms = Window(300)
        self.inferences = 0
        self.errors = 0
        self.last_error = ""
        self.thread = threading.Thread(target=self._work, name="policy_inference", daemon=True)
        self.thread.start()

    def offer(self, observation: Observation) -> None:
        """The newest complete observation (older ones not yet used are simply replaced)."""
        with self.lock:
            self.latest = observation

    def reset(self, instruction: str) -> None:
        """A new episode: wait for an inference in flight, reset the policy, forget queued targets."""
        with self.policy_lock:
            self.policy.reset(instruction)
            with self.lock:
                self.scheduler.reset()
                self.latest = None
                self.used_stamp = None

    def tick(self, now: float) -> ActionChunk | None:
        with self.lock:
            if (not self.busy and self.latest is not None and self.latest.stamp != self.used_stamp
                    and self.scheduler.depth(now) < self.threshold):
                self.busy = True
                self.wake.set()
            return self.scheduler.chunk(now)

    def depth(self, now: float) -> int:
        with self.lock:
            return self.scheduler.depth(now)

    def _work(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            if not self.running:
                return
            with self.lock:
                observation = self.latest
                self.used_stamp = observation.stamp if observation else None
            try:
                if observation is None:  # reset between the request and now
                    continue
                with self.policy_lock:
                    t0 = time.perf_counter()
                    chunk = self.policy.act(observation)
                    self.inference_ms.add((time.perf_counter() - t0) * 1e3)
                with self.lock:
                    self.scheduler.add(chunk, now=self.clock())
                    self.inferences += 1
            except (ValueError, RuntimeError) as exc:  # a bad observation or output: no chunk, keep running
                self.errors += 1
                self.last_error = str(exc)
            finally:
                with self.lock:
                    self.busy = False

    def close(self) -> None:
        self.running = False
        self.wake.set()
        self.thread.join(timeout=2.0)
