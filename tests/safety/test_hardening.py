"""Fault injection on the safety filter with the shipped sim arm limits (velocity, acceleration, jump,
workspace through MuJoCo forward kinematics): the arm holds, and the decision says why."""

import numpy as np
import pytest

from robot_rl.paths import data_path
from robot_rl.policy.base import ActionChunk
from robot_rl.safety.filter import SafetyConfig, SafetyFilter
from robot_rl.safety.limits import CalibrationError, load_robot_limits

NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
HOME = np.array([0.0, 0.0, 0.2, -0.2, 0.0, 0.04])
DT = 0.1


@pytest.fixture
def f():
    flt = SafetyFilter(load_robot_limits(data_path("calibration", "sim_arm.yaml")),
                       SafetyConfig(max_observation_age=0.3, joint_state_timeout=0.3, teleop_timeout=0.3,
                                    handover_s=0.0, control_period_s=DT))
    flt.update_joint_state(NAMES, HOME, now=0.0)
    return flt


def chunk(stamp, rows):
    return ActionChunk(stamp, DT, list(NAMES), np.array(rows, dtype=float))


def test_velocity_and_acceleration_limit_the_approach_without_overshoot(f):
    target = HOME.copy()
    target[0] = 0.45  # within max_jump 0.5; 20 rad/s^2 and 3 rad/s allow 0.2, then 0.4 rad per 0.1 s step
    f.update_policy(chunk(0.0, [target] * 6), now=0.0)
    first = f.step(0.01)
    assert first.positions[0] == pytest.approx(0.2) and first.limited == ["shoulder_pan"]
    second = f.step(0.11)
    assert second.positions[0] == pytest.approx(0.45) and second.limited == []  # 0.25 left < 0.4 allowed: no overshoot
    assert f.step(0.21).positions[0] == pytest.approx(0.45)


def test_jump_command_is_refused_not_clipped(f):
    f.update_policy(chunk(0.0, [HOME + 0.05] * 3), now=0.0)
    before = f.step(0.01).positions.copy()
    far = HOME.copy()
    far[1] += 0.8
    reason = f.update_policy(chunk(0.05, [far] * 3), now=0.05)
    assert "jumps 0.800 on shoulder_lift from the measured position (max_jump 0.500" in reason
    between = [HOME + 0.05, HOME + 0.05 + np.array([0, 0, 0.7, 0, 0, 0])]
    assert "jumps 0.700 on elbow_flex from target 0" in f.update_policy(chunk(0.06, between), now=0.06)
    decision = f.step(0.11)  # the earlier chunk still runs: the refused ones changed nothing
    np.testing.assert_allclose(decision.positions, before)
    assert f.refused["jump"] == 2


def test_nan_action_is_refused_and_the_arm_holds(f):
    f.update_policy(chunk(0.0, [HOME] * 2), now=0.0)
    held = f.step(0.01).positions.copy()
    bad = HOME.copy()
    bad[3] = np.nan
    assert "non-finite" in f.update_policy(chunk(0.02, [bad] * 3), now=0.02)
    decision = f.step(0.21)
    assert decision.source == "hold" and np.all(np.isfinite(decision.positions))
    np.testing.assert_allclose(decision.positions, held)
    assert f.refused["non_finite"] == 1


def test_workspace_box_from_forward_kinematics_stops_a_dive_into_the_table(f):
    dive = HOME.copy()
    dive[1] = 1.0  # shoulder down: the grasp point would end 5 cm below the table
    f.update_engaged(True)
    decisions = []
    for k in range(15):
        now = 0.01 + k * DT
        f.update_joint_state(NAMES, f.last.positions if f.last.positions is not None else HOME, now=now)
        f.update_teleop(NAMES, dive, now=now)
        decisions.append(f.step(now))
    held = [d for d in decisions if d.source == "hold"]
    assert held, "the arm was allowed into the table"
    assert "workspace: grip would leave the box (z" in held[0].reason and "teleop command refused" in held[0].reason
    z = f.workspace.position(f.last.positions)[2]
    assert 0.005 <= z < 0.1  # stopped at the table, above it
    assert f.refused["workspace"] >= 1


def test_stale_camera_lost_teleop_estop_and_inference_stall_each_hold_with_a_reason(f):
    # stale camera: a chunk computed from a 0.5 s old observation
    f.update_joint_state(NAMES, HOME, now=0.5)
    assert "observation is 500 ms old" in f.update_policy(chunk(0.0, [HOME + 0.1] * 4), now=0.5)
    stale = f.step(0.5)
    assert stale.source == "none" and stale.reason == "no policy chunk" and f.refused["stale"] == 1
    # inference stall: the chunk runs out and nothing new arrives
    f.update_joint_state(NAMES, HOME, now=1.0)
    f.update_policy(chunk(1.0, [HOME + 0.01 * k for k in range(1, 4)]), now=1.0)
    f.step(1.05)
    f.update_joint_state(NAMES, HOME, now=1.5)
    stall = f.step(1.5)
    assert stall.source == "hold" and "no fresh chunk for 500 ms" in stall.reason
    # lost teleop: engaged, then the device goes quiet
    f.update_engaged(True)
    f.update_teleop(NAMES, HOME + 0.02, now=1.5)
    f.update_joint_state(NAMES, HOME, now=1.6)
    assert f.step(1.6).source == "teleop"
    f.update_joint_state(NAMES, HOME, now=2.0)
    lost = f.step(2.0)
    assert lost.source == "hold" and "teleop engaged but its command is stale" in lost.reason
    # e-stop in the middle of a chunk: frozen at the measured position, the rest of the chunk is dropped
    f.update_engaged(False)
    f.update_joint_state(NAMES, HOME + 0.03, now=2.1)
    f.update_policy(chunk(2.1, [HOME + 0.03 + 0.02 * k for k in range(1, 6)]), now=2.1)
    assert f.step(2.15).source == "policy"
    f.update_estop(True)
    for now in (2.25, 2.35, 2.45):
        stop = f.step(now)
        assert stop.source == "estop" and stop.reason == "e-stop latched"
        np.testing.assert_allclose(stop.positions, HOME + 0.03)


@pytest.mark.parametrize("extra, message", [
    ("joints:\n  - {name: a, lower: 0, upper: 1, max_velocity: 1, max_acceleration: 5}\n"
     "  - {name: b, lower: 0, upper: 1, max_velocity: 1}\n", "max_acceleration is given for 1 of 2 joints"),
    ("joints:\n  - {name: a, lower: 0, upper: 1, max_velocity: 1}\nmax_jump: [0.1, 0.2]\n", "field 'max_jump': expected 1"),
    ("joints:\n  - {name: a, lower: 0, upper: 1, max_velocity: 1}\n"
     "workspace: {model: nope.xml, link: grip, min: [0, 0, 0], max: [1, 1, 1]}\n", "workspace.model'.*nope.xml does not exist"),
    ("joints:\n  - {name: a, lower: 0, upper: 1, max_velocity: 1}\n"
     "workspace: {model: MODEL, link: grip, min: [0, 0, 1], max: [1, 1, 1]}\n", "min .* must be below max"),
])
def test_malformed_hardening_fields_name_file_and_field(tmp_path, extra, message):
    path = tmp_path / "arm.yaml"
    path.write_text(extra.replace("MODEL", str(data_path("sim", "tabletop.xml"))))
    with pytest.raises(CalibrationError, match=message):
        load_robot_limits(path)


def test_workspace_model_must_know_the_joints_and_the_link(tmp_path):
    path = tmp_path / "arm.yaml"
    model = data_path("sim", "tabletop.xml")
    path.write_text(f"joints:\n  - {{name: elbow, lower: 0, upper: 1, max_velocity: 1}}\n"
                    f"workspace: {{model: {model}, link: grip, min: [0, 0, 0], max: [1, 1, 1]}}\n")
    with pytest.raises(CalibrationError, match="joint 'elbow' is not in the workspace model"):
        SafetyFilter(load_robot_limits(path))
    path.write_text(f"joints:\n  - {{name: elbow_flex, lower: 0, upper: 1, max_velocity: 1}}\n"
                    f"workspace: {{model: {model}, link: tool0, min: [0, 0, 0], max: [1, 1, 1]}}\n")
    with pytest.raises(CalibrationError, match="no site or body 'tool0'"):
        SafetyFilter(load_robot_limits(path))
