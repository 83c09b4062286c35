"""Test isolation for the lerobot environment's tests: its own ROS domain, discovery on this machine,
no hub downloads. Set before anything imports rclpy or lerobot."""

import os

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(10 + os.getpid() % 90)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
