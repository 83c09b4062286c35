"""The policy runner under injected inference delay (ROS-free; the node only wires it to topics)."""

import threading
import time

import numpy as np

from robot_rl.policy.base import ActionChunk, Observation, Policy, PolicyConfig
from robot_rl.policy.runner import AsyncPolicyRunner
from robot_rl.policy.scheduler import ActionScheduler

PERIOD = 0.05
NAMES = ["a", "b"]


class SlowPolicy(Policy):
    """Takes ``delay`` seconds per inference; row k of its chunk is the observation stamp + k."""

    def __init__(self, delay):
        super().__init__(PolicyConfig())
        self.delay = delay
        self.calls = 0
        self.in_flight = threading.Event()

    def reset(self, instruction):
        pass

    def act(self, observation):
        self.calls += 1
        self.in_flight.set()
        time.sleep(self.delay)
        self.in_flight.clear()
        rows = np.array([[observation.stamp + k] * 2 for k in range(8)])
        return ActionChunk(observation.stamp, PERIOD, NAMES, rows)


def obs(stamp):
    return Observation(stamp, NAMES, np.zeros(2), "go")


def test_slow_inference_never_blocks_the_control_tick_and_runs_only_when_the_queue_is_low():
    policy = SlowPolicy(delay=0.12)
    runner = AsyncPolicyRunner(policy, ActionScheduler(PERIOD, "latest"), threshold=3)
    published, ticks_during_inference = [], 0
    start = time.time()
    try:
        while time.time() - start < 2.0:
            now = time.time()
            runner.offer(obs(now))  # a fresh frame every period
            chunk = runner.tick(now)
            ticks_during_inference += policy.in_flight.is_set()
            if chunk is not None:
                published.append((now, chunk))
            time.sleep(PERIOD)
    finally:
        runner.close()
    ticks = 2.0 / PERIOD
    assert ticks_during_inference >= 5  # the control loop kept ticking while the model was busy
    assert len(published) >= 0.7 * ticks  # and it published targets nearly every period
    # inference ran when the queue fell below the threshold, not on every frame
    assert 3 <= runner.inferences < 0.5 * ticks
    for now, chunk in published:
        assert chunk.times()[0] > now  # targets whose time has passed were dropped


def test_queue_runs_dry_when_observations_stop_and_reset_clears_it():
    policy = SlowPolicy(delay=0.0)
    runner = AsyncPolicyRunner(policy, ActionScheduler(PERIOD, "latest"), threshold=2)
    try:
        now = time.time()
        runner.offer(obs(now))
        runner.tick(now)
        deadline = time.time() + 2
        while runner.inferences == 0 and time.time() < deadline:
            time.sleep(0.01)
        assert runner.depth(now) == 8
        assert runner.tick(now + 3 * PERIOD).horizon == 5  # the same observation is not used twice
        assert runner.inferences == 1
        assert runner.tick(now + 9 * PERIOD) is None  # no new frames: the queue ran dry, nothing to send
        runner.reset("another task")
        assert runner.depth(now) == 0
    finally:
        runner.close()


def test_a_failing_inference_is_counted_and_the_runner_keeps_going():
    class Broken(SlowPolicy):
        def act(self, observation):
            raise ValueError("camera 'front' frame is (1, 1, 3)")

    runner = AsyncPolicyRunner(Broken(0.0), ActionScheduler(PERIOD), threshold=1)
    try:
        runner.offer(obs(time.time()))
        runner.tick(time.time())
        deadline = time.time() + 2
        while runner.errors == 0 and time.time() < deadline:
            time.sleep(0.01)
        assert runner.errors == 1 and "frame is (1, 1, 3)" in runner.last_error
        assert runner.tick(time.time()) is None and runner.thread.is_alive()
    finally:
        runner.close()
