"""Camera sources behind one interface: RealSense (pyrealsense2), OpenCV/V4L2, replay of a recording.

``make_camera(CameraConfig.from_dict({...}))`` builds one; vendor libraries are imported only when a
camera of that kind is built, so a machine without pyrealsense2 can still run OpenCV cameras.
"""

from robot_rl.cameras.base import (  # noqa: F401
    Camera, CameraConfig, CameraDisconnected, CameraError, CameraFrame, CameraTimeout, DeviceClock, Intrinsics,
)


def make_camera(config: CameraConfig) -> Camera:
    if config.type == "realsense":
        from robot_rl.cameras.realsense import RealSenseCamera

        return RealSenseCamera(config)
    if config.type == "opencv":
        from robot_rl.cameras.opencv import OpenCVCamera

        return OpenCVCamera(config)
    if config.type == "replay":
        from robot_rl.cameras.replay import ReplayCamera

        return ReplayCamera(config)
    raise ValueError(f"camera type {config.type!r} has no driver; expected realsense, opencv or replay")
