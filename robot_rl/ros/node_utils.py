"""Small helpers every robot_rl node uses: typed parameters, clock seconds, process entry point."""

from __future__ import annotations

import sys
from typing import Any, Callable

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from robot_rl.ros.realtime import apply_realtime_priority, check_priority
from robot_rl.ros.spinning import NodeSpinners


def declare(node: Node, defaults: dict[str, Any]) -> dict[str, Any]:
    """Declare parameters with defaults and return their values, coerced to the defaults' types.

    Parameters are dynamically typed so that ``rate:=30`` is accepted for a float parameter (launch
    substitutions cannot say 30.0); a value that cannot be coerced is an error naming the parameter.
    """
    values = {}
    for name, default in defaults.items():
        value = node.declare_parameter(name, default, ParameterDescriptor(dynamic_typing=True)).value
        values[name] = _coerce(node.get_name(), name, value, default)
    return values


def _coerce(node_name: str, name: str, value: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            raise TypeError
        if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(default, int) and isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(default, str):
            return str(value)
        if isinstance(default, list) and isinstance(value, (list, tuple)):
            return list(value)
        raise TypeError
    except TypeError:
        raise ValueError(
            f"node '{node_name}': parameter '{name}' = {value!r} should be a {type(default).__name__} "
            f"like its default {default!r}"
        ) from None


def now_sec(node: Node) -> float:
    return node.get_clock().now().nanoseconds * 1e-9


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
    """Spin a node until Ctrl-C or shutdown; a configuration error exits non-zero with its message."""
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    code = 0
    try:
        node = factory()
        _realtime([node])
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    except (ValueError, FileNotFoundError) as exc:  # configuration errors: say what and where, then exit
        print(f"[fatal] {exc}", file=sys.stderr, flush=True)
        code = 2
    except Exception:
        if rclpy.ok():  # a real failure while the context is up
            raise
        # SIGTERM or SIGINT shut the context down between two of the executor's waits: rclpy then
        # raises RCLError ("the given context is not valid") from the next wait set instead of
        # ExternalShutdownException. It is the shutdown that was asked for, not a failure (seen once
        # in CI: a safety node stopped by its launcher exited 1).
    finally:
        _close([node] if node is not None else [])
    return code


def _realtime(nodes: list[Node]) -> None:
    """SCHED_FIFO for this process when a node asks for it (its ``realtime_priority`` parameter; the
    highest of the process's nodes wins): after the nodes are built, so the middleware's threads
    exist, and before the executors' threads start, so they inherit it (``ros/realtime.py``). A bad
    value is a configuration error naming the node and the parameter."""
    asking = {}
    for node in nodes:
        if node.has_parameter("realtime_priority"):
            priority = check_priority(node.get_parameter("realtime_priority").value,
                                      f"node '{node.get_name()}': parameter 'realtime_priority'")
            if priority:
                asking[node] = priority
    if asking:
        node = max(asking, key=asking.get)
        logger = node.get_logger()
        apply_realtime_priority(asking[node], info=logger.info, warn=logger.warning)


def _close(nodes: list[Node]) -> None:
    """Release each node's own resources (its ``close()``, if any), destroy it, then shut rclpy down."""
    for node in nodes:
        close = getattr(node, "close", None)
        if close:
            close()
        node.destroy_node()
    if rclpy.ok():
        rclpy.shutdown()


def run_nodes(compose: Callable[[], list[Node]], args: list[str] | None = None) -> int:
    """Spin the nodes ``compose()`` builds in this one process until Ctrl-C, shutdown or an error.

    Each node gets its own single-threaded executor on its own thread (``NodeSpinners``), so one
    node's slow callback (an inference) never delays another's (the safety node's e-stop). An
    exception escaping a callback stops the whole process with that exception, as it would stop a
    node run alone; a configuration error exits non-zero with its message, like :func:`run_node`.
    """
    rclpy.init(args=args if args is not None else sys.argv)
    nodes: list[Node] = []
    spinners = NodeSpinners()
    code = 0
    try:
        nodes = compose()
        _realtime(nodes)
        rclpy.get_default_context().on_shutdown(spinners.stopped.set)
        for node in nodes:
            spinners.add(node)
        while not spinners.stopped.wait(0.2):  # a timeout, so that Ctrl-C reaches this thread
            pass
        if spinners.failures:
            raise spinners.failures[0]
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, FileNotFoundError) as exc:
        print(f"[fatal] {exc}", file=sys.stderr, flush=True)
        code = 2
    finally:
        spinners.shutdown(timeout_s=5.0)
        _close(nodes)
    return code
