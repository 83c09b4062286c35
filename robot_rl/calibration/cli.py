"""``robot-rl calibrate camera | hand-eye | synthetic``: the command-line side of calibration."""

from __future__ import annotations

import json
import sys

import numpy as np


def add_parsers(sub) -> None:
    p = sub.add_parser("calibrate", help="camera intrinsics and hand-eye extrinsics from checkerboard images")
    csub = p.add_subparsers(dest="calibrate", required=True)

    c = csub.add_parser("camera", help="intrinsics + distortion from board images -> ROS camera_info YAML")
    c.add_argument("--images", required=True, help="folder of board images (png/jpg) from the camera")
    c.add_argument("--board", required=True, help="inner corners COLSxROWS, e.g. 9x6 for a board of 10x7 squares")
    c.add_argument("--square", type=float, required=True, help="square size in metres")
    c.add_argument("--out", required=True, help="camera_info YAML to write (e.g. calibration/front.yaml)")
    c.add_argument("--name", default="front", help="camera_name in the file")
    c.add_argument("--min-views", type=int, default=8)
    c.set_defaults(func=_camera)

    h = csub.add_parser("hand-eye", help="camera pose on the gripper (eye_in_hand) or in the base (eye_to_hand)")
    h.add_argument("--images", required=True, help="folder of board images")
    h.add_argument("--poses", required=True, help="YAML: poses: [{image, position: [x,y,z], orientation: [x,y,z,w]}]")
    h.add_argument("--camera-info", required=True, help="the camera's camera_info YAML (robot-rl calibrate camera)")
    h.add_argument("--board", required=True)
    h.add_argument("--square", type=float, required=True)
    h.add_argument("--mode", default="eye_in_hand", choices=["eye_in_hand", "eye_to_hand"])
    h.add_argument("--method", default="park", choices=["tsai", "park", "horaud", "andreff", "daniilidis"])
    h.add_argument("--parent-frame", default="", help="default: gripper (eye_in_hand) or base_link (eye_to_hand)")
    h.add_argument("--child-frame", default="camera_color_optical_frame")
    h.add_argument("--out", required=True)
    h.set_defaults(func=_hand_eye)

    s = csub.add_parser("synthetic", help="rendered board images with known answers, to try the two commands above")
    s.add_argument("--out", required=True)
    s.add_argument("--board", default="9x6")
    s.add_argument("--square", type=float, default=0.025)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_synthetic)


def _board(args):
    from robot_rl.calibration.synthetic import Board, parse_board

    cols, rows = parse_board(args.board)
    if not args.square > 0:
        raise ValueError(f"--square {args.square}: expected the square size in metres, > 0")
    return Board(cols, rows, args.square)


def _camera(args) -> int:
    from robot_rl.calibration.camera import CalibrationFailed, calibrate_camera, write_calibration

    try:
        board = _board(args)
        result = calibrate_camera(args.images, board, min_views=args.min_views)
    except (CalibrationFailed, ValueError) as exc:
        print(f"robot-rl calibrate camera: {exc}", file=sys.stderr)
        return 2
    i = result.intrinsics
    path = write_calibration(result, args.out, args.name, board)
    print(f"{len(result.used)} of {len(result.used) + len(result.rejected)} images used"
          + (f" (board not found in {', '.join(result.rejected)})" if result.rejected else ""))
    print(f"fx {i.fx:.2f}  fy {i.fy:.2f}  cx {i.cx:.2f}  cy {i.cy:.2f}  distortion {np.round(i.distortion, 5).tolist()}")
    print(f"reprojection error {result.rms_px:.3f} px RMS (worst view {max(result.per_view_px):.3f} px)"
          + ("  -- above 1 px: check the board is flat and the images sharp" if result.rms_px > 1.0 else ""))
    print(f"wrote {path}")
    return 0


def _hand_eye(args) -> int:
    from robot_rl.calibration.camera import CalibrationFailed
    from robot_rl.calibration.hand_eye import calibrate_hand_eye, quaternion_xyzw, save_hand_eye
    from robot_rl.safety.limits import CalibrationError

    try:
        result = calibrate_hand_eye(args.images, args.poses, args.camera_info, _board(args), args.mode, args.method)
    except (CalibrationFailed, CalibrationError, ValueError) as exc:
        print(f"robot-rl calibrate hand-eye: {exc}", file=sys.stderr)
        return 2
    parent = args.parent_frame or ("gripper" if args.mode == "eye_in_hand" else "base_link")
    path = save_hand_eye(args.out, result, parent, args.child_frame)
    t = result.camera_pose[:3, 3]
    print(f"{args.child_frame} in {parent}: translation {np.round(t, 4).tolist()} m, "
          f"rotation (xyzw) {np.round(quaternion_xyzw(result.camera_pose[:3, :3]), 5).tolist()}")
    print(f"{result.views} views; the fixed board moves by at most {result.spread_mm:.2f} mm / {result.spread_deg:.3f} deg "
          "across views with this answer" + (f"; board not found in {', '.join(result.skipped)}" if result.skipped else ""))
    print(f"wrote {path}")
    return 0


def _synthetic(args) -> int:
    from pathlib import Path

    from robot_rl.calibration.camera_info import save_camera_info
    from robot_rl.calibration.hand_eye import transform
    from robot_rl.calibration.synthetic import (
        DEFAULT_D, DEFAULT_K, DEFAULT_SIZE, rotation_matrix, write_hand_eye_dataset, write_intrinsics_dataset,
    )
    from robot_rl.cameras.base import Intrinsics

    board = _board(args)
    out = Path(args.out)
    truth = {"intrinsics": write_intrinsics_dataset(out / "intrinsics", board, seed=args.seed)}
    camera_in_gripper = transform(rotation_matrix([0.1, -0.2, 1.4]), [0.04, -0.03, 0.06])
    board_in_base = transform(rotation_matrix([3.0, 0.1, 0.2]), [0.45, 0.05, 0.0])
    write_hand_eye_dataset(out / "hand_eye", board, "eye_in_hand", camera_in_gripper, board_in_base, seed=args.seed)
    save_camera_info(out / "hand_eye" / "camera_info.yaml",
                     Intrinsics(*DEFAULT_SIZE, DEFAULT_K[0, 0], DEFAULT_K[1, 1], DEFAULT_K[0, 2], DEFAULT_K[1, 2],
                                list(DEFAULT_D)), "synthetic")
    truth["hand_eye"] = {"mode": "eye_in_hand", "camera_in_gripper": camera_in_gripper.tolist()}
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    b = f"--board {args.board} --square {args.square}"
    print(f"wrote {out}/intrinsics (board views) and {out}/hand_eye (views, poses.yaml, camera_info.yaml); "
          f"ground truth in {out}/truth.json. Try:\n"
          f"  robot-rl calibrate camera --images {out}/intrinsics {b} --out {out}/front.yaml\n"
          f"  robot-rl calibrate hand-eye --images {out}/hand_eye --poses {out}/hand_eye/poses.yaml "
          f"--camera-info {out}/hand_eye/camera_info.yaml {b} --out {out}/hand_eye.yaml")
    return 0
