"""Calibration on rendered boards with known answers: intrinsics within 1 %, hand-eye within 2 mm / 0.5 deg."""

import json

import numpy as np
import pytest
import yaml


from robot_rl.calibration.camera import CalibrationFailed, calibrate_camera  # noqa: E402
from robot_rl.calibration.camera_info import load_camera_info, save_camera_info  # noqa: E402
from robot_rl.calibration.hand_eye import calibrate_hand_eye, rotation_angle_deg, transform  # noqa: E402
from robot_rl.calibration.synthetic import (  # noqa: E402
    DEFAULT_D, DEFAULT_K, Board, rotation_matrix, write_hand_eye_dataset, write_intrinsics_dataset,
)
from robot_rl.cameras.base import Intrinsics  # noqa: E402
from robot_rl.cli import main  # noqa: E402
from robot_rl.safety.limits import CalibrationError  # noqa: E402

BOARD = Board(9, 6, 0.025)


@pytest.fixture(scope="module")
def intrinsics_views(tmp_path_factory):
    out = tmp_path_factory.mktemp("intrinsics")
    write_intrinsics_dataset(out, BOARD, views=14, seed=3)
    return out


def test_intrinsics_recovered_within_one_percent_and_written_as_camera_info(intrinsics_views, tmp_path, capsys):
    code = main(["calibrate", "camera", "--images", str(intrinsics_views), "--board", "9x6", "--square", "0.025",
                 "--out", str(tmp_path / "front.yaml"), "--name", "front"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "reprojection error" in printed
    intrinsics, name = load_camera_info(tmp_path / "front.yaml")
    assert name == "front" and (intrinsics.width, intrinsics.height) == (640, 480)
    for got, want in ((intrinsics.fx, DEFAULT_K[0, 0]), (intrinsics.fy, DEFAULT_K[1, 1]),
                      (intrinsics.cx, DEFAULT_K[0, 2]), (intrinsics.cy, DEFAULT_K[1, 2])):
        assert abs(got - want) / want < 0.01
    assert intrinsics.distortion[0] == pytest.approx(DEFAULT_D[0], abs=0.03)  # barrel distortion found
    result = calibrate_camera(intrinsics_views, BOARD)
    assert result.rms_px < 0.5 and len(result.used) >= 8


def test_too_few_boards_is_refused_with_the_reason(intrinsics_views, tmp_path, capsys):
    with pytest.raises(CalibrationFailed, match=r"the 8x6 board was found in 0 of 14 images, at least 8 are needed.*inner corners"):
        calibrate_camera(intrinsics_views, Board(8, 6, 0.025))
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(intrinsics_views.iterdir())[:4]:
        (few / path.name).write_bytes(path.read_bytes())
    code = main(["calibrate", "camera", "--images", str(few), "--board", "9x6", "--square", "0.025",
                 "--out", str(tmp_path / "x.yaml")])
    assert code == 2 and "at least 8 are needed" in capsys.readouterr().err
    assert not (tmp_path / "x.yaml").exists()


@pytest.mark.parametrize("mode", ["eye_in_hand", "eye_to_hand"])
def test_hand_eye_recovered_within_2mm_and_half_a_degree(mode, tmp_path):
    if mode == "eye_in_hand":  # camera on the gripper, board on the table
        truth = transform(rotation_matrix([0.1, -0.2, 1.4]), [0.04, -0.03, 0.06])
        fixed = transform(rotation_matrix([3.0, 0.1, 0.2]), [0.45, 0.05, 0.0])
    else:  # camera on a stand, board in the gripper
        truth = transform(rotation_matrix([2.2, 0.3, -0.4]), [0.9, 0.2, 0.5])
        fixed = transform(rotation_matrix([0.0, 0.2, 0.3]), [0.0, 0.0, 0.08])
    write_hand_eye_dataset(tmp_path, BOARD, mode, truth, fixed, views=12, seed=5)
    info = save_camera_info(tmp_path / "camera_info.yaml",
                            Intrinsics(640, 480, DEFAULT_K[0, 0], DEFAULT_K[1, 1], DEFAULT_K[0, 2], DEFAULT_K[1, 2],
                                       list(DEFAULT_D)), "wrist")
    result = calibrate_hand_eye(tmp_path, tmp_path / "poses.yaml", info, BOARD, mode=mode)
    error_mm = np.linalg.norm(result.camera_pose[:3, 3] - truth[:3, 3]) * 1000
    error_deg = rotation_angle_deg(result.camera_pose[:3, :3], truth[:3, :3])
    assert error_mm < 2.0 and error_deg < 0.5, (error_mm, error_deg)
    assert result.views >= 8 and result.spread_mm < 2.0


def test_hand_eye_command_writes_a_transform_and_rejects_bad_poses(tmp_path, capsys):
    assert main(["calibrate", "synthetic", "--out", str(tmp_path), "--seed", "1"]) == 0
    truth = np.array(json.loads((tmp_path / "truth.json").read_text())["hand_eye"]["camera_in_gripper"])
    he = tmp_path / "hand_eye"
    args = ["calibrate", "hand-eye", "--images", str(he), "--camera-info", str(he / "camera_info.yaml"),
            "--board", "9x6", "--square", "0.025", "--out", str(tmp_path / "wrist_in_gripper.yaml")]
    assert main(args + ["--poses", str(he / "poses.yaml")]) == 0
    doc = yaml.safe_load((tmp_path / "wrist_in_gripper.yaml").read_text())
    assert doc["parent_frame"] == "gripper" and doc["mode"] == "eye_in_hand"
    assert np.linalg.norm(np.array(doc["translation"]) - truth[:3, 3]) < 0.002
    assert np.allclose(np.array(doc["matrix"])[:3, 3], doc["translation"], atol=1e-6)
    # a pose whose quaternion is not unit: named, refused, nothing written
    poses = yaml.safe_load((he / "poses.yaml").read_text())
    poses["poses"][2]["orientation"] = [0.0, 0.0, 0.0, 2.0]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(poses))
    capsys.readouterr()
    assert main(args[:-1] + [str(tmp_path / "bad_out.yaml"), "--poses", str(tmp_path / "bad.yaml")]) == 2
    assert "poses[2] (view_002.png): orientation [0.0, 0.0, 0.0, 2.0] is not a unit quaternion" in capsys.readouterr().err
    assert not (tmp_path / "bad_out.yaml").exists()


def test_camera_info_file_errors_name_the_field(tmp_path):
    path = tmp_path / "cam.yaml"
    path.write_text("image_width: 640\nimage_height: 480\ncamera_matrix: {rows: 3, cols: 3, data: [1, 2]}\n")
    with pytest.raises(CalibrationError, match=r"cam.yaml: field 'camera_matrix.data' must hold 9 finite numbers"):
        load_camera_info(path)
    with pytest.raises(CalibrationError, match="does not exist"):
        load_camera_info(tmp_path / "missing.yaml")
