"""Teleop devices and the controller: mappings, a real pseudo-terminal for the keyboard, the simulated
human against the real oracle and MuJoCo scene. SpaceMouse and leader arm run against stand-ins for
the vendor library's lowest level (pyspacemouse's state, LeRobot's teleoperator) since no device is
attached here."""

import os
import types

import numpy as np
import pytest

from robot_rl.paths import data_path
from robot_rl.safety.limits import load_robot_limits
from robot_rl.teleop import TeleopContext, TeleopController, TeleopReading, make_device

NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
HOME = np.array([0.0, 0.0, 0.2, -0.2, 0.0, 0.04])
LIMITS = load_robot_limits(data_path("calibration", "sim_arm.yaml"))


def test_unknown_device_and_bad_options_name_what_is_expected():
    with pytest.raises(ValueError, match="unknown teleop device 'wiimote'.*joy"):
        make_device("wiimote", NAMES)
    with pytest.raises(ValueError, match="unknown options \\['buttons'\\]"):
        make_device("joy", NAMES, {"buttons": 3})
    with pytest.raises(ValueError, match="option 'axes': 2 entries for 6 joints"):
        make_device("joy", NAMES, {"axes": [0, 1]})


def test_joy_dead_man_jogging_events_and_silence():
    joy = make_device("joy", NAMES)
    axes, buttons = [0.0] * 8, [0] * 11
    buttons[4] = 1  # LB held
    axes[0] = 1.0  # left stick full right -> shoulder_pan at full speed
    axes[1] = 0.05  # inside the deadzone
    joy.feed(axes, buttons, now=0.0)
    r = joy.read(TeleopContext(now=0.05))
    assert r.engaged and r.velocity[0] == pytest.approx(0.6) and r.velocity[1] == 0.0 and r.events == []
    buttons[0] = 1  # A: success, once however long it is held
    joy.feed(axes, buttons, now=0.1)
    joy.feed(axes, buttons, now=0.2)
    assert joy.read(TeleopContext(now=0.2)).events == ["success"]
    assert joy.read(TeleopContext(now=0.25)).events == []
    silent = joy.read(TeleopContext(now=1.0))  # nothing for 0.8 s > timeout: stop jogging, keep control
    assert silent.engaged and not silent.velocity.any()
    buttons[4] = 0
    joy.feed(axes, buttons, now=1.1)
    assert not joy.read(TeleopContext(now=1.1)).engaged  # let go: back to the policy


def test_keyboard_reads_a_real_terminal_without_an_x_server():
    master, slave = os.openpty()
    try:
        kb = make_device("keyboard", NAMES, {"tty": os.ttyname(slave)})
        with kb:
            assert not kb.read(TeleopContext(now=0.0)).engaged
            os.write(master, b" qq1")
            r = kb.read(TeleopContext(now=1.0))
            assert r.engaged and r.events == ["success"]
            assert r.velocity[0] == pytest.approx(0.6) and not r.velocity[1:].any()
            assert not kb.read(TeleopContext(now=1.2)).velocity.any()  # a press jogs for press_s only
            os.write(master, b"h ")  # gripper minus, then give control back
            r = kb.read(TeleopContext(now=2.0))
            assert not r.engaged and r.velocity[5] == pytest.approx(-0.05)
    finally:
        os.close(master)
        os.close(slave)


def test_keyboard_refuses_something_that_is_not_a_terminal(tmp_path):
    f = tmp_path / "not_a_tty"
    f.write_text("")
    with pytest.raises(OSError, match="not a terminal"):
        make_device("keyboard", NAMES, {"tty": str(f)}).connect()


def test_spacemouse_maps_axes_and_toggles_on_button_press():
    states = []
    backend = types.SimpleNamespace(open=lambda **kw: True, read=lambda: states.pop(0), close=lambda: None)
    from robot_rl.teleop.spacemouse import SpaceMouseConfig, SpaceMouseDevice

    mouse = SpaceMouseDevice(SpaceMouseConfig(), NAMES, backend=backend)
    mouse.connect()
    state = lambda buttons, **axes: types.SimpleNamespace(**{a: axes.get(a, 0.0) for a in  # noqa: E731
                                                           ("x", "y", "z", "roll", "pitch", "yaw")}, buttons=buttons)
    states += [state([1, 0], yaw=-1.0), state([1, 0], x=0.5), state([0, 1])]
    r = mouse.read(TeleopContext())
    assert r.engaged and r.velocity[0] == pytest.approx(-0.6)
    r = mouse.read(TeleopContext())  # still held: no second toggle
    assert r.engaged and r.velocity[1] == pytest.approx(0.6 * (0.5 - 0.08) / 0.92)
    assert mouse.read(TeleopContext()).events == ["success"]


def test_leader_arm_converts_lerobot_units_and_engages_from_the_keyboard():
    from robot_rl.teleop.leader_arm import LeaderArmConfig, LeaderArmDevice

    class Leader:  # LeRobot's Teleoperator surface: connect, is_connected, get_action, disconnect
        is_connected = False

        def connect(self):
            self.is_connected = True

        def get_action(self):
            return {"shoulder_pan.pos": 90.0, "shoulder_lift.pos": -45.0, "elbow_flex.pos": 0.0,
                    "wrist_flex.pos": 0.0, "wrist_roll.pos": 0.0, "gripper.pos": 100.0}

        def disconnect(self):
            self.is_connected = False

    master, slave = os.openpty()
    try:
        arm = LeaderArmDevice(LeaderArmConfig(keyboard_tty=os.ttyname(slave)), NAMES, teleoperator=Leader())
        with arm:
            os.write(master, b" ")
            r = arm.read(TeleopContext())
            assert r.engaged
            np.testing.assert_allclose(r.positions, [np.pi / 2, -np.pi / 4, 0, 0, 0, 0.045])
        bad = LeaderArmDevice(LeaderArmConfig(keys=["a.pos"] * 6), NAMES, teleoperator=Leader(), keyboard=object())
        with pytest.raises(KeyError, match="lacks \\['a.pos'"):
            bad.positions()
    finally:
        os.close(master)
        os.close(slave)


def test_controller_starts_a_takeover_from_the_executed_command_and_never_winds_up():
    ctl = TeleopController(LIMITS, max_lead=0.3)
    executed = HOME + np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.0])
    ctx = TeleopContext(now=0.0, joint_names=NAMES, measured=HOME, executed=executed)
    assert ctl.step(TeleopReading(engaged=False), ctx).positions is None
    ctx.now = 0.1
    out = ctl.step(TeleopReading(engaged=True, velocity=np.zeros(6)), ctx)
    assert out.engaged_changed
    np.testing.assert_allclose(out.positions, executed)  # no jump on engagement
    v = np.zeros(6)
    v[0] = 1.0
    for i in range(2, 30):  # 3 s of full jog against an arm that does not move
        ctx.now = 0.1 * i
        out = ctl.step(TeleopReading(engaged=True, velocity=v), ctx)
    assert out.positions[0] == pytest.approx(HOME[0] + 0.3)  # capped at max_lead ahead of the measured joint
    out = ctl.step(TeleopReading(engaged=True, positions=np.array([9.0, 0, 0, 0, 0, 0])), ctx)
    assert out.positions[0] == pytest.approx(2.1)  # absolute targets are clamped to the limits


def test_scripted_human_takes_over_when_the_policy_drifts_and_hands_back():
    from robot_rl.sim.tabletop import TabletopWorld
    from robot_rl.sim.tasks import TASKS
    from robot_rl.sim.world import WorldConfig

    world = TabletopWorld(WorldConfig(cameras=[], image_width=32, image_height=24))
    try:
        world.reset(0, "pick_cube")
        human = make_device("scripted", NAMES, {"threshold": 0.2, "patience": 3, "takeover_s": 1.0, "cooldown_s": 0.5})
        ctx = TeleopContext(joint_names=list(world.joint_names), instruction=TASKS["pick_cube"].instruction,
                            new_episode=True)
        engaged = []
        for i in range(40):
            ctx.now = 0.1 * i
            ctx.measured, ctx.objects = world.joint_positions(), world.object_poses()
            oracle = human.oracle_target(ctx)
            # the policy agrees with the oracle for 1 s, then drifts 0.5 rad off on the shoulder
            ctx.policy_target = oracle + (np.array([0.5, 0, 0, 0, 0, 0]) if i >= 10 else 0.0)
            r = human.read(ctx)
            ctx.new_episode = False
            engaged.append(r.engaged)
            if r.engaged:
                np.testing.assert_allclose(r.positions, human.oracle_target(ctx))
            world.step(r.positions if r.engaged else ctx.policy_target)
        engaged = np.array(engaged)
        assert not engaged[:12].any()  # agreeing, then patience: 3 drifting reads before reacting
        assert engaged[12:22].all()  # takes over for takeover_s = 1 s
        assert not engaged[22:27].any()  # hands back, cooldown 0.5 s
        assert engaged[27:].any()  # still drifting: steps in again
        assert human.total_interventions == 2
    finally:
        world.close()


def test_scripted_human_on_stall_lets_progress_through_and_takes_over_when_it_stops():
    from robot_rl.sim.tabletop import TabletopWorld
    from robot_rl.sim.tasks import TASKS
    from robot_rl.sim.world import WorldConfig

    world = TabletopWorld(WorldConfig(cameras=[], image_width=32, image_height=24))
    try:
        world.reset(0, "reach_cube")
        human = make_device("scripted", NAMES, {"trigger": "stall", "stall_s": 1.0, "stall_gain": 0.05,
                                                "takeover_s": 1.0, "cooldown_s": 0.5})
        ctx = TeleopContext(joint_names=list(world.joint_names), instruction=TASKS["reach_cube"].instruction,
                            new_episode=True)
        engaged, progress, drift = [], [], []
        for i in range(30):
            ctx.now = 0.1 * i
            ctx.measured, ctx.objects, ctx.progress = world.joint_positions(), world.object_poses(), world.task_progress()
            # 0.4 s along the oracle's path with the wrist rolled 0.3 rad off it (a drift, not a failure),
            # then the policy holds still: stuck
            rolled = human.oracle_target(ctx) + np.array([0, 0, 0, 0, 0.3, 0])
            ctx.policy_target = rolled if i < 4 else world.joint_positions()
            r = human.read(ctx)
            ctx.new_episode = False
            engaged.append(r.engaged)
            progress.append(ctx.progress)
            drift.append(human.last_drift)
            world.step(r.positions if r.engaged else ctx.policy_target)
        engaged = np.array(engaged)
        assert max(drift[:4]) > 0.2  # what the drift trigger (threshold 0.2) would have corrected
        assert progress[4] - progress[3] >= 0.05 and progress[13] - progress[4] < 0.05  # the last gain: at 0.4 s
        assert not engaged[:14].any()  # progress, then 1 s of stall_s
        assert engaged[14:24].all()  # 1.4 s: stuck for stall_s, takes over for takeover_s
        assert world.success() and not engaged[24:].any()  # the oracle finished the reach; nothing left to correct
        assert human.total_interventions == 1
    finally:
        world.close()


def test_scripted_human_on_drift_and_stall_corrects_a_stuck_policy_that_the_drift_trigger_misses():
    from robot_rl.sim.tabletop import TabletopWorld
    from robot_rl.sim.tasks import TASKS
    from robot_rl.sim.world import WorldConfig

    world = TabletopWorld(WorldConfig(cameras=[], image_width=32, image_height=24))
    try:
        world.reset(0, "reach_cube")

        def engaged(trigger: str, offset: np.ndarray) -> np.ndarray:
            human = make_device("scripted", NAMES, {"trigger": trigger, "stall_s": 1.0, "takeover_s": 1.0})
            ctx = TeleopContext(joint_names=list(world.joint_names), instruction=TASKS["reach_cube"].instruction,
                                measured=world.joint_positions(), objects=world.object_poses(),
                                progress=world.task_progress(), new_episode=True)
            out = []
            for i in range(20):  # the world is not stepped: whatever the policy proposes, the arm is stuck
                ctx.now = 0.1 * i
                ctx.policy_target = human.oracle_target(ctx) + offset
                out.append(human.read(ctx).engaged)
                ctx.new_episode = False
            return np.array(out)

        agrees, shoulder_off = np.zeros(6), np.array([0.5, 0, 0, 0, 0, 0])
        # proposing the oracle's own step while nothing moves: never a drift, a stall after stall_s
        assert not engaged("drift", agrees).any()
        both = engaged("drift+stall", agrees)
        assert not both[:10].any() and both[10:].all()
        # and a drift is still a drift: 3 reads of patience
        drifting = engaged("drift+stall", shoulder_off)
        assert not drifting[:2].any() and drifting[2:12].all()
    finally:
        world.close()


def test_scripted_human_on_path_judges_where_the_gripper_is_sent_not_the_wrist_roll():
    from robot_rl.sim.tabletop import TabletopWorld
    from robot_rl.sim.tasks import TASKS
    from robot_rl.sim.world import WorldConfig

    world = TabletopWorld(WorldConfig(cameras=[], image_width=32, image_height=24))
    try:
        world.reset(0, "reach_cube")

        def read(trigger: str, proposal) -> tuple[np.ndarray, list[float]]:
            human = make_device("scripted", NAMES, {"trigger": trigger, "takeover_s": 1.0})
            ctx = TeleopContext(joint_names=list(world.joint_names), instruction=TASKS["reach_cube"].instruction,
                                measured=world.joint_positions(), objects=world.object_poses(),
                                progress=world.task_progress(), new_episode=True)
            out, errors = [], []
            for i in range(8):  # the world is not stepped: each read judges the same state
                ctx.now = 0.1 * i
                ctx.policy_target = proposal(human.oracle_target(ctx))
                out.append(human.read(ctx).engaged)
                errors.append(human.last_path_error)
                ctx.new_episode = False
            return np.array(out), errors

        roll_off = lambda oracle: oracle + np.array([0, 0, 0, 0, 1.0, 0])  # turning the wrist slower than the oracle commands
        def holds_still(oracle):  # the gripper kept where it is (the wrist turned as the oracle turns it)
            return np.concatenate([world.joint_positions()[:4], oracle[4:]])

        # a wrist roll 1 rad behind: a drift after 3 reads, but the gripper is sent where the oracle sends it
        assert engaged_from(read("drift", roll_off)[0]) == 2
        engaged, errors = read("path", roll_off)
        assert not engaged.any() and max(errors) < 1e-6
        # holding still while the oracle moves the gripper 3.5 cm a step: within 0.2 rad of its joint
        # targets, 3.5 cm off its path
        assert engaged_from(read("drift", holds_still)[0]) is None
        engaged, errors = read("path", holds_still)
        assert 0.03 < errors[0] < 0.04 and engaged_from(engaged) == 2
        # joined with the stall trigger, either fires
        assert engaged_from(read("path+stall", holds_still)[0]) == 2
    finally:
        world.close()


def engaged_from(engaged: np.ndarray) -> int | None:
    """Index of the first engaged read, and check that the human then stays engaged to the end."""
    if not engaged.any():
        return None
    first = int(np.argmax(engaged))
    assert engaged[first:].all()
    return first


def test_scripted_human_on_stall_without_progress_and_unknown_triggers_are_refused():
    with pytest.raises(ValueError, match=r"trigger 'stuck': expected one of \['drift', 'path', 'stall', 'drift\+stall', 'path\+stall'\]"):
        make_device("scripted", NAMES, {"trigger": "stuck"})
    human = make_device("scripted", NAMES, {"trigger": "stall"})
    from robot_rl.sim.tasks import TASKS
    from robot_rl.sim.tabletop import TabletopWorld
    from robot_rl.sim.world import WorldConfig

    world = TabletopWorld(WorldConfig(cameras=[], image_width=32, image_height=24))
    try:
        world.reset(0, "reach_cube")
        ctx = TeleopContext(0.0, list(world.joint_names), world.joint_positions(), None, world.joint_positions(),
                            TASKS["reach_cube"].instruction, world.object_poses(), None, new_episode=True)
        with pytest.raises(ValueError, match=r"trigger 'stall' needs the task's ground-truth progress.*/sim/progress"):
            human.read(ctx)
    finally:
        world.close()
