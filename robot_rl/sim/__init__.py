"""Simulated worlds that stand behind the same ROS topics as the hardware.

``tabletop`` is the project's own MuJoCo scene and tasks; ``oracle`` the scripted expert that solves
them; ``gymnasium_world`` puts any image-based gymnasium environment behind the same interface.
"""

import os

# Mesa's CPU rasterizer (llvmpipe, what MUJOCO_GL=egl uses without a GPU) spreads every frame over
# all cores by default. The robot_rl scenes render almost as fast on one thread (two 640x480 cameras:
# 17 ms on one thread, 15 ms on two, 2-core machine), and the other core stays free for the nodes
# that must answer within milliseconds. Only a default: export LP_NUM_THREADS to override it.
os.environ.setdefault("LP_NUM_THREADS", "1")
