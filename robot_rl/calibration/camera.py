"""Camera intrinsics from checkerboard images (``robot-rl calibrate camera``).

Every image in the folder is searched for the board (OpenCV's sector-based detector, sub-pixel
accurate); the views where it is found go to ``cv2.calibrateCamera`` with the plumb_bob model. The
result is written as ROS camera_info YAML with the reprojection error in a header comment. Too few
views is a refusal that says how many were found where, because a calibration from three views looks
fine and is not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_rl.calibration.camera_info import save_camera_info
from robot_rl.calibration.synthetic import Board
from robot_rl.cameras.base import Intrinsics
from robot_rl.cameras.opencv import import_cv2

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class CalibrationFailed(ValueError):
    """The images do not support a calibration; the message says why and what to do."""


@dataclass
class BoardView:
    path: Path
    corners: np.ndarray  # (N, 1, 2) float32 image points, OpenCV's row-by-row order


@dataclass
class CameraCalibration:
    intrinsics: Intrinsics
    rms_px: float  # reprojection error over all corners
    per_view_px: list[float]
    used: list[str]
    rejected: list[str] = field(default_factory=list)  # images where the board was not found


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationFailed(f"--images {folder}: not a directory")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise CalibrationFailed(f"--images {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return images


def find_board(image: np.ndarray, board: Board) -> np.ndarray | None:
    """Sub-pixel inner corners of the board in a grey or RGB image, or None."""
    cv2 = import_cv2()
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    found, corners = cv2.findChessboardCornersSB(grey, (board.cols, board.rows),
                                                 flags=cv2.CALIB_CB_ACCURACY | cv2.CALIB_CB_NORMALIZE_IMAGE)
    if not found:
        return None
    return corners.astype(np.float32).reshape(-1, 1, 2)


def detect_views(paths: list[Path], board: Board) -> tuple[list[BoardView], list[str], tuple[int, int]]:
    cv2 = import_cv2()
    views, rejected, size = [], [], None
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            rejected.append(f"{path.name} (unreadable)")
            continue
        if size is None:
            size = (image.shape[1], image.shape[0])
        elif size != (image.shape[1], image.shape[0]):
            raise CalibrationFailed(f"{path}: {image.shape[1]}x{image.shape[0]}, the first image is {size[0]}x{size[1]}; "
                                    "calibrate one resolution at a time")
        corners = find_board(image, board)
        if corners is None:
            rejected.append(path.name)
        else:
            views.append(BoardView(path, corners))
    return views, rejected, size


def calibrate_camera(images: str | Path, board: Board, min_views: int = 8) -> CameraCalibration:
    cv2 = import_cv2()
    paths = list_images(images)
    views, rejected, size = detect_views(paths, board)
    if len(views) < min_views:
        raise CalibrationFailed(
            f"--images {images}: the {board.cols}x{board.rows} board was found in {len(views)} of {len(paths)} images, "
            f"at least {min_views} are needed (not found in: {', '.join(rejected[:10]) or 'none'}). Check that "
            "--board counts inner corners (a board of 10x7 squares has 9x6), that the whole board is in view, "
            "and vary distance and tilt between images")
    objects = [board.object_points() for _ in views]
    rms, k, d, rvecs, tvecs = cv2.calibrateCamera(objects, [v.corners for v in views], size, None, None)
    per_view = []
    for obj, view, rvec, tvec in zip(objects, views, rvecs, tvecs):
        projected, _ = cv2.projectPoints(obj, rvec, tvec, k, d)
        per_view.append(float(np.sqrt(np.mean(np.sum((projected - view.corners) ** 2, axis=2)))))
    intrinsics = Intrinsics(size[0], size[1], float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]),
                            d.reshape(-1)[:5].tolist())
    return CameraCalibration(intrinsics, float(rms), per_view, [v.path.name for v in views], rejected)


def write_calibration(result: CameraCalibration, out: str | Path, camera_name: str, board: Board) -> Path:
    comment = (f"robot-rl calibrate camera: {len(result.used)} views of a {board.cols}x{board.rows} board "
               f"({board.square * 1000:g} mm squares)\nreprojection error {result.rms_px:.3f} px RMS "
               f"(worst view {max(result.per_view_px):.3f} px)")
    return save_camera_info(out, result.intrinsics, camera_name, comment)
