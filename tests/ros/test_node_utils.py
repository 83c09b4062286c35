"""run_node: how a node process ends. A shutdown is a clean exit however it reaches the executor; a
failure while the context is up is not swallowed."""

import pytest
import rclpy
from rclpy.node import Node

from robot_rl.ros.node_utils import run_node


def test_a_shutdown_between_the_executors_waits_exits_cleanly(monkeypatch):
    def spin_into_a_shut_down_context(node):
        rclpy.shutdown()  # what rclpy's SIGTERM handler does, here between two waits of the executor
        # what rclpy then raises from the next wait set (a safety node stopped by its launcher, CI)
        raise RuntimeError("failed to initialize wait set: the given context is not valid, either rcl_init() "
                           "was not called or rcl_shutdown() was called.")

    monkeypatch.setattr(rclpy, "spin", spin_into_a_shut_down_context)
    closed = []

    class Probe(Node):
        def close(self):
            closed.append(True)

    assert run_node(lambda: Probe("shutdown_race_probe"), []) == 0
    assert closed == [True] and not rclpy.ok()


def test_a_failure_while_the_context_is_up_still_raises_and_closes_the_node(monkeypatch):
    def spin_that_fails(node):
        raise RuntimeError("a callback failed")

    monkeypatch.setattr(rclpy, "spin", spin_that_fails)
    with pytest.raises(RuntimeError, match="a callback failed"):
        run_node(lambda: Node("failure_probe"), [])
    assert not rclpy.ok()  # the context was shut down on the way out
