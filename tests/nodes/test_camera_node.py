"""camera_node over DDS with a RealSense that is librealsense's software_device: topics, camera_info, recovery."""

import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image

from robot_rl.calibration.camera_info import save_camera_info
from robot_rl.cameras.base import Intrinsics
from robot_rl.cameras.realsense import SoftwareRealSense
from robot_rl.nodes.camera_node import CameraNode
from robot_rl.ros import qos
from robot_rl.ros.conversions import diagnostics_values, msg_to_image, to_sec
from tests.cameras.feeder import Feeder
from tests.helpers import wait_until
from tests.nodes.test_nodes import ros  # noqa: F401 - the fixture

W, H = 64, 48
SERIAL = "817612070101"


def level(diagnostics: DiagnosticArray) -> bytes:
    return diagnostics.status[0].level


def test_realsense_camera_node_publishes_and_recovers_from_unplug(ros, tmp_path):  # noqa: F811
    calibration = save_camera_info(tmp_path / "wrist.yaml", Intrinsics(W, H, 55.5, 56.5, 31.0, 23.0, [0.1, -0.05, 0, 0, 0]),
                                   "wrist")
    device = SoftwareRealSense(serial=SERIAL, width=W, height=H)
    device.plug()
    # a camera's own 30 Hz clock (tests/cameras/feeder.py: the syncer pairs colour with depth by it)
    feeder = Feeder(device, lambda k: (np.full((H, W, 3), k % 250, np.uint8), np.full((H, W), 800, np.uint16)))
    feeder.start()
    listener = ros(rclpy.create_node("camera_listener"))
    images, infos, depths, diagnostics, arrivals = [], [], [], [], []

    def on_image(msg):
        images.append(msg)
        arrivals.append(time.time())

    listener.create_subscription(Image, "/camera/wrist/color/image_raw", on_image, qos.SENSOR_SUB)
    listener.create_subscription(CameraInfo, "/camera/wrist/color/camera_info", infos.append, qos.SENSOR_SUB)
    listener.create_subscription(Image, "/camera/wrist/aligned_depth_to_color/image_raw", depths.append, qos.SENSOR_SUB)
    listener.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, qos.STATUS)
    try:
        ros(CameraNode(parameter_overrides=[
            Parameter("camera_type", value="realsense"), Parameter("camera_name", value="wrist"),
            Parameter("serial", value=SERIAL), Parameter("width", value=W), Parameter("height", value=H),
            Parameter("fps", value=30.0), Parameter("depth", value=True), Parameter("timeout_s", value=0.5),
            Parameter("reconnect_after", value=1), Parameter("calibration_file", value=str(calibration)),
            Parameter("diagnostics_period_s", value=0.2)]))
        wait_until(lambda: len(images) >= 10 and depths and infos, timeout=15, what="colour, depth and camera_info")
        image, arrived = images[-1], arrivals[-1]
        assert (image.width, image.height, image.encoding) == (W, H, "rgb8")
        assert image.header.frame_id == "wrist_color_optical_frame"
        # stamped in system time at capture (not device uptime, not receipt): a little before it arrived.
        # Measured against its own arrival, not against the clock when this line runs, which a loaded
        # CI machine can delay (0.59 s seen).
        assert -0.05 < arrived - to_sec(image.header.stamp) < 1.0
        assert msg_to_image(image).std() == 0  # a uniform pushed frame, byte for byte
        depth = depths[-1]
        assert depth.encoding == "16UC1" and np.frombuffer(depth.data, np.uint16)[H * W // 2] == 800
        info = infos[-1]
        assert info.k[0] == pytest.approx(55.5) and info.k[5] == pytest.approx(23.0)
        assert list(info.d)[:2] == pytest.approx([0.1, -0.05]) and info.distortion_model == "plumb_bob"
        wait_until(lambda: diagnostics and level(diagnostics[-1]) == DiagnosticStatus.OK, timeout=10, what="ok diagnostics")

        # unplug: no frames, the device vanishes; diagnostics say so and the node keeps trying
        feeder.running.clear()
        device.unplug()
        wait_until(lambda: level(diagnostics[-1]) == DiagnosticStatus.ERROR
                   and "not connected" in diagnostics[-1].status[0].message, timeout=10, what="error diagnostics")
        count = len(images)
        device.plug()
        feeder.running.set()
        wait_until(lambda: len(images) >= count + 10, timeout=15, what="images after replug")
        # recovered: streaming again after a reconnect, at more than half the set rate. The level is OK
        # only at 80% of it, which the test's own 30 Hz feeder does not always keep on a loaded 2-core CI
        # machine (a run saw no OK for 10 s after the replug), so the wait is on the state and the rate.
        def recovered() -> bool:
            values = diagnostics_values(diagnostics[-1])
            return values["state"] == "streaming" and int(values["reconnects"]) >= 1 and float(values["rate_hz"]) > 15

        wait_until(recovered, timeout=10, what="recovered diagnostics")
        assert level(diagnostics[-1]) in (DiagnosticStatus.OK, DiagnosticStatus.WARN)
        assert int(diagnostics_values(diagnostics[-1])["stalls"]) >= 1
    finally:
        feeder.close()
        device.unplug()


def test_calibration_for_another_resolution_is_refused(ros, tmp_path):  # noqa: F811
    calibration = save_camera_info(tmp_path / "front.yaml", Intrinsics(640, 480, 600, 600, 320, 240), "front")
    with pytest.raises(ValueError, match=r"front.yaml: calibrated at 640x480, the camera is set to 64x48"):
        CameraNode(parameter_overrides=[Parameter("camera_type", value="opencv"), Parameter("width", value=W),
                                        Parameter("height", value=H), Parameter("calibration_file", value=str(calibration))])
