"""Hand-eye calibration (``robot-rl calibrate hand-eye``): where the camera sits on or beside the robot.

Two set-ups, both solved with OpenCV's ``calibrateHandEye`` from pairs of (gripper pose in the base
frame, board pose in the camera frame):

- ``eye_in_hand``: the camera rides on the gripper and looks at a board fixed in the workspace. The
  result is the camera's pose in the gripper frame.
- ``eye_to_hand``: the camera is fixed and the board is held by the gripper. The result is the
  camera's pose in the base frame (OpenCV's trick: feed base->gripper instead of gripper->base).

The poses file (YAML) pairs each image with the gripper pose the robot reported when it was taken
(forward kinematics, or ``tf2_echo base gripper``)::

    poses:
      - {image: view_000.png, position: [0.31, -0.05, 0.42], orientation: [x, y, z, w]}

The board poses come from ``solvePnP`` with the camera's calibrated intrinsics. The quality check is
the thing that stays fixed: with the answer, the board's pose in the base (eye-in-hand) or gripper
(eye-to-hand) frame is computed from every view; its spread in mm and degrees is reported and written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from robot_rl.calibration.camera import CalibrationFailed, find_board
from robot_rl.calibration.camera_info import load_camera_info
from robot_rl.calibration.synthetic import Board
from robot_rl.cameras.opencv import import_cv2

MODES = ("eye_in_hand", "eye_to_hand")
METHODS = ("tsai", "park", "horaud", "andreff", "daniilidis")


def transform(rotation: np.ndarray, translation) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rotation, np.asarray(translation, np.float64).reshape(3)
    return out


def quaternion_xyzw(rotation: np.ndarray) -> list[float]:
    """Unit quaternion (x, y, z, w), ROS order, of a rotation matrix."""
    m = rotation
    w = np.sqrt(max(0.0, 1.0 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    x = np.copysign(np.sqrt(max(0.0, 1.0 + m[0, 0] - m[1, 1] - m[2, 2])) / 2, m[2, 1] - m[1, 2])
    y = np.copysign(np.sqrt(max(0.0, 1.0 - m[0, 0] + m[1, 1] - m[2, 2])) / 2, m[0, 2] - m[2, 0])
    z = np.copysign(np.sqrt(max(0.0, 1.0 - m[0, 0] - m[1, 1] + m[2, 2])) / 2, m[1, 0] - m[0, 1])
    q = np.array([x, y, z, w])
    return (q / np.linalg.norm(q)).tolist()


def rotation_from_xyzw(q) -> np.ndarray:
    x, y, z, w = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    cos = (np.trace(a.T @ b) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def load_robot_poses(path: str | Path) -> list[tuple[str, np.ndarray]]:
    """[(image file name, gripper pose in the base frame as 4x4)] from a poses YAML; errors name the entry."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CalibrationFailed(f"--poses {path}: cannot read: {exc}") from exc
    entries = doc.get("poses") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise CalibrationFailed(f"--poses {path}: expected a mapping with a non-empty list 'poses'")
    out = []
    for i, entry in enumerate(entries):
        where = f"--poses {path}: poses[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise CalibrationFailed(f"{where}: expected {{image, position, orientation}}")
        position, orientation = entry.get("position"), entry.get("orientation")
        if not (isinstance(position, list) and len(position) == 3 and isinstance(orientation, list) and len(orientation) == 4):
            raise CalibrationFailed(f"{where} ({entry['image']}): position must be [x, y, z] metres and "
                                    "orientation a quaternion [x, y, z, w]")
        if abs(np.linalg.norm(orientation) - 1.0) > 1e-3:
            raise CalibrationFailed(f"{where} ({entry['image']}): orientation {orientation} is not a unit quaternion")
        out.append((entry["image"], transform(rotation_from_xyzw(orientation), position)))
    return out


@dataclass
class HandEyeResult:
    mode: str
    camera_pose: np.ndarray  # 4x4: camera in gripper frame (eye_in_hand) or in base frame (eye_to_hand)
    views: int
    spread_mm: float  # largest distance of the fixed board's per-view position from their mean
    spread_deg: float  # largest angle of the fixed board's per-view rotation from their mean view
    method: str
    skipped: list[str]


def board_pose(image: np.ndarray, board: Board, k: np.ndarray, d: np.ndarray) -> np.ndarray | None:
    cv2 = import_cv2()
    corners = find_board(image, board)
    if corners is None:
        return None
    ok, rvec, tvec = cv2.solvePnP(board.object_points(), corners, k, d, flags=cv2.SOLVEPNP_ITERATIVE)
    return transform(cv2.Rodrigues(rvec)[0], tvec) if ok else None


def calibrate_hand_eye(images: str | Path, poses: str | Path, camera_info: str | Path, board: Board,
                       mode: str = "eye_in_hand", method: str = "park", min_views: int = 5) -> HandEyeResult:
    cv2 = import_cv2()
    if mode not in MODES:
        raise CalibrationFailed(f"--mode {mode!r}: expected one of {MODES}")
    if method not in METHODS:
        raise CalibrationFailed(f"--method {method!r}: expected one of {METHODS}")
    intrinsics, _ = load_camera_info(camera_info)
    k, d = intrinsics.k, np.asarray(intrinsics.distortion, np.float64)
    grippers, targets, skipped = [], [], []
    for name, gripper_in_base in load_robot_poses(poses):
        image = cv2.imread(str(Path(images) / name), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise CalibrationFailed(f"--images {images}: {name} (named in --poses) is missing or unreadable")
        if (image.shape[1], image.shape[0]) != (intrinsics.width, intrinsics.height):
            raise CalibrationFailed(f"{name}: {image.shape[1]}x{image.shape[0]}, but --camera-info {camera_info} "
                                    f"is for {intrinsics.width}x{intrinsics.height}")
        target_in_camera = board_pose(image, board, k, d)
        if target_in_camera is None:
            skipped.append(name)
            continue
        grippers.append(gripper_in_base)
        targets.append(target_in_camera)
    if len(grippers) < min_views:
        raise CalibrationFailed(f"the board was found in {len(grippers)} views, at least {min_views} are needed "
                                f"(not found in: {', '.join(skipped) or 'none'}); rotate the gripper about "
                                "different axes between views")
    if not hasattr(cv2, "calibrateHandEye"):
        raise CalibrationFailed(f"OpenCV {cv2.__version__} has no calibrateHandEye (the 5.0 wheels dropped it); "
                                "pip install 'opencv-python-headless<5'")
    motions = grippers if mode == "eye_in_hand" else [np.linalg.inv(g) for g in grippers]
    rotation, translation = cv2.calibrateHandEye(
        [m[:3, :3] for m in motions], [m[:3, 3] for m in motions],
        [t[:3, :3] for t in targets], [t[:3, 3] for t in targets],
        method=getattr(cv2, f"CALIB_HAND_EYE_{method.upper()}"))
    camera_pose = transform(rotation, translation)
    # the board is fixed in the base frame (eye-in-hand) or in the gripper frame (eye-to-hand)
    fixed = [m @ camera_pose @ t for m, t in zip(motions, targets)]
    positions = np.array([f[:3, 3] for f in fixed])
    spread_mm = float(np.max(np.linalg.norm(positions - positions.mean(0), axis=1)) * 1000)
    spread_deg = max(rotation_angle_deg(fixed[0][:3, :3], f[:3, :3]) for f in fixed)
    return HandEyeResult(mode, camera_pose, len(grippers), spread_mm, spread_deg, method, skipped)


def save_hand_eye(path: str | Path, result: HandEyeResult, parent_frame: str, child_frame: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "mode": result.mode,
        "parent_frame": parent_frame,
        "child_frame": child_frame,
        "translation": [round(float(v), 6) for v in result.camera_pose[:3, 3]],
        "rotation_xyzw": [round(v, 8) for v in quaternion_xyzw(result.camera_pose[:3, :3])],
        "matrix": [[round(float(v), 8) for v in row] for row in result.camera_pose],
        "views": result.views,
        "method": result.method,
        "consistency": {"translation_mm": round(result.spread_mm, 3), "rotation_deg": round(result.spread_deg, 4)},
    }
    comment = (f"# robot-rl calibrate hand-eye ({result.mode}): pose of {child_frame} in {parent_frame}\n"
               "# static transform: ros2 run tf2_ros static_transform_publisher --x X --y Y --z Z "
               "--qx QX --qy QY --qz QZ --qw QW --frame-id PARENT --child-frame-id CHILD\n")
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(comment + yaml.safe_dump(doc, sort_keys=False))
    tmp.replace(path)
    return path
