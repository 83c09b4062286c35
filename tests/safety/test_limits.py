import numpy as np
import pytest

from robot_rl.paths import data_path
from robot_rl.safety.limits import CalibrationError, load_robot_limits
from robot_rl.sim.tabletop import TabletopWorld


def test_shipped_sim_limits_lie_inside_the_simulated_joint_ranges():
    limits = load_robot_limits(data_path("calibration", "sim_arm.yaml"))
    world = TabletopWorld()
    assert limits.joint_names == world.joint_names
    for name, lo, hi in zip(limits.joint_names, limits.lower, limits.upper):
        rlo, rhi = world.model.joint(name).range
        assert rlo <= lo < hi <= rhi, name
    world.close()


def test_clamp_reports_clamped_joints():
    limits = load_robot_limits(data_path("calibration", "sim_arm.yaml"))
    clipped, changed = limits.clamp(np.array([5.0, 0.0, 0.0, 0.0, 0.0, -1.0]))
    assert clipped[0] == limits.upper[0] and clipped[5] == limits.lower[5]
    assert changed == ["shoulder_pan", "gripper"]


@pytest.mark.parametrize(
    "text, field",
    [
        ("joints: [", "not valid YAML"),
        ("[1, 2]", "expected a mapping"),
        ("robot: x\n", "'joints' must be a non-empty list"),
        ("joints:\n  - {name: a, lower: 0, upper: 1}\n", r"joints\[0\].max_velocity \(a\)"),
        ("joints:\n  - {name: a, lower: 1, upper: 0, max_velocity: 1}\n", "lower 1.0 must be below upper"),
        ("joints:\n  - {name: a, lower: 0, upper: 1, max_velocity: 1}\n  - {name: a, lower: 0, upper: 1, max_velocity: 1}\n", "listed twice"),
        ("joints:\n  - {name: a, lower: 0, upper: .nan, max_velocity: 1}\n", "upper"),
        ("joints:\n  - {name: a, lower: 0, upper: 1, max_velocity: 1}\nhome: [2]\n", "'home' lies outside"),
    ],
)
def test_malformed_limits_name_file_and_field(tmp_path, text, field):
    path = tmp_path / "arm.yaml"
    path.write_text(text)
    with pytest.raises(CalibrationError, match=field) as info:
        load_robot_limits(path)
    assert str(path) in str(info.value)


def test_missing_limits_file_is_named(tmp_path):
    with pytest.raises(CalibrationError, match="nope.yaml does not exist"):
        load_robot_limits(tmp_path / "nope.yaml")
