"""Thin rclpy nodes: each parses its parameters, wires topics and converts messages; the logic lives
in ROS-free modules (sim/, policy/, safety/). One console script per node."""
