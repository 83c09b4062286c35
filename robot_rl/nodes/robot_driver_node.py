"""robot_driver_node: a real (or simulated) arm on the topic contract.

``robot_type``:

- ``sim`` / ``lerobot``: an in-process driver (``robot_rl/robots``) read at ``rate_hz``; publishes
  ``/joint_states`` and executes ``/robot/command`` (std_msgs/Float64MultiArray, limits-file order).
- ``ros2_control``: the arm's own controller manager runs the hardware; this node checks its
  ``/joint_states`` against the limits file and relays ``/robot/command`` to the forward position or
  joint trajectory controller (``robot_rl/robots/ros2_control.py``). Nothing is relayed while the joint
  states do not match: the controller keeps its last target, so the arm holds.

A command that is malformed (size, NaN) is refused and logged, never sent. ``/diagnostics`` says
what the driver is doing and the last problem.
"""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from robot_rl.paths import data_path
from robot_rl.robots.base import RobotError
from robot_rl.robots.ros2_control import CONTROLLERS, Ros2ControlAdapter
from robot_rl.ros import qos
from robot_rl.ros.conversions import diagnostics_msg, joint_state_msg, to_duration
from robot_rl.ros.node_utils import declare, now_sec, run_node
from robot_rl.ros.realtime import current_fifo_priority
from robot_rl.safety.limits import load_robot_limits

DEFAULTS = {
    "realtime_priority": 0,  # SCHED_FIFO priority of this process's threads, 1-98 (0: off; applied by run_node, ros/realtime.py)
    "robot_type": "sim",  # sim | lerobot | ros2_control
    "robot_limits_file": "",  # default: calibration/sim_arm.yaml of this package
    "rate_hz": 30.0,  # sim/lerobot: joint state rate
    # lerobot
    "lerobot_robot_type": "so101_follower",
    "port": "/dev/ttyACM0",
    "robot_id": "follower",
    "calibration_dir": "",
    "write_calibration": False,  # motors disagree with lerobot's calibration file: write the file to them
    # ros2_control
    "controller": "forward_position",  # forward_position | joint_trajectory
    "controller_topic": "",  # "" = the controller's default topic
    "controller_joints": [""],  # the controller's joint order ("" = the limits file's)
    "command_period_s": 0.1,  # joint_trajectory: time_from_start of the single point
}


class RobotDriverNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("robot_driver", **kwargs)
        p = declare(self, DEFAULTS)
        self.p = p
        limits = load_robot_limits(p["robot_limits_file"] or data_path("calibration", "sim_arm.yaml"))
        self.joint_names = limits.joint_names
        self.commands = self.refused = 0
        self.problem = ""
        self.robot = self.adapter = None
        self.create_subscription(Float64MultiArray, "/robot/command", self.on_command, qos.COMMAND)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", qos.STATUS)
        if p["robot_type"] == "ros2_control":
            joints = [j for j in p["controller_joints"] if j]
            self.adapter = Ros2ControlAdapter(self.joint_names, p["controller"], joints, limits.source)
            topic = p["controller_topic"] or CONTROLLERS[p["controller"]]
            kind = Float64MultiArray if p["controller"] == "forward_position" else JointTrajectory
            self.controller_pub = self.create_publisher(kind, topic, qos.COMMAND)
            self.create_subscription(JointState, "/joint_states", self.on_joint_states, qos.SENSOR_SUB)
            self.get_logger().info(f"ros2_control: relaying /robot/command to {topic} ({p['controller']})")
        else:
            from robot_rl.robots import RobotConfig, make_robot

            values = {"type": p["robot_type"], "joint_names": list(self.joint_names)}
            if p["robot_type"] == "lerobot":
                values.update(robot_type=p["lerobot_robot_type"], port=p["port"], id=p["robot_id"],
                              calibration_dir=p["calibration_dir"], write_calibration=p["write_calibration"])
            elif p["robot_type"] == "sim":
                values.update(control_rate_hz=p["rate_hz"])
            self.robot = make_robot(RobotConfig.from_dict(values, where="robot_driver_node parameter 'robot_type'"))
            self.robot.connect()
            where = f" {p['lerobot_robot_type']} on {p['port']}" if p["robot_type"] == "lerobot" else ""
            self.get_logger().info(f"{p['robot_type']}{where}: joints {self.joint_names} at {p['rate_hz']} Hz "
                                   f"(limits {limits.source})")
            self.state_pub = self.create_publisher(JointState, "/joint_states", qos.SENSOR_PUB)
            self.create_timer(1.0 / p["rate_hz"], self.publish_state)
        self.create_timer(1.0, self.publish_diagnostics)

    def _problem(self, text: str) -> None:
        self.refused += 1
        self.problem = text
        self.get_logger().warning(text, throttle_duration_sec=2.0)

    def publish_state(self) -> None:
        try:
            reading = self.robot.read()
        except RobotError as exc:
            self.problem = str(exc)
            self.get_logger().error(str(exc), throttle_duration_sec=2.0)
            return
        self.state_pub.publish(joint_state_msg(self.robot.joint_names, reading.positions, reading.velocities,
                                               stamp=reading.stamp))

    def on_joint_states(self, msg: JointState) -> None:
        was = self.adapter.state_error
        error = self.adapter.check_joint_state(list(msg.name))
        if error and error != was:
            self.get_logger().error(error)

    def on_command(self, msg: Float64MultiArray) -> None:
        try:
            if self.robot is not None:
                self.robot.command(list(msg.data))
            else:
                if self.adapter.state_error:
                    return self._problem(f"/robot/command not relayed: {self.adapter.state_error}")
                values = self.adapter.controller_command(list(msg.data))
                if self.p["controller"] == "forward_position":
                    self.controller_pub.publish(Float64MultiArray(data=values))
                else:
                    point = JointTrajectoryPoint(positions=values, time_from_start=to_duration(self.p["command_period_s"]))
                    self.controller_pub.publish(JointTrajectory(joint_names=self.adapter.controller_joints, points=[point]))
        except (RobotError, ValueError) as exc:
            return self._problem(f"/robot/command refused: {exc}")
        self.commands += 1

    def publish_diagnostics(self) -> None:
        state_error = self.adapter.state_error if self.adapter is not None else None
        level = "error" if state_error else ("warn" if self.problem else "ok")
        message = state_error or self.problem or f"{self.p['robot_type']}: {self.commands} commands executed"
        self.diagnostics_pub.publish(diagnostics_msg(
            "robot_driver_node", level, message,
            {"robot_type": self.p["robot_type"], "commands": self.commands, "refused": self.refused,
             "last_problem": self.problem, "sched_fifo_priority": current_fifo_priority()}, now_sec(self)))

    def close(self) -> None:
        if self.robot is not None:
            self.robot.disconnect()


def main(args=None) -> int:
    return run_node(RobotDriverNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
