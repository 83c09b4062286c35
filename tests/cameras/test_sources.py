"""OpenCV and replay cameras on real files written by OpenCV and by the episode writer; the device clock."""

import time

import numpy as np
import pytest

import cv2  # noqa: E402  (requirements/hardware.txt: part of the test environment)

from robot_rl.cameras import CameraConfig, DeviceClock, make_camera  # noqa: E402
from robot_rl.cameras.base import CameraDisconnected, CameraError  # noqa: E402
from robot_rl.data.episodes import list_episodes, read_episode  # noqa: E402


def write_video(path, frames, fps=20.0):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for rgb in frames:
        writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
    writer.release()


def colour_frames(n=6, w=80, h=60):
    frames = []
    for k in range(n):
        frame = np.zeros((h, w, 3), np.uint8)
        frame[:, :, 0] = 200  # red: a BGR/RGB mix-up turns this blue
        frame[:, : 10 * (k + 1), 1] = 120  # a green bar that grows with k
        frames.append(frame)
    return frames


def test_opencv_camera_reads_rgb_at_the_configured_size(tmp_path):
    write_video(tmp_path / "cam.avi", colour_frames())
    config = CameraConfig.from_dict({"type": "opencv", "device": str(tmp_path / "cam.avi"), "width": 40, "height": 30})
    with make_camera(config) as camera:
        frames = [camera.read() for _ in range(6)]
        assert camera.resized
    for k, frame in enumerate(frames):
        assert frame.color.shape == (30, 40, 3) and frame.frame_number == k
        assert abs(int(frame.color[15, 20, 0]) - 200) < 12 and frame.color[15, 20, 2] < 30
        bar = (frame.color[15, :, 1] > 60).sum()
        assert abs(bar - 5 * (k + 1)) <= 1
        assert frame.stamp_source == "arrival" and abs(frame.stamp - time.time()) < 1.0


def test_opencv_camera_that_is_not_there_reads_as_disconnected():
    camera = make_camera(CameraConfig.from_dict({"type": "opencv", "device": "/dev/video-robot-rl-absent"}))
    with pytest.raises(CameraDisconnected, match="video-robot-rl-absent.*cannot open"):
        camera.connect()


def test_replay_of_a_recorded_episode_is_paced_and_ends_like_an_unplug(tiny_demos):
    episode_dir = list_episodes(tiny_demos)[0]
    episode = read_episode(episode_dir)
    camera_name = episode.meta.cameras[0]
    config = CameraConfig.from_dict({"type": "replay", "path": str(episode_dir), "camera": camera_name, "loop": False,
                                     "fps": 50.0, "width": episode.meta.image_width, "height": episode.meta.image_height})
    with make_camera(config) as camera:
        started = time.monotonic()
        frames = [camera.read() for _ in range(len(episode))]
        elapsed = time.monotonic() - started
        with pytest.raises(CameraDisconnected, match=f"end of the recording after {len(episode)} frames"):
            camera.read()
    assert all(np.array_equal(f.color, img) for f, img in zip(frames, episode.images[camera_name]))
    assert elapsed == pytest.approx((len(episode) - 1) / 50.0, rel=0.25)


def test_replay_of_a_video_loops(tmp_path):
    write_video(tmp_path / "clip.avi", colour_frames(n=3))
    config = CameraConfig.from_dict({"type": "replay", "path": str(tmp_path / "clip.avi"), "fps": 200.0,
                                     "width": 80, "height": 60})
    with make_camera(config) as camera:
        bars = [int((camera.read().color[30, :, 1] > 60).sum()) for _ in range(7)]
    assert bars[:3] == bars[3:6] and bars[6] == bars[0] and bars[0] < bars[1] < bars[2]


def test_bad_camera_configs_name_the_field():
    with pytest.raises(ValueError, match=r"field 'type' = 'kinect'; expected one of \['opencv', 'realsense', 'replay'\]"):
        CameraConfig.from_dict({"type": "kinect"})
    with pytest.raises(ValueError, match=r"unknown fields \['serial_no'\] for a realsense camera"):
        CameraConfig.from_dict({"type": "realsense", "serial_no": "1"})
    with pytest.raises(CameraError, match="parameter 'path'.*does not exist"):
        make_camera(CameraConfig.from_dict({"type": "replay", "path": "/nonexistent/episode"})).connect()


def test_device_clock_takes_the_fastest_arrival_and_follows_a_reset():
    clock = DeviceClock(window=50)
    rng = np.random.default_rng(0)
    offset = 1234.5
    errors = []
    for k in range(200):
        device = 10.0 + k / 30
        latency = 0.002 + rng.exponential(0.01)  # USB and driver delay: never negative
        errors.append(clock.to_host(device, device + offset + latency) - (device + offset))
    assert max(abs(e) for e in errors[20:]) < 0.003
    clock.reset()  # the device restarted its clock on reconnect
    mapped = clock.to_host(0.5, 0.5 + offset + 7.0 + 0.004)
    assert mapped == pytest.approx(0.5 + offset + 7.0 + 0.004)
