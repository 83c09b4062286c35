"""The LeRobot arm driver against lerobot's real SO-101 and Koch classes (run in .venv-lerobot:
make test-lerobot).

No arm is plugged in, so the servos are simulated at the lowest level there is: the serial line.
lerobot's SOFollower and KochFollower, their Feetech and Dynamixel motor buses, the vendor SDKs and
pyserial all run unchanged and talk Feetech protocol 0 / Dynamixel protocol 2.0 over a pty to
simulated STS3215 / XL430 / XL330 servos (robot_rl.robots.servo_sim). The tests check what reaches
the servos' registers, not what the driver believes it sent.
"""

import json
import sys
import time

import numpy as np
import pytest

from robot_rl.paths import data_path
from robot_rl.robots import RobotConfig, RobotError, make_robot
from robot_rl.robots.servo_sim import DynamixelBus, FeetechBus, example_calibration
from robot_rl.safety.limits import load_robot_limits

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
CALIBRATION = example_calibration("so101")
ARMS = {"so101_follower": (FeetechBus.so_arm, example_calibration("so101")),
        "koch_follower": (DynamixelBus.koch_arm, example_calibration("koch"))}


def expected_reading(present: dict[int, int], calibration=CALIBRATION) -> np.ndarray:
    """What the driver must report for servo positions (homed ticks): lerobot's degrees as radians
    around the calibrated range's middle for the body, 0..100 over the range for the gripper."""
    values = []
    for motor_id, name in enumerate(JOINTS, start=1):
        cal = calibration[name]
        low, high = cal["range_min"], cal["range_max"]
        if name == "gripper":
            values.append((min(max(present[motor_id], low), high) - low) / (high - low) * 100)
        else:
            values.append(np.deg2rad((present[motor_id] - (low + high) / 2) * 360 / 4095))
    return np.array(values)


POSITIONS = {"shoulder_pan": 2300, "shoulder_lift": 1500, "elbow_flex": 2600, "wrist_flex": 2000,
             "wrist_roll": 1000, "gripper": 2500}


@pytest.fixture
def calibration_dir(tmp_path):
    (tmp_path / "follower.json").write_text(json.dumps(CALIBRATION))
    return tmp_path


@pytest.fixture
def servos(tmp_path):
    with FeetechBus.so_arm(CALIBRATION, link=tmp_path / "ttySO101", positions=POSITIONS) as bus:
        yield bus


def arm(servos, calibration_dir, **overrides):
    values = {"type": "lerobot", "joint_names": list(JOINTS), "robot_type": "so101_follower",
              "port": servos.device, "id": "follower", "calibration_dir": str(calibration_dir), **overrides}
    return make_robot(RobotConfig.from_dict(values))


@pytest.mark.parametrize("robot_type", sorted(ARMS))
def test_reads_and_commands_reach_the_servos_through_lerobots_arm_classes(robot_type, tmp_path):
    make_bus, calibration = ARMS[robot_type]
    (tmp_path / "follower.json").write_text(json.dumps(calibration))
    with make_bus(calibration, link=tmp_path / "ttyARM", positions=POSITIONS) as servos:
        _reads_and_commands(servos, arm(servos, tmp_path, robot_type=robot_type), calibration)


def _reads_and_commands(servos, robot, calibration):
    before = servos.present_positions()
    with robot:
        reading = robot.read()
        np.testing.assert_allclose(reading.positions, expected_reading(before, calibration), atol=2e-3)
        assert abs(reading.stamp - time.time()) < 1.0
        # connecting held the arm where it was: torque on, goal = present, nothing moved
        for motor_id in range(1, 7):
            assert servos.torque(motor_id) == 1
            goal = servos.value(motor_id, "goal_position")
            assert abs(goal - before[motor_id]) <= 1, (motor_id, goal, before[motor_id])
        time.sleep(0.2)
        assert max(abs(a - b) for a, b in zip(servos.present_positions().values(), before.values())) <= 1

        target = reading.positions + np.array([0.3, -0.2, 0.25, 0.1, -0.5, 0.0])
        target[-1] = 70.0  # the gripper on lerobot's 0..100 scale
        robot.command(target)
        time.sleep(0.6)  # ~3000 ticks/s: every joint is there well within this
        np.testing.assert_allclose(robot.read().positions, target, atol=3e-3)
        present = servos.present_positions()
        np.testing.assert_allclose(expected_reading(present, calibration), target, atol=3e-3)
        cal = calibration["gripper"]
        assert abs(present[6] - (cal["range_min"] + 0.7 * (cal["range_max"] - cal["range_min"]))) <= 2

        with pytest.raises(RobotError, match="6 finite targets"):
            robot.command([0.0, float("nan"), 0, 0, 0, 50])
    for motor_id in range(1, 7):  # lerobot's disconnect lets go of the arm
        assert servos.torque(motor_id) == 0


def test_a_limits_file_that_names_other_joints_is_refused_before_anything_moves(servos, calibration_dir):
    robot = make_robot(RobotConfig.from_dict({
        "type": "lerobot", "joint_names": JOINTS[:5] + ["jaw"], "robot_type": "so101_follower",
        "port": servos.device, "id": "follower", "calibration_dir": str(calibration_dir)}))
    with pytest.raises(RobotError, match=r"motors .* differ from the limits file's joints"):
        robot.connect()
    assert servos.packets == 0  # checked before the port was opened


def test_without_lerobots_calibration_file_the_driver_says_how_to_make_one(servos, tmp_path):
    empty = tmp_path / "no_calibration"
    with pytest.raises(RobotError, match=r"no lerobot calibration at .*follower\.json.*lerobot-calibrate "
                                         r"--robot.type=so101_follower"):
        arm(servos, empty).connect()
    assert servos.packets == 0


@pytest.mark.parametrize("robot_type", sorted(ARMS))
def test_motors_calibrated_differently_from_the_file_are_refused_unless_told_to_write_it(robot_type, tmp_path):
    make_bus, calibration = ARMS[robot_type]
    (tmp_path / "follower.json").write_text(json.dumps(calibration))
    other = {name: dict(values, homing_offset=values["homing_offset"] + 300) for name, values in calibration.items()}
    with make_bus(other, link=tmp_path / "ttyOther") as servos:
        shafts = {i: s.actual for i, s in servos.servos.items()}
        with pytest.raises(RobotError, match="different calibration than .*follower.json"):
            arm(servos, tmp_path, robot_type=robot_type).connect()
        time.sleep(0.1)
        servos.present_positions()
        assert {i: s.actual for i, s in servos.servos.items()} == shafts  # refused: nothing moved
        assert servos.value(1, "homing_offset") == other["shoulder_pan"]["homing_offset"]

        # written with torque off (a Dynamixel refuses EEPROM writes with torque on), goal := present
        with arm(servos, tmp_path, robot_type=robot_type, write_calibration=True) as robot:
            for motor_id, name in enumerate(JOINTS, start=1):
                assert servos.value(motor_id, "homing_offset") == calibration[name]["homing_offset"]
            robot.read()
            time.sleep(0.2)
            servos.present_positions()
            moved = {i: s.actual - shafts[i] for i, s in servos.servos.items()}
            assert max(abs(v) for v in moved.values()) <= 1, moved  # new offsets under shafts that stayed put
            assert robot.read().positions.shape == (6,)


def test_a_pulled_cable_fails_loudly_and_the_driver_reconnects_when_it_is_back(servos, calibration_dir):
    with arm(servos, calibration_dir, reconnect_s=0.2) as robot:
        first = robot.read().positions
        servos.unplug()
        with pytest.raises(RobotError, match=r"so101_follower on .*ttySO101: reading the joints failed"):
            robot.read()
        with pytest.raises(RobotError, match="not connected; command not sent"):
            robot.command(first)
        with pytest.raises(RobotError, match="(disconnected|cannot connect)"):
            robot.read()  # still unplugged: each attempt says so
        servos.replug()  # the same symlink, a new tty behind it
        deadline = time.monotonic() + 5.0
        while True:
            try:
                reading = robot.read()
                break
            except RobotError:
                assert time.monotonic() < deadline, "no reconnection within 5 s"
                time.sleep(0.05)
        np.testing.assert_allclose(reading.positions, first, atol=2e-3)  # the servos held while unplugged
        assert robot.reconnects == 1
        target = first + np.array([0.2, 0, 0, 0, 0, 0])
        robot.command(target)
        time.sleep(0.4)
        np.testing.assert_allclose(robot.read().positions, target, atol=3e-3)


def test_robot_driver_node_publishes_joint_states_and_executes_commands_over_dds(servos, calibration_dir):
    import rclpy
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from robot_rl.nodes.robot_driver_node import RobotDriverNode
    from robot_rl.ros import qos
    from robot_rl.ros.spinning import NodeSpinners

    limits = load_robot_limits(data_path("calibration", "so101.yaml"))
    assert limits.joint_names == JOINTS
    rclpy.init()
    spinners = NodeSpinners()  # each node on its own executor thread, as in its own process
    driver = RobotDriverNode(parameter_overrides=[
        Parameter("robot_type", value="lerobot"), Parameter("port", value=servos.device),
        Parameter("robot_id", value="follower"), Parameter("calibration_dir", value=str(calibration_dir)),
        Parameter("robot_limits_file", value=str(data_path("calibration", "so101.yaml"))),
        Parameter("rate_hz", value=30.0)])
    probe = rclpy.create_node("probe")
    states: list[JointState] = []
    probe.create_subscription(JointState, "/joint_states", states.append, qos.SENSOR_SUB)
    command = probe.create_publisher(Float64MultiArray, "/robot/command", qos.COMMAND)
    for node in (driver, probe):
        spinners.add(node)
    try:
        wait(lambda: len(states) >= 5, 10, "/joint_states from robot_driver_node")
        assert list(states[-1].name) == JOINTS
        start = np.array(states[-1].position)
        np.testing.assert_allclose(start, expected_reading(servos.present_positions()), atol=3e-3)

        target = start + np.array([-0.3, 0.2, 0.0, 0.15, 0.4, 0.0])
        target[-1] = 30.0
        for _ in range(10):  # the safety node streams its commands at the control rate
            command.publish(Float64MultiArray(data=target.tolist()))
            time.sleep(0.05)
        wait(lambda: np.allclose(states[-1].position, target, atol=3e-3), 5, "the arm at the commanded target")
        np.testing.assert_allclose(expected_reading(servos.present_positions()), target, atol=3e-3)

        # a malformed command is refused and logged; the servos keep their goal
        goal = servos.value(1, "goal_position")
        command.publish(Float64MultiArray(data=[0.0, 1.0]))
        wait(lambda: driver.refused >= 1, 5, "the malformed command refused")
        assert "expected 6 finite targets" in driver.problem
        assert servos.value(1, "goal_position") == goal
        # published at ~30 Hz: the median period, since a serial round trip through the simulated
        # servos (a thread of this test process) can now and then hold a read past a period or two
        periods = np.diff([s.header.stamp.sec + s.header.stamp.nanosec * 1e-9 for s in states[-20:]])
        assert 1 / 45 < np.median(periods) < 1 / 15, periods
    finally:
        spinners.shutdown(timeout_s=5.0)
        driver.close()
        driver.destroy_node()
        probe.destroy_node()
        rclpy.shutdown()
    for motor_id in range(1, 7):
        assert servos.torque(motor_id) == 0


def test_the_pip_set_up_launches_the_driver_with_lerobots_python(servos, calibration_dir, tmp_path):
    """The README's pip path: robot-rl launch in the main environment, robot_driver_node under
    launch-prefix:=.venv-lerobot/bin/python with config/robot_so101.yaml; the graph sees the arm."""
    import signal
    import subprocess
    from pathlib import Path

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from robot_rl.ros import qos

    main_cli = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "robot-rl"
    assert main_cli.exists(), "make test-lerobot runs after make setup: the main environment is there"
    launch = tmp_path / "arm.yaml"
    launch.write_text(f"""launch:
- arg: {{name: driver_prefix, default: ""}}
- node:
    pkg: robot_rl
    exec: robot_driver_node
    name: robot_driver
    on_exit: shutdown
    launch-prefix: "$(var driver_prefix)"
    param:
    - {{from: "$(find-pkg-share robot_rl)/config/robot_so101.yaml"}}
    - {{name: robot_limits_file, value: "$(find-pkg-share robot_rl)/calibration/so101.yaml"}}
    - {{name: port, value: "{servos.device}"}}
    - {{name: calibration_dir, value: "{calibration_dir}"}}
""")
    process = subprocess.Popen([str(main_cli), "launch", str(launch), f"driver_prefix:={sys.executable}"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rclpy.init()
    probe = rclpy.create_node("probe")
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    states: list[JointState] = []
    probe.create_subscription(JointState, "/joint_states", states.append, qos.SENSOR_SUB)
    command = probe.create_publisher(Float64MultiArray, "/robot/command", qos.COMMAND)
    try:
        deadline = time.monotonic() + 30
        while len(states) < 3:
            assert time.monotonic() < deadline and process.poll() is None, "no /joint_states from the launched driver"
            executor.spin_once(timeout_sec=0.1)
        assert list(states[-1].name) == JOINTS
        target = np.array(states[-1].position) + np.array([0.25, 0, 0, 0, 0, 0])
        deadline = time.monotonic() + 10
        while not np.allclose(states[-1].position, target, atol=3e-3):
            assert time.monotonic() < deadline, "the launched driver did not move the arm"
            command.publish(Float64MultiArray(data=target.tolist()))
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown()
        probe.destroy_node()
        rclpy.shutdown()
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out[-3000:]
    assert "[robot_driver]" in out and f"lerobot so101_follower on {servos.device}" in out, out[-3000:]
    assert servos.torque(1) == 0  # the driver let go of the arm on the way out


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_robot_rl_sim_servos_stands_in_for_the_arm_until_stopped(tmp_path):
    """The dry-run command: lerobot's SO-101 connects to it by the printed link, with the calibration
    file it wrote, and SIGTERM ends it cleanly."""
    import signal
    import subprocess
    import sys

    link, folder = tmp_path / "ttySIM", tmp_path / "calibration"
    process = subprocess.Popen([sys.executable, "-m", "robot_rl.cli", "sim-servos", "--link", str(link),
                                "--calibration-dir", str(folder), "--id", "bench_arm"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        assert "wrote an example calibration" in lines[0] and f"on {link}" in lines[1], lines
        values = {"type": "lerobot", "joint_names": list(JOINTS), "port": str(link), "id": "bench_arm",
                  "calibration_dir": str(folder)}
        with make_robot(RobotConfig.from_dict(values)) as robot:
            start = robot.read().positions
            robot.command(start + np.array([0.2, 0, 0, 0, 0, 10.0]))
            time.sleep(0.4)
            np.testing.assert_allclose(robot.read().positions, start + np.array([0.2, 0, 0, 0, 0, 10.0]), atol=3e-3)
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=10)
    assert process.returncode == 0, out
    assert "packets answered" in out and not link.exists()


def test_connect_tries_the_line_again_when_the_servos_do_not_answer_yet(servos, calibration_dir, tmp_path):
    import threading

    servos.unplug()
    threading.Timer(0.5, servos.replug).start()  # the adapter comes up while connect() is trying
    with arm(servos, calibration_dir, reconnect_s=0.2, connect_attempts=10) as robot:
        assert robot.read().positions.shape == (len(JOINTS),)
    # a configuration error is not retried: no calibration file for this id
    started = time.monotonic()
    with pytest.raises(RobotError, match="no lerobot calibration"):
        with arm(servos, tmp_path / "empty", reconnect_s=5.0, connect_attempts=3):
            pass
    assert time.monotonic() - started < 5.0
