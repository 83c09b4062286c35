"""camera_node: one camera (RealSense, OpenCV/V4L2 or a replayed recording) on the ROS topic contract.

Publishes, with realsense2_camera's names so that either driver can stand in for the other:

- ``/camera/<camera_name>/color/image_raw`` (rgb8) and ``.../color/camera_info``
- ``/camera/<camera_name>/aligned_depth_to_color/image_raw`` (16UC1, millimetres) and its camera_info,
  when ``depth`` is on
- ``/diagnostics``: state, measured rate, frames, drops, stalls, reconnects, last error, once a second

Images are stamped with the exposure time on the host clock (a RealSense's device clock mapped to it)
and carry ``frame_id`` (default ``<camera_name>_color_optical_frame``). ``camera_info`` comes from
``calibration_file`` (a ROS camera_info YAML, e.g. from ``robot-rl calibrate camera``) or, without one,
from the device's factory intrinsics. The capture loop and its recovery are
``robot_rl/cameras/stream.py``: a stalled or unplugged camera is reopened, and publishing resumes.
"""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from robot_rl.cameras import CameraConfig, make_camera
from robot_rl.cameras.base import CameraFrame
from robot_rl.cameras.stream import CameraStream
from robot_rl.ros import qos
from robot_rl.ros.conversions import depth_to_msg, diagnostics_msg, image_to_msg, camera_info_msg
from robot_rl.ros.node_utils import declare, now_sec, run_node
from robot_rl.ros.realtime import current_fifo_priority

DEFAULTS = {
    "realtime_priority": 0,  # SCHED_FIFO priority of this process's threads, 1-98 (0: off; applied by run_node, ros/realtime.py)
    "camera_type": "realsense",  # realsense | opencv | replay
    "camera_name": "front",
    "serial": "",  # realsense: serial number ("" = the only one connected)
    "device": "0",  # opencv: index, /dev/videoN, GStreamer pipeline or URL
    "path": "",  # replay: video file or episode directory
    "loop": True,  # replay: start again at the end
    "width": 640,
    "height": 480,
    "fps": 30.0,
    "depth": False,  # realsense: also publish depth aligned to colour
    "timeout_s": 1.0,  # a read without a frame for this long is a stall
    "reconnect_after": 2,  # stalls in a row before the device is reopened
    "calibration_file": "",  # camera_info YAML; "" = the device's own intrinsics
    "frame_id": "",  # "" = <camera_name>_color_optical_frame
    "diagnostics_period_s": 1.0,
}


def camera_config(p: dict) -> CameraConfig:
    common = {"name": p["camera_name"], "width": p["width"], "height": p["height"], "fps": p["fps"],
              "timeout_s": p["timeout_s"]}
    kind = p["camera_type"]
    specific = {"realsense": {"serial": p["serial"], "depth": p["depth"]},
                "opencv": {"device": p["device"]},
                "replay": {"path": p["path"], "loop": p["loop"]}}.get(kind, {})
    return CameraConfig.from_dict({"type": kind, **common, **specific}, where="camera_node parameter 'camera_type'")


class CameraNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("camera", **kwargs)
        p = declare(self, DEFAULTS)
        self.p = p
        name = p["camera_name"]
        self.frame_id = p["frame_id"] or f"{name}_color_optical_frame"
        self.stamp_source = ""
        self.calibration = None
        if p["calibration_file"]:
            from robot_rl.calibration.camera_info import load_camera_info

            self.calibration, _ = load_camera_info(p["calibration_file"])
            if (self.calibration.width, self.calibration.height) != (p["width"], p["height"]):
                raise ValueError(
                    f"calibration_file {p['calibration_file']}: calibrated at {self.calibration.width}x"
                    f"{self.calibration.height}, the camera is set to {p['width']}x{p['height']}; recalibrate or "
                    "change width/height")
        base = f"/camera/{name}"
        self.image_pub = self.create_publisher(Image, f"{base}/color/image_raw", qos.SENSOR_PUB)
        self.info_pub = self.create_publisher(CameraInfo, f"{base}/color/camera_info", qos.SENSOR_PUB)
        self.depth_pub = self.depth_info_pub = None
        if p["depth"]:
            self.depth_pub = self.create_publisher(Image, f"{base}/aligned_depth_to_color/image_raw", qos.SENSOR_PUB)
            self.depth_info_pub = self.create_publisher(CameraInfo, f"{base}/aligned_depth_to_color/camera_info",
                                                        qos.SENSOR_PUB)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", qos.STATUS)
        self.camera = make_camera(camera_config(p))
        self.stream = CameraStream(self.camera, self.publish_frame, reconnect_after=int(p["reconnect_after"]),
                                   log=lambda m: self.get_logger().warning(m)).start()
        self.create_timer(float(p["diagnostics_period_s"]), self.publish_diagnostics)
        self.get_logger().info(f"camera {name}: {p['camera_type']} at {p['width']}x{p['height']}@{p['fps']:g}")

    def publish_frame(self, frame: CameraFrame) -> None:
        """Called on the capture thread for every frame."""
        self.stamp_source = frame.stamp_source
        self.image_pub.publish(image_to_msg(frame.color, frame.stamp, self.frame_id))
        intrinsics = self.calibration or self.camera.intrinsics()
        info = camera_info_msg(intrinsics, frame.stamp, self.frame_id) if intrinsics else None
        if info is not None:
            self.info_pub.publish(info)
        if self.depth_pub is not None and frame.depth is not None:
            self.depth_pub.publish(depth_to_msg(frame.depth, frame.stamp, self.frame_id))
            if info is not None:
                self.depth_info_pub.publish(info)  # aligned: the colour camera's optics

    def publish_diagnostics(self) -> None:
        stats = self.stream.stats()
        if stats.state == "streaming" and stats.rate_hz >= 0.8 * self.p["fps"]:
            level, message = "ok", f"streaming at {stats.rate_hz:.1f} Hz"
        elif stats.state == "streaming":
            level, message = "warn", f"streaming below rate: {stats.rate_hz:.1f} Hz of {self.p['fps']:g}"
        else:
            level, message = "error", f"{stats.state}: {stats.last_error}"
        values = {k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in stats.as_dict().items()}
        values["stamp_source"] = self.stamp_source
        values["sched_fifo_priority"] = current_fifo_priority()
        self.diagnostics_pub.publish(diagnostics_msg(f"camera_node: {self.p['camera_name']}", level, message, values,
                                                     now_sec(self), hardware_id=self.p["serial"] or self.p["device"]))

    def close(self) -> None:
        self.stream.stop()


def main(args=None) -> int:
    return run_node(CameraNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
