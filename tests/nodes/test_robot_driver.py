"""robot_driver_node over DDS: the ros2_control relay (both controllers, joint-name checks) and the sim arm."""

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from robot_rl.nodes.robot_driver_node import RobotDriverNode
from robot_rl.robots.ros2_control import Ros2ControlAdapter
from robot_rl.ros import qos
from robot_rl.ros.conversions import duration_sec, joint_state_msg
from tests.helpers import wait_until
from tests.nodes.test_nodes import HOME, NAMES, ros  # noqa: F401

CONTROLLER_ORDER = ["gripper", "shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll"]


class FakeControllerManager:
    """What a ros2_control arm shows: joint_state_broadcaster output, and the controllers' command topics."""

    def __init__(self, ros, names):
        self.node = ros(rclpy.create_node("fake_controller_manager"))
        self.names = names
        self.forward, self.trajectories = [], []
        self.node.create_subscription(Float64MultiArray, "/forward_position_controller/commands", self.forward.append, qos.COMMAND)
        self.node.create_subscription(JointTrajectory, "/joint_trajectory_controller/joint_trajectory",
                                      self.trajectories.append, qos.COMMAND)
        self.states = self.node.create_publisher(JointState, "/joint_states", qos.SENSOR_PUB)
        self.node.create_timer(0.05, self.tick)

    def tick(self):
        positions = [0.1 * i for i in range(len(self.names))]
        self.states.publish(joint_state_msg(self.names, positions, stamp=0.0))


def command_pub(ros):
    node = ros(rclpy.create_node("commander"))
    return node.create_publisher(Float64MultiArray, "/robot/command", qos.COMMAND)


def test_forward_position_relay_reorders_to_the_controller_and_refuses_mismatched_arms(ros):  # noqa: F811
    arm = FakeControllerManager(ros, NAMES + ["second_arm_joint"])  # extra joints are fine
    driver = ros(RobotDriverNode(parameter_overrides=[Parameter("robot_type", value="ros2_control"),
                                                      Parameter("controller_joints", value=CONTROLLER_ORDER)]))
    pub = command_pub(ros)
    target = [0.1, 0.2, 0.3, -0.2, 0.5, 0.03]
    wait_until(lambda: driver.adapter.state_error is None, timeout=10, what="joint states checked")
    wait_until(lambda: pub.publish(Float64MultiArray(data=target)) or arm.forward, timeout=10, what="relayed command")
    assert list(arm.forward[-1].data) == pytest.approx([0.03, 0.1, 0.2, 0.3, -0.2, 0.5])
    # a NaN target is refused, not relayed
    before = len(arm.forward)
    pub.publish(Float64MultiArray(data=[0.1, np.nan, 0.3, -0.2, 0.5, 0.03]))
    wait_until(lambda: driver.refused >= 1, timeout=5, what="refusal")
    assert "finite targets" in driver.problem and len(arm.forward) == before
    # the arm now reports other joints: commands stop, the reason names the missing ones
    arm.names = ["joint1", "joint2"]
    wait_until(lambda: driver.adapter.state_error is not None, timeout=5, what="mismatch detected")
    pub.publish(Float64MultiArray(data=target))
    wait_until(lambda: "lacks joints ['shoulder_pan'" in driver.problem, timeout=5, what="not relayed")
    assert len(arm.forward) == before


def test_joint_trajectory_controller_gets_one_point_per_command(ros):  # noqa: F811
    arm = FakeControllerManager(ros, NAMES)
    driver = ros(RobotDriverNode(parameter_overrides=[Parameter("robot_type", value="ros2_control"),
                                                      Parameter("controller", value="joint_trajectory"),
                                                      Parameter("command_period_s", value=0.1)]))
    pub = command_pub(ros)
    wait_until(lambda: driver.adapter.state_error is None, timeout=10, what="joint states checked")
    wait_until(lambda: pub.publish(Float64MultiArray(data=HOME)) or arm.trajectories, timeout=10, what="trajectory")
    msg = arm.trajectories[-1]
    assert list(msg.joint_names) == NAMES and len(msg.points) == 1
    assert list(msg.points[0].positions) == pytest.approx(HOME)
    assert duration_sec(msg.points[0].time_from_start) == pytest.approx(0.1)


def test_sim_arm_driver_publishes_joint_states_and_follows_commands(ros):  # noqa: F811
    ros(RobotDriverNode(parameter_overrides=[Parameter("robot_type", value="sim"), Parameter("rate_hz", value=20.0)]))
    listener = ros(rclpy.create_node("listener"))
    states = []
    listener.create_subscription(JointState, "/joint_states", states.append, qos.SENSOR_SUB)
    pub = command_pub(ros)
    wait_until(lambda: states, timeout=10, what="joint states")
    assert list(states[-1].name) == NAMES
    target = list(HOME)
    target[0] = 0.4
    wait_until(lambda: pub.publish(Float64MultiArray(data=target)) or abs(states[-1].position[0] - 0.4) < 0.02,
               timeout=15, what="the simulated arm reaching the target")


def test_adapter_rejects_controller_joints_of_another_robot():
    with pytest.raises(ValueError, match="'controller_joints'.*must name the same joints"):
        Ros2ControlAdapter(NAMES, "forward_position", ["a", "b"])
    with pytest.raises(ValueError, match="'controller' = 'effort'"):
        Ros2ControlAdapter(NAMES, "effort")
