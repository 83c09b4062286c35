"""teleop_node: a human input device as the teleop topics the safety and episode nodes read.

Publishes ``/teleop/engaged`` (std_msgs/Bool, every tick), ``/teleop/command`` (sensor_msgs/JointState,
while engaged: absolute joint targets in the order of the robot limits file), ``/teleop/event``
(std_msgs/String ``success`` | ``failure`` | ``reset``: the operator's marks) and ``/teleop/status``.
Reads ``/joint_states``, ``/safety/command`` (where a take-over starts from), ``/policy/trajectory``
(the policy's proposal, for the simulated human), ``/instruction``, and ``/joy`` (device ``joy``) or
``/sim/object_poses`` and ``/sim/progress`` (device ``scripted``).

``device`` picks one of :func:`robot_rl.teleop.device_types`; its options are the parameters
``<device>.<option>`` (e.g. ``joy.engage_button``), defaults from the device's config dataclass. All
logic is in :mod:`robot_rl.teleop`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray
from rclpy.node import Node
from sensor_msgs.msg import Joy
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float32, String
from trajectory_msgs.msg import JointTrajectory

from robot_rl.paths import data_path
from robot_rl.ros import qos
from robot_rl.ros.conversions import (diagnostics_msg, in_joint_order, joint_state_msg, msg_to_chunk, msg_to_poses,
                                      ordered_joint_positions)
from robot_rl.ros.node_utils import declare, now_sec, run_node
from robot_rl.safety.limits import load_robot_limits
from robot_rl.teleop.base import TeleopContext, TeleopController, device_config_class, device_types, make_device

DEFAULTS = {
    "device": "joy",  # joy | keyboard | spacemouse | leader_arm | scripted
    "robot_limits_file": "",  # default: calibration/sim_arm.yaml of this package
    "control_rate_hz": 10.0,
    "max_lead": 0.3,  # rad a jogged target may run ahead of the measured joints
}


class TeleopNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("teleop", **kwargs)
        p = declare(self, DEFAULTS)
        limits = load_robot_limits(p["robot_limits_file"] or data_path("calibration", "sim_arm.yaml"))
        self.joint_names = list(limits.joint_names)
        kind = p["device"]
        if kind not in device_types():
            raise ValueError(f"teleop_node parameter 'device' = '{kind}': expected one of {device_types()}")
        config_cls = device_config_class(kind)
        fields = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                  for f in dataclasses.fields(config_cls)}
        if "control_rate_hz" in fields:
            fields["control_rate_hz"] = float(p["control_rate_hz"])
        options = {k[len(kind) + 1:]: v for k, v in declare(self, {f"{kind}.{k}": v for k, v in fields.items()}).items()}
        self.device = make_device(kind, self.joint_names, options)
        self.device.connect()
        self.controller = TeleopController(limits, float(p["max_lead"]))
        self.teleop_context = TeleopContext(joint_names=self.joint_names)
        self.chunk = None
        self.events = {e: 0 for e in ("success", "failure", "reset")}
        self.engagements = 0
        self.last_error = ""

        self.command_pub = self.create_publisher(JointState, "/teleop/command", qos.COMMAND)
        self.engaged_pub = self.create_publisher(Bool, "/teleop/engaged", qos.COMMAND)
        self.event_pub = self.create_publisher(String, "/teleop/event", qos.EVENTS)
        self.status_pub = self.create_publisher(DiagnosticArray, "/teleop/status", qos.STATUS)
        self.create_subscription(JointState, "/joint_states", self.on_joints, qos.SENSOR_SUB)
        self.create_subscription(JointState, "/safety/command", self.on_executed, qos.COMMAND)
        self.create_subscription(JointTrajectory, "/policy/trajectory", self.on_trajectory, qos.COMMAND)
        self.create_subscription(String, "/instruction", self.on_instruction, qos.LATCHED)
        if kind == "joy":
            self.create_subscription(Joy, "/joy", self.on_joy, qos.SENSOR_SUB)
        if kind == "scripted":
            self.create_subscription(PoseArray, "/sim/object_poses", self.on_objects, qos.SENSOR_SUB)
            self.create_subscription(Float32, "/sim/progress", self.on_progress, qos.SENSOR_SUB)
        self.create_timer(1.0 / float(p["control_rate_hz"]), self.tick)
        self.create_timer(1.0, self.publish_status)
        hint = getattr(self.device, "help", None)
        self.get_logger().info(f"teleop device '{kind}'" + (f": {hint()}" if hint else ""))

    def _read_joints(self, msg: JointState, topic: str) -> np.ndarray | None:
        try:
            return ordered_joint_positions(msg, self.joint_names, topic)
        except ValueError as exc:
            self.get_logger().warning(str(exc), throttle_duration_sec=2.0)
            return None

    def on_joints(self, msg: JointState) -> None:
        self.teleop_context.measured = self._read_joints(msg, "/joint_states")

    def on_executed(self, msg: JointState) -> None:
        self.teleop_context.executed = self._read_joints(msg, "/safety/command")

    def on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            self.chunk = msg_to_chunk(msg, "/policy/trajectory")
            self.chunk_positions = in_joint_order(self.chunk.joint_names, self.chunk.positions, self.joint_names,
                                                  "/policy/trajectory")
        except ValueError as exc:
            self.chunk = None
            self.get_logger().warning(str(exc), throttle_duration_sec=2.0)

    def on_instruction(self, msg: String) -> None:
        self.teleop_context.instruction, self.teleop_context.new_episode = msg.data, True
        self.chunk = None

    def on_objects(self, msg: PoseArray) -> None:
        from robot_rl.sim.world import OBJECT_ORDER

        try:
            self.teleop_context.objects = msg_to_poses(msg, OBJECT_ORDER, "/sim/object_poses")
        except ValueError as exc:
            self.get_logger().warning(str(exc), throttle_duration_sec=2.0)

    def on_progress(self, msg: Float32) -> None:
        self.teleop_context.progress = float(msg.data)

    def on_joy(self, msg: Joy) -> None:
        self.device.feed(msg.axes, msg.buttons, now_sec(self))

    def _policy_target(self, now: float) -> np.ndarray | None:
        if self.chunk is None:
            return None
        future = np.nonzero(self.chunk.times() > now)[0]
        return self.chunk_positions[future[0]] if future.size else None

    def tick(self) -> None:
        now = now_sec(self)
        self.teleop_context.now = now
        self.teleop_context.policy_target = self._policy_target(now)
        try:
            reading = self.device.read(self.teleop_context)
            out = self.controller.step(reading, self.teleop_context)
        except (OSError, ValueError, KeyError) as exc:
            # A device fault while the human has control: stay engaged and send no command, so the
            # safety node holds the arm still (handing back to the policy the human just stopped would
            # be the wrong default). Not engaged: the policy carries on.
            self.last_error = str(exc)
            self.get_logger().error(f"teleop device: {exc}" + (" (holding the arm)" if self.controller.engaged else ""),
                                    throttle_duration_sec=2.0)
            self.engaged_pub.publish(Bool(data=self.controller.engaged))
            return
        self.last_error = ""
        self.teleop_context.new_episode = False
        if out.engaged_changed:
            self.engagements += out.engaged
            self.get_logger().info("human has control" if out.engaged else "control back to the policy")
        self.engaged_pub.publish(Bool(data=out.engaged))
        if out.positions is not None:
            self.command_pub.publish(joint_state_msg(self.joint_names, out.positions, stamp=now, frame_id="teleop"))
        for event in out.events:
            self.events[event] += 1
            self.event_pub.publish(String(data=event))
            self.get_logger().info(f"operator marked: {event}")

    def publish_status(self) -> None:
        values = {"device": self.device.type_name, "engaged": self.controller.engaged, "engagements": self.engagements,
                  **{f"events_{k}": v for k, v in self.events.items()}, "last_error": self.last_error}
        for name in ("last_drift", "total_interventions"):
            if hasattr(self.device, name):
                values[name] = getattr(self.device, name)
        level = "error" if self.last_error else "ok"
        message = self.last_error or ("human has control" if self.controller.engaged else "policy has control")
        self.status_pub.publish(diagnostics_msg("teleop", level, message, values, now_sec(self)))

    def close(self) -> None:
        self.device.disconnect()


def main(args=None) -> int:
    return run_node(TeleopNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
