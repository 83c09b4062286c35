"""Checkerboard images rendered from a known camera: the ground truth calibration is verified against.

:func:`render_board` draws what a camera with intrinsics ``k``, distortion ``d`` (plumb_bob) and pose
``(rotation, translation)`` of the board in the camera frame sees: each image pixel is undistorted to
its viewing ray and intersected with the board plane, so lens distortion is rendered exactly, not
approximated. Used by the tests and by ``robot-rl calibrate selftest``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_rl.cameras.opencv import import_cv2


@dataclass(frozen=True)
class Board:
    cols: int  # inner corners along x
    rows: int  # inner corners along y
    square: float  # metres

    def object_points(self) -> np.ndarray:
        """(rows*cols, 3) corner positions in the board frame, row by row, OpenCV's order."""
        ys, xs = np.mgrid[0:self.rows, 0:self.cols]
        return np.stack([xs.ravel() * self.square, ys.ravel() * self.square, np.zeros(xs.size)], 1).astype(np.float32)


def parse_board(text: str, where: str = "--board") -> tuple[int, int]:
    """'9x6' -> (9, 6): inner corners, columns by rows."""
    try:
        cols, rows = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"{where} = {text!r}: expected COLSxROWS of inner corners, e.g. 9x6") from None
    if cols < 3 or rows < 3:
        raise ValueError(f"{where} = {text!r}: a board needs at least 3x3 inner corners")
    return cols, rows


def render_board(board: Board, k: np.ndarray, d, rotation: np.ndarray, translation, size: tuple[int, int],
                 px_per_square: int = 48, noise: float = 2.0, seed: int = 0) -> np.ndarray:
    """(H, W) uint8 grey image of the board at pose (board -> camera) through a distorting lens."""
    cv2 = import_cv2()
    width, height = size
    margin = 1  # one white square around the pattern, as printed boards have
    squares_x, squares_y = board.cols + 1, board.rows + 1
    texture = np.full(((squares_y + 2 * margin) * px_per_square, (squares_x + 2 * margin) * px_per_square), 255, np.uint8)
    for i in range(squares_y):
        for j in range(squares_x):
            if (i + j) % 2 == 0:
                y0, x0 = (i + margin) * px_per_square, (j + margin) * px_per_square
                texture[y0:y0 + px_per_square, x0:x0 + px_per_square] = 0
    # viewing ray of every pixel, distortion undone
    us, vs = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    pixels = np.stack([us.ravel(), vs.ravel()], 1).reshape(-1, 1, 2)
    rays = cv2.undistortPoints(pixels, k, np.asarray(d, np.float64)).reshape(-1, 2)
    # board plane z=0: [x, y, 1] ~ [r1 r2 t] [X, Y, 1]
    plane = np.column_stack([rotation[:, 0], rotation[:, 1], np.asarray(translation, np.float64)])
    board_xy = np.linalg.solve(plane, np.column_stack([rays, np.ones(len(rays))]).T).T
    board_xy = board_xy[:, :2] / board_xy[:, 2:3]
    origin = (margin + 1) * px_per_square - 0.5  # the first inner corner in texture pixels
    map_x = (board_xy[:, 0] / board.square * px_per_square + origin).reshape(height, width).astype(np.float32)
    map_y = (board_xy[:, 1] / board.square * px_per_square + origin).reshape(height, width).astype(np.float32)
    image = cv2.remap(texture, map_x, map_y, cv2.INTER_AREA if px_per_square > 64 else cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_CONSTANT, borderValue=110)
    rng = np.random.default_rng(seed)
    image = image.astype(np.float32) + rng.normal(0.0, noise, image.shape)
    return np.clip(cv2.GaussianBlur(image, (3, 3), 0.6), 0, 255).astype(np.uint8)


def rotation_matrix(axis_angle) -> np.ndarray:
    cv2 = import_cv2()
    return cv2.Rodrigues(np.asarray(axis_angle, np.float64).reshape(3, 1))[0]


def look_at_board(board: Board, distance: float, tilt: tuple[float, float, float], shift=(0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """A board pose (board -> camera) with the board centre ``distance`` ahead, tilted by ``tilt`` (rad)."""
    rotation = rotation_matrix(tilt)
    centre = np.array([(board.cols - 1) * board.square / 2, (board.rows - 1) * board.square / 2, 0.0])
    translation = np.array([shift[0], shift[1], distance]) - rotation @ centre
    return rotation, translation


# -- datasets with ground truth (tests, and `robot-rl calibrate synthetic` to try the commands) ---------
DEFAULT_K = np.array([[600.0, 0.0, 322.0], [0.0, 605.0, 238.0], [0.0, 0.0, 1.0]])
DEFAULT_D = [-0.12, 0.05, 0.001, -0.0005, 0.0]
DEFAULT_SIZE = (640, 480)


def random_view(board: Board, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A board pose a person holding a board (or a robot moving a camera) would give: 0.3-0.5 m, tilted."""
    tilt = rng.uniform(-0.45, 0.45, 3) * np.array([1.0, 1.0, 0.3])
    return look_at_board(board, rng.uniform(0.3, 0.5), tuple(tilt), tuple(rng.uniform(-0.06, 0.06, 2)))


def write_intrinsics_dataset(out, board: Board, views: int = 15, seed: int = 0, k=DEFAULT_K, d=DEFAULT_D,
                             size=DEFAULT_SIZE) -> dict:
    """``views`` board images from a camera with intrinsics ``k``/``d``; returns the ground truth."""
    from pathlib import Path

    cv2 = import_cv2()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(views):
        rotation, translation = random_view(board, rng)
        cv2.imwrite(str(out / f"view_{i:03d}.png"), render_board(board, k, d, rotation, translation, size, seed=seed + i))
    return {"k": np.asarray(k).tolist(), "d": list(d), "size": list(size)}


def write_hand_eye_dataset(out, board: Board, mode: str, camera_pose: np.ndarray, fixed_pose: np.ndarray,
                           views: int = 12, seed: int = 0, k=DEFAULT_K, d=DEFAULT_D, size=DEFAULT_SIZE) -> None:
    """Images and a poses YAML of a hand-eye session with known answer ``camera_pose``.

    eye_in_hand: ``camera_pose`` is the camera in the gripper frame, ``fixed_pose`` the board in the base.
    eye_to_hand: ``camera_pose`` is the camera in the base frame, ``fixed_pose`` the board in the gripper.
    """
    from pathlib import Path

    import yaml

    from robot_rl.calibration.hand_eye import quaternion_xyzw, transform

    cv2 = import_cv2()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    poses = []
    for i in range(views):
        rotation, translation = random_view(board, rng)
        board_in_camera = transform(rotation, translation)
        if mode == "eye_in_hand":  # base<-gripper = base<-board  board<-camera  camera<-gripper
            gripper = fixed_pose @ np.linalg.inv(board_in_camera) @ np.linalg.inv(camera_pose)
        else:  # base<-gripper = base<-camera  camera<-board  board<-gripper
            gripper = camera_pose @ board_in_camera @ np.linalg.inv(fixed_pose)
        name = f"view_{i:03d}.png"
        cv2.imwrite(str(out / name), render_board(board, k, d, rotation, translation, size, seed=seed + i))
        poses.append({"image": name, "position": [float(v) for v in gripper[:3, 3]],
                      "orientation": [float(v) for v in quaternion_xyzw(gripper[:3, :3])]})
    (out / "poses.yaml").write_text(yaml.safe_dump({"poses": poses}, sort_keys=False))
