"""ROS ``camera_info`` YAML (the camera_calibration_parsers layout) to and from :class:`Intrinsics`.

The same files that ``ros2 run camera_calibration cameracalibrator`` writes and realsense2_camera or
usb_cam read, so a calibration moves between tools unchanged::

    image_width: 640
    image_height: 480
    camera_name: front
    camera_matrix: {rows: 3, cols: 3, data: [fx, 0, cx, 0, fy, cy, 0, 0, 1]}
    distortion_model: plumb_bob
    distortion_coefficients: {rows: 1, cols: 5, data: [k1, k2, p1, p2, k3]}
    rectification_matrix: {rows: 3, cols: 3, data: [1, 0, 0, 0, 1, 0, 0, 0, 1]}
    projection_matrix: {rows: 3, cols: 4, data: [fx', 0, cx', 0, 0, fy', cy', 0, 0, 0, 1, 0]}
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from robot_rl.cameras.base import Intrinsics
from robot_rl.safety.limits import CalibrationError
from robot_rl.paths import load_yaml_file


def _matrix(doc: dict, key: str, rows: int, cols: int | None, path: Path) -> np.ndarray:
    entry = doc.get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get("data"), list):
        raise CalibrationError(f"{path}: field '{key}' must be a mapping with rows, cols and a data list")
    data = entry["data"]
    if cols is None:  # distortion: any length
        cols = len(data)
    if len(data) != rows * cols or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in data):
        raise CalibrationError(f"{path}: field '{key}.data' must hold {rows * cols} finite numbers, got {data!r}")
    return np.asarray(data, dtype=np.float64).reshape(rows, cols)


def load_camera_info(path: str | Path) -> tuple[Intrinsics, str]:
    """(intrinsics, camera_name) from a camera_info YAML; CalibrationError naming the file and field."""
    path = Path(path)
    doc = load_yaml_file(path, "camera calibration file", CalibrationError)
    if not isinstance(doc, dict):
        raise CalibrationError(f"{path}: expected a camera_info mapping (image_width, camera_matrix, ...)")
    for key in ("image_width", "image_height"):
        if not isinstance(doc.get(key), int) or doc[key] <= 0:
            raise CalibrationError(f"{path}: field '{key}' must be a positive integer, got {doc.get(key)!r}")
    k = _matrix(doc, "camera_matrix", 3, 3, path)
    distortion = _matrix(doc, "distortion_coefficients", 1, None, path).reshape(-1).tolist()
    model = doc.get("distortion_model", "plumb_bob")
    if model not in ("plumb_bob", "rational_polynomial", "equidistant"):
        raise CalibrationError(f"{path}: field 'distortion_model' = {model!r}; expected plumb_bob, rational_polynomial or equidistant")
    intrinsics = Intrinsics(doc["image_width"], doc["image_height"], k[0, 0], k[1, 1], k[0, 2], k[1, 2], distortion, model)
    return intrinsics, str(doc.get("camera_name", path.stem))


def save_camera_info(path: str | Path, intrinsics: Intrinsics, camera_name: str, comment: str = "") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    k = intrinsics.k
    p = np.zeros((3, 4))
    p[:, :3] = k
    doc = {
        "image_width": int(intrinsics.width),
        "image_height": int(intrinsics.height),
        "camera_name": camera_name,
        "camera_matrix": {"rows": 3, "cols": 3, "data": [float(v) for v in k.reshape(-1)]},
        "distortion_model": intrinsics.distortion_model,
        "distortion_coefficients": {"rows": 1, "cols": len(intrinsics.distortion),
                                    "data": [float(v) for v in intrinsics.distortion]},
        "rectification_matrix": {"rows": 3, "cols": 3, "data": [float(v) for v in np.eye(3).reshape(-1)]},
        "projection_matrix": {"rows": 3, "cols": 4, "data": [float(v) for v in p.reshape(-1)]},
    }
    text = "".join(f"# {line}\n" for line in comment.splitlines()) + yaml.safe_dump(doc, sort_keys=False)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # a half-written calibration must never be read
    return path
