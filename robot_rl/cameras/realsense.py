"""Intel RealSense cameras through pyrealsense2 (``pip install .[realsense]``; Debian's libusb-1.0-0).

The driver works on librealsense's sensor API, as the official realsense2_camera ROS driver does:
it finds the device by serial number, opens the colour sensor (and the depth sensor when asked)
with the configured resolution and rate, feeds both into a ``syncer``, and aligns depth to colour
with librealsense's ``align`` block. Frame times come from the device: a hardware-clock timestamp is
mapped to the host clock by :class:`~robot_rl.cameras.base.DeviceClock`; a ``global_time`` or
``system_time`` timestamp is already on the host clock (librealsense did the mapping).

Without a camera, :class:`SoftwareRealSense` builds a librealsense ``software_device`` with the same
sensors and streams: frames pushed into it travel the very code path above (sensor, syncer, align,
frame metadata). librealsense's ``software_device.add_to(context)`` does not make the device visible
to ``context.query_devices()`` in the 2.5x wheels, so software devices are found through
:func:`attach_software_device` instead; everything after discovery is the same.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from robot_rl.cameras.base import (
    Camera, CameraConfig, CameraDisconnected, CameraError, CameraFrame, CameraTimeout, DeviceClock, Intrinsics,
)


def import_pyrealsense2():
    try:
        import pyrealsense2 as rs
    except ImportError as exc:  # the extra is optional: say how to get it
        raise CameraError(
            "RealSense cameras need pyrealsense2: pip install 'robot_rl[realsense]' "
            "(and Debian's libusb-1.0-0); or run the official realsense2_camera driver, which publishes "
            f"the same topics ({exc})"
        ) from exc
    return rs


@dataclass
class RealSenseConfig(CameraConfig):
    type: ClassVar[str] = "realsense"
    serial: str = ""  # "" takes the only connected camera (and refuses to guess between several)
    depth: bool = False  # also stream depth
    align_depth: bool = True  # depth resampled into the colour camera's pixels
    queue_size: int = 2  # frames librealsense buffers; small, so a slow reader drops old frames


# -- discovery -----------------------------------------------------------------------------------------
_software_devices: dict[str, Any] = {}
_software_lock = threading.Lock()


def attach_software_device(serial: str, device) -> None:
    """Make a librealsense software device discoverable by serial (it stands for a plugged-in camera)."""
    with _software_lock:
        _software_devices[serial] = device


def detach_software_device(serial: str) -> None:
    """Unplug a software device: the next discovery no longer finds it."""
    with _software_lock:
        _software_devices.pop(serial, None)


def find_device(serial: str):
    """The connected device with this serial number (or the only one when serial is ''), else CameraDisconnected."""
    rs = import_pyrealsense2()
    with _software_lock:
        software = dict(_software_devices)
    if serial and serial in software:
        return software[serial]
    devices = {d.get_info(rs.camera_info.serial_number): d for d in rs.context().query_devices()}
    devices.update(software)
    if serial:
        if serial not in devices:
            raise CameraDisconnected(f"RealSense {serial}: not connected (connected: {sorted(devices) or 'none'})")
        return devices[serial]
    if len(devices) != 1:
        raise CameraDisconnected(
            f"RealSense: parameter 'serial' is empty and {len(devices)} cameras are connected "
            f"({sorted(devices)}); name the one to use"
        )
    return next(iter(devices.values()))


POLL_S = 0.001


class RealSenseCamera(Camera):
    def __init__(self, config: RealSenseConfig):
        super().__init__(config)
        self.config: RealSenseConfig = config
        self.rs = import_pyrealsense2()
        self._device = None
        self._sensors: list = []
        self._syncer = None
        self._align = None
        self._color_profile = None
        self._depth_scale = 0.001
        self.clock = DeviceClock()
        self.serial = config.serial
        self.incomplete = 0  # framesets without the streams asked for (dropped)

    @property
    def label(self) -> str:
        return f"RealSense {self.serial or '(any)'} ({self.config.name})"

    # -- connect -------------------------------------------------------------------------------------
    def _profile(self, sensor, stream, formats):
        cfg = self.config
        available = []
        for profile in sensor.get_stream_profiles():
            if profile.stream_type() != stream:
                continue
            video = profile.as_video_stream_profile()
            available.append(f"{video.width()}x{video.height()}@{profile.fps()} {profile.format()}")
            if (video.width(), video.height()) == (cfg.width, cfg.height) and abs(profile.fps() - cfg.fps) < 0.5 \
                    and profile.format() in formats:
                return profile
        return available

    def connect(self) -> None:
        rs, cfg = self.rs, self.config
        self.disconnect()
        device = find_device(cfg.serial)
        self.serial = device.get_info(rs.camera_info.serial_number)
        wanted = [(rs.stream.color, (rs.format.rgb8, rs.format.bgr8), "colour")]
        if cfg.depth:
            wanted.append((rs.stream.depth, (rs.format.z16,), "depth"))
        chosen = []
        for stream, formats, what in wanted:
            found, offered = None, []
            for sensor in device.query_sensors():
                result = self._profile(sensor, stream, formats)
                if isinstance(result, list):
                    offered += result
                else:
                    found = (sensor, result)
                    break
            if found is None:
                raise CameraError(
                    f"{self.label}: no {what} stream at {cfg.width}x{cfg.height}@{cfg.fps:g} "
                    f"in {[str(f) for f in formats]}; the device offers {offered or 'no such stream'}"
                )
            chosen.append(found)
        self._syncer = rs.syncer(max(1, cfg.queue_size))
        try:
            for sensor, profile in chosen:
                sensor.open(profile)
                self._sensors.append(sensor)
                if profile.stream_type() == rs.stream.depth and sensor.supports(rs.option.depth_units):
                    self._depth_scale = float(sensor.get_option(rs.option.depth_units))
            for sensor in self._sensors:
                sensor.start(self._syncer)
        except RuntimeError as exc:  # librealsense reports busy/unplugged devices as RuntimeError
            self.disconnect()
            raise CameraDisconnected(f"{self.label}: could not start streaming: {exc}") from exc
        self._device = device
        self._color_profile = chosen[0][1].as_video_stream_profile()
        self._align = rs.align(rs.stream.color) if cfg.depth and cfg.align_depth else None
        self.clock.reset()  # a reopened device may have restarted its clock

    def disconnect(self) -> None:
        for sensor in self._sensors:
            for action in (sensor.stop, sensor.close):
                try:
                    action()
                except RuntimeError:
                    pass  # already stopped, or the device is gone
        self._sensors = []
        self._syncer = self._device = self._align = None

    @property
    def is_connected(self) -> bool:
        return self._device is not None

    def intrinsics(self) -> Intrinsics | None:
        if self._color_profile is None:
            return None
        i = self._color_profile.get_intrinsics()
        coeffs = list(i.coeffs)[:5] + [0.0] * max(0, 5 - len(i.coeffs))
        return Intrinsics(i.width, i.height, i.fx, i.fy, i.ppx, i.ppy, [float(c) for c in coeffs])

    # -- frames --------------------------------------------------------------------------------------
    def read(self, timeout_s: float | None = None) -> CameraFrame:
        if self._syncer is None:
            raise CameraDisconnected(f"{self.label}: not connected")
        timeout = self.config.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        incomplete_seen = False
        while True:
            # Polling, not syncer.try_wait_for_frames: the binding blocks in that call without releasing
            # the GIL, which starves the other Python threads of a node (and, with a software device,
            # the very thread that delivers the frames). A 1 ms poll costs nothing measurable.
            frames = self._syncer.poll_for_frames()
            if not frames:
                # The deadline is checked only when the queue is empty: a reader that was itself held up
                # (a loaded host) first drains what the camera delivered meanwhile, rather than calling a
                # live camera stalled because the first set it finds is a lone stream.
                if time.monotonic() >= deadline:
                    what = "complete colour+depth frameset" if incomplete_seen else "frame"
                    raise CameraTimeout(f"{self.label}: no {what} within {timeout:.2f} s")
                time.sleep(POLL_S)
                continue
            arrival = time.time()
            if self._align is not None and frames.size() > 1:
                frames = self._align.process(frames).as_frameset()
            color = frames.get_color_frame()
            depth = frames.get_depth_frame() if self.config.depth else None
            if not color or (self.config.depth and not depth):
                self.incomplete += 1  # the syncer gave one stream alone (start-up, or a dropped partner)
                incomplete_seen = True
                continue
            return self._frame(color, depth, arrival)

    def _frame(self, color, depth, arrival: float) -> CameraFrame:
        rs = self.rs
        image = np.asanyarray(color.get_data())
        if color.get_profile().format() == rs.format.bgr8:
            image = image[:, :, ::-1]
        image = np.ascontiguousarray(image)  # a copy: librealsense reuses the frame's memory
        device_time = color.get_timestamp() / 1000.0
        domain = color.get_frame_timestamp_domain()
        if domain == rs.timestamp_domain.hardware_clock:
            stamp, source = self.clock.to_host(device_time, arrival), "device"
        elif domain in (rs.timestamp_domain.global_time, rs.timestamp_domain.system_time):
            stamp, source = device_time, "host"
        else:
            stamp, source = arrival, "arrival"
        depth_image = None
        if depth:
            depth_image = np.array(np.asanyarray(depth.get_data()), dtype=np.uint16)
        return CameraFrame(image, stamp, int(color.get_frame_number()), device_time, depth_image,
                           self._depth_scale, source)


# -- a camera without hardware ------------------------------------------------------------------------
class SoftwareRealSense:
    """A librealsense ``software_device`` that looks like a D400: colour (rgb8) and depth (z16) sensors.

    ``push(color, depth, device_time, domain)`` injects one frame pair; ``plug()``/``unplug()`` make it discoverable by serial or not. Used by the tests and by
    anyone who wants to run camera_node without a camera.
    """

    def __init__(self, serial: str = "000000000001", width: int = 64, height: int = 48, fps: int = 30,
                 fx: float | None = None, depth_units: float = 0.001):
        rs = self.rs = import_pyrealsense2()
        self.serial, self.width, self.height = serial, width, height
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.serial_number, serial)
        self.device.register_info(rs.camera_info.name, "Intel RealSense D435 (software device)")
        intrinsics = rs.intrinsics()
        intrinsics.width, intrinsics.height = width, height
        intrinsics.fx = intrinsics.fy = fx or 0.9 * width
        intrinsics.ppx, intrinsics.ppy = width / 2, height / 2
        intrinsics.model = rs.distortion.brown_conrady
        intrinsics.coeffs = [0.0] * 5
        self.color_sensor = self.device.add_sensor("RGB Camera")
        self.color_profile = self.color_sensor.add_video_stream(
            self._stream(rs.stream.color, 1, rs.format.rgb8, 3, fps, intrinsics)).as_video_stream_profile()
        self.depth_sensor = self.device.add_sensor("Stereo Module")
        self.depth_profile = self.depth_sensor.add_video_stream(
            self._stream(rs.stream.depth, 2, rs.format.z16, 2, fps, intrinsics)).as_video_stream_profile()
        self.depth_sensor.add_read_only_option(rs.option.depth_units, depth_units)
        extrinsics = rs.extrinsics()
        extrinsics.rotation = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
        extrinsics.translation = [0.0, 0.0, 0.0]
        self.depth_profile.register_extrinsics_to(self.color_profile, extrinsics)
        self.device.create_matcher(rs.matchers.default)
        self.depth_units = depth_units
        self.frame_number = 0

    def _stream(self, kind, uid, fmt, bpp, fps, intrinsics):
        stream = self.rs.video_stream()
        stream.type, stream.index, stream.uid = kind, 0, uid
        stream.width, stream.height, stream.fps, stream.bpp, stream.fmt = self.width, self.height, fps, bpp, fmt
        stream.intrinsics = intrinsics
        return stream

    def plug(self) -> None:
        attach_software_device(self.serial, self.device)

    def unplug(self) -> None:
        detach_software_device(self.serial)

    def push(self, color: np.ndarray, depth: np.ndarray | None, device_time: float,
             domain: str = "hardware_clock") -> None:
        """One frame (pair) stamped ``device_time`` seconds in ``domain``.

        ``hardware_clock`` is the camera's own counter; ``global_time`` is what a D400 sends with its
        default ``global_time_enabled`` (the device clock already mapped to the host clock). librealsense's
        syncer pairs colour with depth reliably only in the latter, as on the real camera.
        """
        rs = self.rs
        for sensor, profile, pixels, bpp in ((self.depth_sensor, self.depth_profile, depth, 2),
                                             (self.color_sensor, self.color_profile, color, 3)):
            if pixels is None:
                continue
            frame = rs.software_video_frame()
            frame.pixels = np.ascontiguousarray(pixels)
            frame.bpp, frame.stride = bpp, bpp * self.width
            frame.timestamp = device_time * 1000.0
            frame.domain = getattr(rs.timestamp_domain, domain)
            frame.frame_number = self.frame_number
            frame.profile = profile
            if bpp == 2:
                frame.depth_units = self.depth_units
            sensor.on_video_frame(frame)
        self.frame_number += 1
