import numpy as np
import pytest

from robot_rl.policy.base import ActionChunk
from robot_rl.ros.conversions import (camera_info_msg, chunk_to_msg, diagnostics_msg, diagnostics_values, image_to_msg,
                                      msg_to_chunk, msg_to_image, msg_to_poses, poses_msg, to_sec, to_stamp)
from robot_rl.sim.world import CameraModel, ObjectPose


def test_image_round_trip_rgb_and_bgr():
    image = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    msg = image_to_msg(image, 12.5, "cam")
    assert (msg.height, msg.width, msg.step, msg.encoding) == (4, 5, 15, "rgb8")
    assert to_sec(msg.header.stamp) == pytest.approx(12.5)
    np.testing.assert_array_equal(msg_to_image(msg), image)
    bgr = image_to_msg(np.ascontiguousarray(image[..., ::-1]), 0.0, "cam", encoding="bgr8")
    np.testing.assert_array_equal(msg_to_image(bgr), image)


def test_wrong_encoding_names_topic_and_expected():
    msg = image_to_msg(np.zeros((2, 2, 3), np.uint8), 0.0, "cam")
    msg.encoding = "mono16"
    with pytest.raises(ValueError, match=r"/camera/front/color/image_raw: image encoding 'mono16' is not supported.*rgb8"):
        msg_to_image(msg, "/camera/front/color/image_raw")


def test_truncated_image_data_is_refused():
    msg = image_to_msg(np.zeros((4, 4, 3), np.uint8), 0.0, "cam")
    msg.data = bytes(10)
    with pytest.raises(ValueError, match="10 bytes, expected height\\*step"):
        msg_to_image(msg, "img")


def test_chunk_round_trip():
    c = ActionChunk(100.25, 0.1, ["a", "b"], np.arange(6.0).reshape(3, 2))
    back = msg_to_chunk(chunk_to_msg(c))
    assert back.stamp == pytest.approx(100.25) and back.period == pytest.approx(0.1)
    np.testing.assert_allclose(back.positions, c.positions)
    np.testing.assert_allclose(back.times(), [100.35, 100.45, 100.55])


def test_malformed_trajectory_is_refused():
    msg = chunk_to_msg(ActionChunk(0.0, 0.1, ["a", "b"], np.zeros((2, 2))))
    msg.points[1].positions = [0.0]
    with pytest.raises(ValueError, match="point 1 has 1 positions for 2 joint names"):
        msg_to_chunk(msg, "/policy/trajectory")
    msg.points = []
    with pytest.raises(ValueError, match="/policy/trajectory: trajectory has no points"):
        msg_to_chunk(msg, "/policy/trajectory")


def test_poses_camera_info_and_diagnostics():
    objects = {"cube": ObjectPose(np.array([1.0, 2.0, 3.0]), np.array([1.0, 0, 0, 0])),
               "pad": ObjectPose(np.zeros(3), np.array([0, 0, 0, 1.0]))}
    back = msg_to_poses(poses_msg(objects, 0.0, ["cube", "pad"]), ["cube", "pad"])
    np.testing.assert_allclose(back["cube"].position, [1, 2, 3])
    np.testing.assert_allclose(back["pad"].quaternion, [0, 0, 0, 1])
    with pytest.raises(ValueError, match="expected 3 poses"):
        msg_to_poses(poses_msg(objects, 0.0, ["cube", "pad"]), ["cube", "pad", "button"])
    info = camera_info_msg(CameraModel(64, 48, 50.0, 50.0, 31.5, 23.5), 1.0, "f")
    assert list(info.k) == [50.0, 0, 31.5, 0, 50.0, 23.5, 0, 0, 1] and info.p[3] == 0
    diag = diagnostics_msg("x", "warn", "m", {"a": 1.5}, 0.0)
    assert diagnostics_values(diag) == {"a": "1.5"}
    assert to_sec(to_stamp(1.999999999)) == pytest.approx(1.999999999)
