"""Test isolation: each test run gets its own ROS domain, discovery stays on this machine, MuJoCo
renders offscreen with EGL. Set before anything imports rclpy."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(10 + os.getpid() % 90)
