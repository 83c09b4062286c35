"""Conversions between ROS messages and the numpy/dataclass types of robot_rl.

Errors name the topic and what was expected, because they end up in a node's log and are the only
clue an operator has when a camera driver publishes an unexpected encoding.
"""

from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Pose, PoseArray
from sensor_msgs.msg import CameraInfo, Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from robot_rl.policy.base import ActionChunk
from robot_rl.safety.limits import in_joint_order
from robot_rl.sim.world import ObjectPose

SUPPORTED_ENCODINGS = ("rgb8", "bgr8")


def to_sec(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def to_stamp(seconds: float) -> Time:
    ns = int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def to_duration(seconds: float) -> Duration:
    ns = int(round(seconds * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def duration_sec(d: Duration) -> float:
    return d.sec + d.nanosec * 1e-9


# -- images --------------------------------------------------------------------------------------
def _image_msg(pixels: np.ndarray, stamp: float, frame_id: str, encoding: str) -> Image:
    msg = Image()
    msg.header.stamp = to_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = pixels.shape[:2]
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = pixels.shape[1] * pixels.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1)
    # array.array is what the generated message stores; filling it from the buffer is one memcpy,
    # where assigning bytes makes the setter build the array element by element (~10x slower).
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(pixels).view(np.uint8).data)
    msg.data = data
    return msg


def image_to_msg(image: np.ndarray, stamp: float, frame_id: str, encoding: str = "rgb8") -> Image:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    return _image_msg(image, stamp, frame_id, encoding)


def msg_to_image(msg: Image, topic: str = "image") -> np.ndarray:
    """An (H, W, 3) RGB uint8 view of the message (bgr8 is converted); other encodings are refused."""
    if msg.encoding not in SUPPORTED_ENCODINGS:
        raise ValueError(f"{topic}: image encoding '{msg.encoding}' is not supported; expected one of {SUPPORTED_ENCODINGS}")
    expected = msg.height * msg.step
    if msg.step < msg.width * 3 or len(msg.data) != expected:
        raise ValueError(
            f"{topic}: image data has {len(msg.data)} bytes, expected height*step = {msg.height}*{msg.step} "
            f"(width {msg.width}, 3 channels)"
        )
    buf = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
    image = buf[:, : msg.width * 3].reshape(msg.height, msg.width, 3)
    return image[:, :, ::-1] if msg.encoding == "bgr8" else image


def depth_to_msg(depth: np.ndarray, stamp: float, frame_id: str) -> Image:
    """A (H, W) uint16 depth image (millimetres on a RealSense) as a 16UC1 message, like realsense2_camera's."""
    if depth.dtype != np.uint16 or depth.ndim != 2:
        raise ValueError(f"expected an (H, W) uint16 depth image, got {depth.shape} {depth.dtype}")
    return _image_msg(depth.astype("<u2", copy=False), stamp, frame_id, "16UC1")


def camera_info_msg(model, stamp: float, frame_id: str) -> CameraInfo:
    """CameraInfo from :class:`robot_rl.cameras.base.Intrinsics`: a calibration file's, the device's own,
    or a simulated camera's (``World.camera_model``, no distortion)."""
    msg = CameraInfo()
    msg.header.stamp = to_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.width, msg.height = int(model.width), int(model.height)
    msg.distortion_model = model.distortion_model
    msg.d = [float(v) for v in model.distortion]
    msg.k = model.k.reshape(-1).tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    p = np.zeros((3, 4))
    p[:, :3] = model.k
    msg.p = p.reshape(-1).tolist()
    return msg


# -- joints and trajectories -----------------------------------------------------------------------
def joint_state_msg(names: list[str], positions, velocities=None, stamp: float = 0.0, frame_id: str = "") -> JointState:
    msg = JointState()
    msg.header.stamp = to_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.name = list(names)
    msg.position = [float(x) for x in positions]
    if velocities is not None:
        msg.velocity = [float(x) for x in velocities]
    return msg


def joint_state_positions(msg: JointState, topic: str = "joint_states") -> tuple[list[str], np.ndarray]:
    if len(msg.name) != len(msg.position):
        raise ValueError(f"{topic}: {len(msg.name)} joint names but {len(msg.position)} positions")
    return list(msg.name), np.asarray(msg.position, dtype=np.float64)


def ordered_joint_positions(msg: JointState, order: list[str], topic: str) -> np.ndarray:
    """A JointState's positions in ``order`` (the robot limits file's joint order)."""
    names, positions = joint_state_positions(msg, topic)
    return in_joint_order(names, positions, order, topic)


VERSION_PREFIX = "policy_v"


def chunk_to_msg(chunk: ActionChunk) -> JointTrajectory:
    """One action chunk as a JointTrajectory stamped with its observation time.

    The producing weights version travels in ``header.frame_id`` as ``policy_v<N>`` (joint
    trajectories have no coordinate frame; controllers ignore the field), so the episode recorder knows
    which version acted.
    """
    msg = JointTrajectory()
    msg.header.stamp = to_stamp(chunk.stamp)
    if chunk.version >= 0:
        msg.header.frame_id = f"{VERSION_PREFIX}{chunk.version}"
    msg.joint_names = list(chunk.joint_names)
    for k, row in enumerate(chunk.positions):
        point = JointTrajectoryPoint()
        point.positions = row.tolist()
        point.time_from_start = to_duration(chunk.period * (k + 1))
        msg.points.append(point)
    return msg


def msg_to_chunk(msg: JointTrajectory, topic: str = "trajectory") -> ActionChunk:
    if not msg.points:
        raise ValueError(f"{topic}: trajectory has no points")
    n = len(msg.joint_names)
    for i, point in enumerate(msg.points):
        if len(point.positions) != n:
            raise ValueError(f"{topic}: point {i} has {len(point.positions)} positions for {n} joint names")
    times = np.array([duration_sec(p.time_from_start) for p in msg.points])
    period = float(times[0])
    if period <= 0 or not np.allclose(np.diff(times), period, atol=1e-6):
        raise ValueError(f"{topic}: points must be evenly spaced starting one period after the stamp, got {times}")
    positions = np.array([p.positions for p in msg.points], dtype=np.float64)
    version = -1
    if msg.header.frame_id.startswith(VERSION_PREFIX):
        try:
            version = int(msg.header.frame_id[len(VERSION_PREFIX):])
        except ValueError:
            raise ValueError(f"{topic}: frame_id '{msg.header.frame_id}' should be {VERSION_PREFIX}<version>") from None
    return ActionChunk(to_sec(msg.header.stamp), period, list(msg.joint_names), positions, version=version)


# -- privileged sim state ---------------------------------------------------------------------------
def poses_msg(objects: dict[str, ObjectPose], stamp: float, order: list[str]) -> PoseArray:
    msg = PoseArray()
    msg.header.stamp = to_stamp(stamp)
    msg.header.frame_id = "world"
    for name in order:
        pose = Pose()
        p, q = objects[name].position, objects[name].quaternion
        pose.position.x, pose.position.y, pose.position.z = (float(v) for v in p)
        pose.orientation.w, pose.orientation.x, pose.orientation.y, pose.orientation.z = (float(v) for v in q)
        msg.poses.append(pose)
    return msg


def msg_to_poses(msg: PoseArray, order: list[str], topic: str = "object_poses") -> dict[str, ObjectPose]:
    if len(msg.poses) != len(order):
        raise ValueError(f"{topic}: expected {len(order)} poses ({order}), got {len(msg.poses)}")
    out = {}
    for name, pose in zip(order, msg.poses):
        p, q = pose.position, pose.orientation
        out[name] = ObjectPose(np.array([p.x, p.y, p.z]), np.array([q.w, q.x, q.y, q.z]))
    return out


# -- diagnostics ---------------------------------------------------------------------------------------
LEVELS = {"ok": DiagnosticStatus.OK, "warn": DiagnosticStatus.WARN, "error": DiagnosticStatus.ERROR}


def diagnostics_msg(name: str, level: str, message: str, values: dict, stamp: float, hardware_id: str = "") -> DiagnosticArray:
    status = DiagnosticStatus()
    status.level = LEVELS[level]
    status.name = name
    status.message = message
    status.hardware_id = hardware_id
    status.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
    msg = DiagnosticArray()
    msg.header.stamp = to_stamp(stamp)
    msg.status = [status]
    return msg


def diagnostics_values(msg: DiagnosticArray) -> dict[str, str]:
    out: dict[str, str] = {}
    for status in msg.status:
        out.update({kv.key: kv.value for kv in status.values})
    return out
