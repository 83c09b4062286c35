import dataclasses

import numpy as np
import pytest

from robot_rl.paths import data_path
from robot_rl.policy.base import ActionChunk
from robot_rl.safety.filter import SafetyConfig, SafetyFilter
from robot_rl.safety.limits import load_robot_limits

NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
HOME = np.array([0.0, 0.0, 0.2, -0.2, 0.0, 0.02])  # gripper half open: offsets stay inside limits


def position_limits():
    """The sim arm's position limits alone: these tests exercise the other rules with large, quick moves
    (velocity, acceleration, jump and workspace rules have their own tests in test_hardening.py)."""
    limits = load_robot_limits(data_path("calibration", "sim_arm.yaml"))
    return dataclasses.replace(limits, max_velocity=np.full(len(limits.joint_names), 1e6), max_acceleration=None,
                               max_jump=None, workspace=None)


@pytest.fixture
def f():
    flt = SafetyFilter(position_limits(), SafetyConfig(
        max_observation_age=0.3, joint_state_timeout=0.3, teleop_timeout=0.3, handover_s=0.0))
    return flt


def chunk(stamp, rows, period=0.1, names=NAMES):
    return ActionChunk(stamp, period, list(names), np.array(rows, dtype=float))


def test_nothing_is_commanded_before_any_joint_state(f):
    assert f.update_policy(chunk(0.0, [HOME]), now=0.01) is None
    decision = f.step(0.02)
    assert decision.positions is None and decision.source == "none"


def test_policy_point_for_now_and_latency_compensation(f):
    f.update_joint_state(NAMES, HOME, now=1.0)
    rows = [HOME + 0.01 * k for k in range(1, 4)]
    assert f.update_policy(chunk(1.0, rows), now=1.01) is None
    np.testing.assert_allclose(f.step(1.01).positions, rows[0])
    f.update_joint_state(NAMES, HOME, now=1.12)
    np.testing.assert_allclose(f.step(1.12).positions, rows[1])  # first point already in the past: dropped
    f.update_joint_state(NAMES, HOME, now=1.35)
    held = f.step(1.35)
    assert held.source == "hold" and "exhausted" in held.reason
    np.testing.assert_allclose(held.positions, rows[1])


def test_commands_are_clamped_and_clamped_joints_reported(f):
    f.update_joint_state(NAMES, HOME, now=0.0)
    f.update_policy(chunk(0.0, [[9.0, 0, 0, 0, 0, 0.5]]), now=0.0)
    d = f.step(0.01)
    assert d.positions[0] == pytest.approx(2.1) and d.positions[5] == pytest.approx(0.045)
    assert d.clamped == ["shoulder_pan", "gripper"]


def test_stale_chunk_is_rejected_and_arm_holds(f):
    f.update_joint_state(NAMES, HOME, now=0.0)
    f.update_policy(chunk(0.0, [HOME + 0.1]), now=0.0)
    first = f.step(0.01).positions
    f.update_joint_state(NAMES, HOME, now=5.0)
    reason = f.update_policy(chunk(4.0, [HOME + 0.5] * 20), now=5.0)
    assert "1000 ms old" in reason
    d = f.step(5.0)
    assert d.source == "hold"
    np.testing.assert_allclose(d.positions, first)


def test_stale_joint_state_holds_last_safe_command(f):
    f.update_joint_state(NAMES, HOME, now=0.0)
    f.update_policy(chunk(0.0, [HOME + 0.1] * 10), now=0.0)
    f.step(0.05)
    f.update_policy(chunk(0.3, [HOME + 0.3] * 10), now=0.3)
    d = f.step(0.35)  # joint state is 0.35 s old > 0.3
    assert d.source == "hold" and "joint state stale" in d.reason
    np.testing.assert_allclose(d.positions, f.limits.clamp(HOME + 0.1)[0])


def test_teleop_wins_while_engaged_and_stale_teleop_holds(f):
    f.update_joint_state(NAMES, HOME, now=0.0)
    f.update_policy(chunk(0.0, [HOME + 0.1] * 10), now=0.0)
    f.update_engaged(True)
    f.update_teleop(NAMES, HOME - 0.1, now=0.01)
    d = f.step(0.02)
    assert d.source == "teleop"
    np.testing.assert_allclose(d.positions, np.maximum(HOME - 0.1, f.limits.lower))
    f.update_joint_state(NAMES, HOME, now=0.5)
    assert f.step(0.5).source == "hold"  # engaged, teleop command 0.49 s old
    f.update_engaged(False)
    f.update_policy(chunk(0.5, [HOME + 0.2] * 3), now=0.5)
    assert f.step(0.51).source == "policy"


def test_estop_latches_holds_measured_position_until_released(f):
    measured = HOME + 0.05
    f.update_joint_state(NAMES, measured, now=0.0)
    f.update_policy(chunk(0.0, [HOME + 0.3] * 10), now=0.0)
    f.step(0.01)
    f.update_estop(True)
    for t in (0.02, 0.5, 3.0):
        f.update_joint_state(NAMES, measured + 0.01, now=t)
        assert "e-stop" in f.update_policy(chunk(t, [HOME + 0.4] * 10), now=t)
        assert "e-stop" in f.update_teleop(NAMES, HOME, now=t)
        f.update_engaged(True)
        d = f.step(t)
        assert d.source == "estop"
        np.testing.assert_allclose(d.positions, measured)
    f.update_estop(True)  # repeated True keeps the original latch position
    np.testing.assert_allclose(f.step(3.1).positions, measured)
    f.update_estop(False)
    f.update_engaged(False)
    d = f.step(3.2)
    assert d.source == "hold"  # released: nothing old is replayed
    np.testing.assert_allclose(d.positions, measured)
    f.update_policy(chunk(3.2, [HOME + 0.2] * 3), now=3.2)
    assert f.step(3.21).source == "policy"


@pytest.mark.parametrize("names, values, match", [
    (NAMES[:5], [0.0] * 5, "missing joints"),
    (NAMES, [0.0] * 5, "6 joint names but values"),
    (NAMES, [np.nan] * 6, "non-finite"),
])
def test_malformed_inputs_are_rejected_with_reason(f, names, values, match):
    f.update_joint_state(NAMES, HOME, now=0.0)
    assert match in f.update_teleop(names, values, now=0.0)
    assert f.rejected == 1 and match in f.last_rejection


def test_joint_order_of_inputs_does_not_matter(f):
    order = list(reversed(NAMES))
    f.update_joint_state(order, HOME[::-1], now=0.0)
    f.update_policy(chunk(0.0, [(HOME + 0.1)[::-1]], names=order), now=0.0)
    np.testing.assert_allclose(f.step(0.01).positions, f.limits.clamp(HOME + 0.1)[0])


def test_new_episode_holds_the_measured_position_not_the_last_target(f):
    f.update_joint_state(NAMES, HOME, now=0.0)
    far = HOME + [0.3, 0.3, 0.0, 0.0, 0.0, 0.0]
    f.update_policy(chunk(0.0, [far]), now=0.01)
    assert f.step(0.02).source == "policy"
    f.new_episode(now=1.0)  # e.g. the sim reset the arm to HOME under us
    assert f.step(1.01).positions is None  # nothing until the new position is measured
    assert f.update_policy(chunk(0.95, [far]), now=1.02) is not None  # computed before the episode began
    f.update_joint_state(NAMES, HOME, now=1.03)
    held = f.step(1.04)
    assert held.source == "hold" and np.allclose(held.positions, HOME)  # not dragged back to `far`
    assert f.update_policy(chunk(1.03, [HOME + 0.01]), now=1.05) is None
    assert f.step(1.06).source == "policy"


def handover_filter(seconds):
    return SafetyFilter(position_limits(), SafetyConfig(handover_s=seconds))


@pytest.mark.parametrize("direction", ["policy->teleop", "teleop->policy"])
def test_handover_between_policy_and_teleop_blends_without_a_jump(direction):
    f = handover_filter(0.5)
    far = HOME + np.array([0.6, -0.4, 0.5, 0.3, -0.5, 0.0])
    start, end = (HOME, far) if direction == "policy->teleop" else (far, HOME)
    t = 0.0
    f.update_joint_state(NAMES, HOME, now=t)
    first_engaged = direction == "teleop->policy"
    f.update_engaged(first_engaged)
    commands = []
    for i in range(20):  # 2 s at 10 Hz; control passes at 0.5 s
        t = 0.1 * i
        f.update_joint_state(NAMES, HOME, now=t)
        if i == 5:
            f.update_engaged(not first_engaged)
        f.update_policy(chunk(t, [start if direction == "policy->teleop" else end] * 3), now=t)
        f.update_teleop(NAMES, end if direction == "policy->teleop" else start, now=t)
        commands.append(f.step(t + 0.001).positions)
    commands = np.array(commands)
    steps = np.abs(np.diff(commands, axis=0)).max(axis=1)
    distance = np.abs(end - start).max()
    # the switch is spread over 0.5 s: no tick moves more than a fifth of the distance (plus rounding)
    assert steps.max() <= distance * 0.1 / 0.5 + 1e-9
    np.testing.assert_allclose(commands[4], start)
    np.testing.assert_allclose(commands[-1], end)  # and it arrives
    assert np.abs(commands[7] - start).max() > 0  # moving in between


def test_without_handover_the_switch_is_immediate():
    f = handover_filter(0.0)
    f.update_joint_state(NAMES, HOME, now=0.0)
    f.update_policy(chunk(0.0, [HOME] * 3), now=0.0)
    f.step(0.01)
    f.update_engaged(True)
    f.update_teleop(NAMES, HOME + 0.3 * (np.arange(6) < 5), now=0.02)
    np.testing.assert_allclose(f.step(0.03).positions[:5], (HOME + 0.3)[:5])
