"""Robot drivers behind one interface: the simulated arm, LeRobot arms (SO-100/SO-101, Koch), and the
ros2_control topic adapter for industrial and research arms (Franka, UR, ...).

``make_robot(RobotConfig.from_dict({...}))`` builds one; vendor libraries load only when asked for.
"""

from robot_rl.robots.base import JointReading, Robot, RobotConfig, RobotError  # noqa: F401


def make_robot(config: RobotConfig) -> Robot:
    if config.type == "sim":
        from robot_rl.robots.sim import SimRobot

        return SimRobot(config)
    if config.type == "lerobot":
        from robot_rl.robots.lerobot import LeRobotArm

        return LeRobotArm(config)
    raise ValueError(f"robot type {config.type!r} has no in-process driver; expected sim or lerobot "
                     "(ros2_control arms are driven through their controllers' topics: robot_driver_node robot_type:=ros2_control)")
