"""robot_rl: real-robot reinforcement learning on ROS 2.

The package closes the loop camera -> VLA policy -> safety -> robot, with a MuJoCo bridge that speaks
the same topics as the hardware. See README.md for the quick start and docs/ for design notes.
"""

__version__ = "0.1.0"
