"""safety_node: merges policy and teleop into the one command the robot executes.

Inputs: ``/policy/trajectory`` (action chunks), ``/teleop/command`` + ``/teleop/engaged``,
``/joint_states``, ``/estop`` (latched until a False message releases it), ``/instruction`` (a new
episode: drop the chunk, hold the measured position).
Outputs: ``/robot/command`` (std_msgs/Float64MultiArray, joint order of the limits file, for a
ros2_control forward position controller or the sim bridge); ``/safety/command``
(sensor_msgs/JointState: the executed command, stamped with the time of the observation it derives
from, ``frame_id`` = who produced it: policy, teleop, hold or estop); ``/safety/status``.

A fresh chunk, teleop command or e-stop is acted on at once; between them a timer at
``control_rate_hz`` plays out the current chunk or holds (after a chunk's last waypoint or a teleop
command it first waits ``timed_command_grace`` of a period longer for the next fresh input). All decisions are made by
:class:`robot_rl.safety.filter.SafetyFilter`.

In ``control_node`` this node shares a process with the policy node, which hands it each chunk by a
call instead of the topic (one DDS hop and two thread wake-ups less between image and command).
"""

from __future__ import annotations

import threading

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from robot_rl.paths import data_path
from robot_rl.ros import qos
from robot_rl.ros.conversions import diagnostics_msg, joint_state_msg, joint_state_positions, msg_to_chunk, to_sec
from robot_rl.ros.node_utils import declare, now_sec, run_node
from robot_rl.ros.realtime import current_fifo_priority
from robot_rl.safety.filter import SafetyConfig, SafetyFilter
from robot_rl.safety.limits import load_robot_limits
from robot_rl.stats import Window

DEFAULTS = {
    "realtime_priority": 0,  # SCHED_FIFO priority of this process's threads, 1-98 (0: off; applied by run_node, ros/realtime.py)
    "robot_limits_file": "",  # default: calibration/sim_arm.yaml of this package
    "control_rate_hz": 10.0,
    "max_observation_age": 0.3,
    "joint_state_timeout": 0.3,
    "teleop_timeout": 0.3,
    "handover_s": 0.5,  # blend this long when control passes between policy and teleop
    # After a command triggered by fresh input (a chunk's last waypoint, a teleop command), the next
    # timed command waits this fraction of a period longer, so input that is a little late replaces
    # it instead of following it by a millisecond (which would double the command rate).
    "timed_command_grace": 0.5,
}


class SafetyNode(Node):
    """``policy_chunks='topic'``: chunks arrive on ``/policy/trajectory`` (a process of its own).
    ``'direct'``: the process also holds the policy node, which hands each chunk to
    :meth:`accept_chunk` by a call (``control_node``); ``/policy/trajectory`` is then not subscribed,
    so a chunk is never applied twice."""

    def __init__(self, policy_chunks: str = "topic", **kwargs) -> None:
        super().__init__("safety", **kwargs)
        if policy_chunks not in ("topic", "direct"):
            raise ValueError(f"SafetyNode: policy_chunks = {policy_chunks!r}: expected 'topic' or 'direct'")
        p = declare(self, DEFAULTS)
        # Callbacks and accept_chunk may run on different threads (control_node): one lock around
        # the filter and the command publisher. Re-entrant, because input callbacks publish commands.
        self.lock = threading.RLock()
        limits = load_robot_limits(p["robot_limits_file"] or data_path("calibration", "sim_arm.yaml"))
        self.filter = SafetyFilter(limits, SafetyConfig(
            max_observation_age=p["max_observation_age"], joint_state_timeout=p["joint_state_timeout"],
            teleop_timeout=p["teleop_timeout"], handover_s=p["handover_s"],
            control_period_s=1.0 / float(p["control_rate_hz"])))
        self.counts = {"policy": 0, "teleop": 0, "hold": 0, "estop": 0}
        self.clamped = 0
        self.rate_limited = 0
        self.last_reason = ""
        self.chunk_age_ms = Window(300)  # observation age of policy chunks when they arrive here
        # Observation stamp -> fresh policy command leaving this node: the loop latency of the graph.
        self.latency_ms = Window(3000)
        self.last_latency_stamp = None
        self.command_pub = self.create_publisher(Float64MultiArray, "/robot/command", qos.COMMAND)
        self.executed_pub = self.create_publisher(JointState, "/safety/command", qos.COMMAND)
        self.status_pub = self.create_publisher(DiagnosticArray, "/safety/status", qos.STATUS)
        self.create_subscription(JointState, "/joint_states", self.on_joints, qos.SENSOR_SUB)
        if policy_chunks == "topic":
            self.create_subscription(JointTrajectory, "/policy/trajectory", self.on_trajectory, qos.COMMAND)
        self.create_subscription(JointState, "/teleop/command", self.on_teleop, qos.COMMAND)
        self.create_subscription(Bool, "/teleop/engaged", self.on_engaged, qos.COMMAND)
        self.create_subscription(Bool, "/estop", self.on_estop, qos.LATCHED)
        self.create_subscription(String, "/instruction", self.on_instruction, qos.LATCHED)
        self.period_ns = int(1e9 / float(p["control_rate_hz"]))
        self.grace = float(p["timed_command_grace"])
        if not 0.0 <= self.grace <= 2.0:
            raise ValueError(f"safety_node parameter 'timed_command_grace' = {self.grace}: expected 0..2 (periods)")
        self.timer = self.create_timer(self.period_ns * 1e-9, self.publish_command)
        self.create_timer(1.0, self.publish_status)
        self.get_logger().info(f"limits from {limits.source}: joints {limits.joint_names}")

    def _warn(self, reason: str | None) -> None:
        if reason:
            self.get_logger().warning(reason, throttle_duration_sec=2.0)

    def on_joints(self, msg: JointState) -> None:
        try:
            names, positions = joint_state_positions(msg, "/joint_states")
        except ValueError as exc:
            return self._warn(str(exc))
        with self.lock:
            self._warn(self.filter.update_joint_state(names, positions, now_sec(self), to_sec(msg.header.stamp) or None))

    def on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            chunk = msg_to_chunk(msg, "/policy/trajectory")
        except ValueError as exc:
            with self.lock:
                self.filter.rejected += 1
            return self._warn(str(exc))
        self.accept_chunk(chunk)

    def accept_chunk(self, chunk) -> None:
        """A policy chunk, from the topic or handed over in-process: checked, then acted on at once."""
        with self.lock:
            now = now_sec(self)
            self.chunk_age_ms.add((now - chunk.stamp) * 1e3)
            reason = self.filter.update_policy(chunk, now)
            if reason:
                return self._warn(reason)
            self.publish_command(event=True)

    def on_teleop(self, msg: JointState) -> None:
        try:
            names, positions = joint_state_positions(msg, "/teleop/command")
        except ValueError as exc:
            return self._warn(str(exc))
        with self.lock:
            self._warn(self.filter.update_teleop(names, positions, now_sec(self), to_sec(msg.header.stamp) or None))
            if self.filter.engaged:
                self.publish_command(event=True)

    def on_instruction(self, msg: String) -> None:
        with self.lock:
            self.filter.new_episode(now_sec(self))
        self.get_logger().info(f"new episode ('{msg.data}'): holding the measured position until the policy acts")

    def on_engaged(self, msg: Bool) -> None:
        with self.lock:
            self.filter.update_engaged(msg.data)

    def on_estop(self, msg: Bool) -> None:
        with self.lock:
            was = self.filter.estop
            self.filter.update_estop(msg.data)
            # (rclpy forbids one call site logging at two severities, hence two calls)
            if self.filter.estop and not was:
                self.get_logger().error("E-STOP LATCHED: holding the measured position")
            elif was and not self.filter.estop:
                self.get_logger().warning("e-stop released: waiting for fresh commands")
            self.publish_command(event=True)

    def publish_command(self, event: bool = False) -> None:
        with self.lock:
            self._publish_command(event)

    def _publish_command(self, event: bool) -> None:
        decision = self.filter.step(now_sec(self))
        self._schedule_next(event, decision)
        if decision.positions is None:
            self.last_reason = decision.reason
            return
        self.command_pub.publish(Float64MultiArray(data=decision.positions.tolist()))
        # The command has left this node: the loop latency ends here, before the record of it below.
        if decision.source == "policy" and decision.stamp != self.last_latency_stamp:
            self.latency_ms.add((now_sec(self) - decision.stamp) * 1e3)
            self.last_latency_stamp = decision.stamp
        self.executed_pub.publish(joint_state_msg(self.filter.joint_names, decision.positions,
                                                  stamp=decision.stamp,
                                                  frame_id="handover" if decision.blended else decision.source))
        self.counts[decision.source] = self.counts.get(decision.source, 0) + 1
        if decision.clamped:
            self.clamped += 1
            self.get_logger().warning(f"clamped to joint limits: {decision.clamped}", throttle_duration_sec=2.0)
        if decision.limited:
            self.rate_limited += 1
        self.last_reason = decision.reason

    def _schedule_next(self, event: bool, decision) -> None:
        """One period to the next timed command, plus the grace when fresh input is due first."""
        period = self.period_ns
        if event and not (decision.source == "policy" and decision.remaining > 0):
            period = int(self.period_ns * (1.0 + self.grace))
        if event or period != self.timer.timer_period_ns:
            self.timer.timer_period_ns = period
            self.timer.reset()

    def publish_status(self) -> None:
        with self.lock:
            self._publish_status()

    def _publish_status(self) -> None:
        f = self.filter
        values = {**{f"commands_{k}": v for k, v in self.counts.items()}, "clamped": self.clamped,
                  "rate_limited": self.rate_limited, **{f"refused_{k}": v for k, v in f.refused.items()},
                  "rejected": f.rejected, "last_rejection": f.last_rejection, "estop": f.estop,
                  "teleop_engaged": f.engaged,
                  "latency_ms_p50": round(self.latency_ms.percentile(50), 3),
                  "latency_ms_p99": round(self.latency_ms.percentile(99), 3),
                  "latency_samples": len(self.latency_ms),
                  "chunk_age_at_receive_ms_p50": round(self.chunk_age_ms.percentile(50), 3),
                  "chunk_age_at_receive_ms_p99": round(self.chunk_age_ms.percentile(99), 3), "mode": f.last.source, "reason": self.last_reason,
                  "sched_fifo_priority": current_fifo_priority()}
        if f.estop:
            level, message = "error", "e-stop latched"
        elif f.last.source in ("hold", "none"):
            level, message = "warn", f"holding: {self.last_reason}"
        else:
            level, message = "ok", f"commanding from {f.last.source}"
        self.status_pub.publish(diagnostics_msg("safety", level, message, values, now_sec(self)))


def main(args=None) -> int:
    return run_node(SafetyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
