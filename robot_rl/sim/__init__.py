"""Simulated worlds that stand behind the same ROS topics as the hardware.

``tabletop`` is the project's own MuJoCo scene and tasks; ``oracle`` the scripted expert that solves
them; ``gymnasium_world`` puts any image-based gymnasium environment behind the same interface.
"""
