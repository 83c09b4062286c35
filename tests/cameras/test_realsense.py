"""The RealSense driver on librealsense's own software_device: real sensors, syncer, align and timestamps."""

import time

import numpy as np
import pytest

from robot_rl.cameras import CameraConfig, make_camera
from robot_rl.cameras.base import CameraDisconnected, CameraError, CameraTimeout
from robot_rl.cameras.realsense import SoftwareRealSense
from robot_rl.cameras.stream import CameraStream
from tests.cameras.feeder import Feeder
from tests.helpers import wait_until

W, H = 64, 48


def pattern(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame k: colour value k % 200 with a constant green channel (an RGB order check), depth 1000 + value."""
    value = k % 200
    color = np.full((H, W, 3), value, np.uint8)
    color[:, :, 1] = 7
    return color, np.full((H, W), 1000 + value, np.uint16)


def patterned(device: SoftwareRealSense, **kw) -> Feeder:
    return Feeder(device, pattern, **kw)


@pytest.fixture
def software_camera():
    device = SoftwareRealSense(serial="817612070001", width=W, height=H, fps=30)
    device.plug()
    yield device
    device.unplug()


def realsense(serial="817612070001", **kw):
    return make_camera(CameraConfig.from_dict({"type": "realsense", "serial": serial, "width": W, "height": H,
                                               "fps": 30, "depth": True, "timeout_s": 0.5, **kw}))


def test_colour_and_aligned_depth_through_syncer_and_align(software_camera):
    with patterned(software_camera) as feeder, realsense() as camera:
        frames = [camera.read(timeout_s=2.0) for _ in range(15)]
        intrinsics = camera.intrinsics()
    pushed = {k % 200: made for k, made in feeder.pushed}
    for frame in frames:
        assert frame.color.shape == (H, W, 3) and frame.color.dtype == np.uint8
        value = int(frame.color[0, 0, 0])
        assert frame.color[0, 0, 1] == 7  # RGB order preserved
        # the depth of the same instant, resampled into colour pixels by librealsense's align block
        assert frame.depth.shape == (H, W) and int(frame.depth[H // 2, W // 2]) == 1000 + value
        assert frame.depth_scale == pytest.approx(0.001)
        assert frame.stamp_source == "host" and frame.stamp == pytest.approx(pushed[value], abs=1e-3)
    numbers = [f.frame_number for f in frames]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert (intrinsics.width, intrinsics.height) == (W, H) and intrinsics.fx == pytest.approx(0.9 * W)


def test_hardware_clock_is_mapped_to_the_host_clock(software_camera):
    with patterned(software_camera, domain="hardware_clock") as feeder, realsense(depth=False) as camera:
        frames = [camera.read(timeout_s=2.0) for _ in range(20)]
    pushed = {k % 200: made for k, made in feeder.pushed}
    for frame in frames:
        value = int(frame.color[0, 0, 0])
        assert frame.depth is None and frame.stamp_source == "device"
        assert frame.device_time == pytest.approx(pushed[value] + feeder.offset, abs=1e-3)
        # the device clock (5000 s) lands on the host clock: within a few ms of when the frame was made
        assert abs(frame.stamp - pushed[value]) < 0.02


def test_device_chosen_by_serial_and_absent_or_ambiguous_serials_refused(software_camera):
    other = SoftwareRealSense(serial="817612070002", width=W, height=H)
    other.plug()
    try:
        with patterned(other), realsense(serial="817612070002") as camera:
            assert camera.serial == "817612070002"
            assert camera.read(timeout_s=2.0).color.shape == (H, W, 3)
        with pytest.raises(CameraDisconnected, match="817612079999: not connected"):
            realsense(serial="817612079999").connect()
        with pytest.raises(CameraDisconnected, match="2 cameras are connected"):
            realsense(serial="").connect()
    finally:
        other.unplug()


def test_unavailable_stream_mode_names_what_the_device_offers(software_camera):
    camera = realsense(width=1280, height=720)
    with pytest.raises(CameraError, match=r"no colour stream at 1280x720@30.*offers \['64x48@30"):
        camera.connect()


def test_read_times_out_when_the_device_sends_nothing(software_camera):
    with realsense() as camera:
        started = time.monotonic()
        with pytest.raises(CameraTimeout, match="no frame within 0.30 s"):
            camera.read(timeout_s=0.3)
        assert time.monotonic() - started < 1.0


def test_stream_recovers_after_unplug_and_frame_timeout(software_camera):
    received = []
    stream = CameraStream(realsense(), received.append, reconnect_after=1, backoff_s=(0.05, 0.2), log=lambda m: None)
    with patterned(software_camera) as feeder:
        stream.start()
        try:
            wait_until(lambda: len(received) >= 10, timeout=10, what="first frames")
            # unplug: frames stop and the device is no longer enumerated
            feeder.running.clear()
            software_camera.unplug()
            # first the stall ("reopening the device"), then the failed reopen that finds the device gone
            wait_until(lambda: stream.stats().state in ("reconnecting", "connecting")
                       and "not connected" in stream.stats().last_error, timeout=5, what="reconnecting to a missing device")
            assert stream.stats().stalls >= 1
            before = len(received)
            time.sleep(0.3)
            assert len(received) == before  # nothing while unplugged
            # plug back in: the stream reopens the device by serial and publishes again
            software_camera.plug()
            feeder.running.set()
            wait_until(lambda: len(received) >= before + 10, timeout=10, what="frames after replug")
            stats = stream.stats()
            assert stats.state == "streaming" and stats.reconnects >= 1 and stats.rate_hz > 10
        finally:
            stream.stop()
