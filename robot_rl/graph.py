"""Drive a running sim graph from outside: bring up a launch file, reset episodes, watch topics.

Used by ``robot-rl demo``, ``robot-rl bench loop`` and the end-to-end tests. The client is an
ordinary rclpy node in this process; the graph's nodes are separate processes started by the
launch runner, so what is measured is the real multi-process pipeline.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float32MultiArray, Float64MultiArray, String
from std_srvs.srv import Trigger

from robot_rl.launcher import LaunchRunner, parse_launch
from robot_rl.paths import data_path
from robot_rl.ros import qos
from robot_rl.ros.conversions import diagnostics_values, to_sec


@dataclass
class CommandRecord:
    received: float  # wall time the executed command arrived here
    stamp: float  # observation stamp it derives from
    source: str


@dataclass
class Recorder:
    commands: list[CommandRecord] = field(default_factory=list)
    robot_commands: int = 0
    success: bool = False
    success_at: float = 0.0
    status: dict[str, dict[str, str]] = field(default_factory=dict)
    joint_states: JointState | None = None
    # age of each /joint_states message on arrival here (s): one DDS hop of a small message from the
    # sim bridge under the same load, the transport floor that benchmarks compare the pipeline with
    joint_state_ages: list[float] = field(default_factory=list)
    # /reward/progress when a reward node runs: (wall time received, [delta, value, done_prob])
    progress: list[tuple[float, list[float]]] = field(default_factory=list)


class SimGraphClient:
    """A client node attached to a sim graph (one that is already running, or started by ``SimGraph``)."""

    def __init__(self, name: str = "robot_rl_client"):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.rec = Recorder()
        self.lock = threading.Lock()
        n = self.node
        n.create_subscription(JointState, "/safety/command", self._on_executed, qos.COMMAND)
        n.create_subscription(Float64MultiArray, "/robot/command", self._on_robot_command, qos.COMMAND)
        n.create_subscription(Bool, "/sim/success", self._on_success, qos.COMMAND)
        n.create_subscription(JointState, "/joint_states", self._on_joints, qos.SENSOR_SUB)
        n.create_subscription(Float32MultiArray, "/reward/progress", self._on_progress, qos.EVENTS)
        for topic in ("/policy/status", "/safety/status", "/sim/status", "/reward/status"):
            n.create_subscription(DiagnosticArray, topic, lambda m, t=topic: self._on_status(t, m), qos.STATUS)
        self.reset_client = n.create_client(Trigger, "/sim/reset")
        self.estop_pub = n.create_publisher(Bool, "/estop", qos.LATCHED)
        self.instruction_pub = n.create_publisher(String, "/instruction", qos.LATCHED)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(n)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - context shut down while spinning
            pass

    def _on_executed(self, msg: JointState) -> None:
        with self.lock:
            self.rec.commands.append(CommandRecord(time.time(), to_sec(msg.header.stamp), msg.header.frame_id))

    def _on_robot_command(self, msg: Float64MultiArray) -> None:
        with self.lock:
            self.rec.robot_commands += 1

    def _on_success(self, msg: Bool) -> None:
        with self.lock:
            if msg.data and not self.rec.success:
                self.rec.success_at = time.monotonic()
            self.rec.success = self.rec.success or msg.data

    def _on_joints(self, msg: JointState) -> None:
        with self.lock:
            self.rec.joint_states = msg
            if len(self.rec.joint_state_ages) < 100_000:
                self.rec.joint_state_ages.append(time.time() - to_sec(msg.header.stamp))

    def _on_progress(self, msg: Float32MultiArray) -> None:
        with self.lock:
            self.rec.progress.append((time.time(), list(msg.data)))

    def _on_status(self, topic: str, msg: DiagnosticArray) -> None:
        with self.lock:
            self.rec.status[topic] = diagnostics_values(msg)

    # -- actions -------------------------------------------------------------------------------
    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.02)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the sim answers resets and commands flow through the safety node."""
        if not self.reset_client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"/sim/reset not available after {timeout:.0f} s")
        self.wait_for(lambda: self.rec.robot_commands > 0, timeout, "the first /robot/command")

    def reset(self, timeout: float = 10.0) -> str:
        future = self.reset_client.call_async(Trigger.Request())
        self.wait_for(future.done, timeout, "/sim/reset")
        with self.lock:
            self.rec.success = False
        return future.result().message

    def clear_success(self) -> None:
        with self.lock:
            self.rec.success = False

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
        self.thread.join(timeout=2.0)


class SimGraph:
    """Launch file + client: ``with SimGraph({'policy': 'oracle'}) as g: g.client.reset()``."""

    def __init__(self, overrides: dict[str, str] | None = None, launch_file: str | None = None, out=None):
        self.nodes = parse_launch(launch_file or data_path("launch", "sim_launch.yaml"), overrides or {})
        self.runner = LaunchRunner(self.nodes, out=out)
        self.client: SimGraphClient | None = None

    def __enter__(self) -> "SimGraph":
        self.runner.start()
        try:
            self.client = SimGraphClient()
        except Exception:
            self.runner.stop()
            raise
        return self

    def check_alive(self) -> None:
        ended = self.runner.poll()
        if ended is not None:
            raise RuntimeError(f"node '{ended}' of the sim graph exited")

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
        self.runner.stop()
