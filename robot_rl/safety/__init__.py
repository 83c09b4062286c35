"""Pure safety logic (no ROS): joint limits from calibration files and the command filter that the
safety node wraps. Every command to the robot passes :class:`~robot_rl.safety.filter.SafetyFilter`."""
