"""Several rclpy nodes in one process, each spun by its own single-threaded executor on its own thread.

Used where nodes that normally run as separate processes share one (the node tests, ``control_node``,
``robot-rl replay``). Why not one ``MultiThreadedExecutor`` for all of them: in rclpy 9 (Kilted) its dispatch
loop hands a ready subscription to a worker thread and goes straight back to the wait set, which
still reports that subscription ready until the worker has taken the message; so the loop spins,
holding the GIL most of the time, until the worker gets the GIL. On two cores that loop used a
whole core and starved every other Python thread in the process: a camera feeder thread meant to
push 30 frames/s pushed about 6, and a test subscriber received 20% of them. A single-threaded
executor per node never hands work to another thread, and it is how each node runs in production
(``rclpy.spin`` in its own process, ``robot_rl/ros/node_utils.py``).
"""

from __future__ import annotations

import threading

from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node


class NodeSpinners:
    """``add(node)`` starts spinning ``node`` at once; ``shutdown()`` stops every spinner it started.

    ``stopped`` is set when any spinner ends; ``failures`` holds the exceptions that escaped a node's
    callbacks while its context was still up (``run_nodes`` re-raises them; after a shutdown an
    executor may raise anything, which is not a failure). The nodes keep belonging to the caller:
    destroying them (after ``shutdown``) is the caller's job.
    """

    def __init__(self) -> None:
        self._spinners: list[tuple[SingleThreadedExecutor, threading.Thread]] = []
        self.stopped = threading.Event()
        self.failures: list[BaseException] = []

    def add(self, node: Node) -> Node:
        executor = SingleThreadedExecutor(context=node.context)
        executor.add_node(node)
        thread = threading.Thread(target=self._spin, args=(executor,), name=f"spin-{node.get_name()}", daemon=True)
        thread.start()
        self._spinners.append((executor, thread))
        return node

    def _spin(self, executor: SingleThreadedExecutor) -> None:
        try:
            executor.spin()
        except BaseException as exc:  # noqa: BLE001 - recorded for the owner, or the context was shut down
            if executor.context.ok():
                self.failures.append(exc)
        finally:
            self.stopped.set()

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop every executor and wait for its thread to leave its wait set (before the context goes)."""
        for executor, _ in self._spinners:
            executor.shutdown(timeout_sec=timeout_s)
        for _, thread in self._spinners:
            thread.join(timeout=timeout_s)
        self._spinners.clear()
