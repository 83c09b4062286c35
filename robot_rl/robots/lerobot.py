"""LeRobot arms (SO-100/SO-101, Koch) through lerobot's own Robot API (``pip install lerobot`` in its
own environment: it pins an older torch than robot_rl's main environment; ``make lerobot-env``
builds one with the ROS 2 wheels too, so ``robot_driver_node`` runs there).

lerobot's ``{motor}.pos`` observations and actions map to the limits file's joints by name. With
``use_degrees`` (the default here) lerobot reports body joints in degrees, which this driver turns
into radians; the gripper stays on lerobot's 0-100 scale (so the limits file gives the gripper as
0..100).

Calibration is lerobot's: the file ``lerobot-calibrate`` wrote (``<calibration_dir>/<id>.json``) is
reused as it is, and this driver never calibrates on its own (a calibration moves the arm by hand,
with a person watching). It refuses to run when that file is missing, or when the motors hold a
different calibration than the file (another arm's file, or a re-flashed motor): joint angles would
be wrong. ``write_calibration`` writes the file's calibration to the motors instead (lerobot's own
"use the calibration file" answer); that moves nothing.

On connect the arm holds where it is (goal := present position). A serial failure (cable pulled,
power lost) raises ``RobotError`` naming the port; the next ``read`` reconnects, at most once per
``reconnect_s``, and the arm holds its last goal meanwhile (the servos keep it). No joint state is
published while disconnected, so the safety node sees the observation age and holds too.

Tested in the lerobot environment (``make test-lerobot``) against lerobot's real SO-101 and Koch
classes, the Feetech and Dynamixel SDKs and pyserial, talking to simulated servos on a pty
(``robot_rl.robots.servo_sim``).
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from robot_rl.robots.base import JointReading, Robot, RobotConfig, RobotError

# lerobot robot type -> the module whose import registers its config class
ROBOT_MODULES = {"so100_follower": "lerobot.robots.so_follower", "so101_follower": "lerobot.robots.so_follower",
                 "koch_follower": "lerobot.robots.koch_follower"}
ROBOT_TYPES = tuple(ROBOT_MODULES)


@dataclass
class LeRobotConfig(RobotConfig):
    type: ClassVar[str] = "lerobot"
    robot_type: str = "so101_follower"
    port: str = "/dev/ttyACM0"
    id: str = "follower"  # lerobot's robot id: names its calibration file
    calibration_dir: str = ""  # "" = lerobot's default (~/.cache/huggingface/lerobot/calibration/robots/<type>)
    use_degrees: bool = True
    gripper: str = "gripper"  # the joint kept on lerobot's 0-100 scale
    write_calibration: bool = False  # motors disagree with the file: write the file's calibration to them
    reconnect_s: float = 1.0  # after a serial failure: the least time between reconnection attempts
    connect_attempts: int = 3  # connect(): tries when the servos do not answer (not for configuration errors)


class LeRobotArm(Robot):
    def __init__(self, config: LeRobotConfig):
        super().__init__(config)
        self.config: LeRobotConfig = config
        if config.robot_type not in ROBOT_TYPES:
            raise RobotError(f"lerobot robot_type {config.robot_type!r}: expected one of {ROBOT_TYPES}")
        self.robot = None
        self.lost = False  # connected once, then the line failed: read() reconnects
        self.reconnects = 0
        self._last_attempt = 0.0
        self._lock = threading.Lock()  # one serial line: a read and a command never interleave

    @property
    def name(self) -> str:
        return f"{self.config.robot_type} on {self.config.port}"

    def _scale(self) -> np.ndarray:
        degrees = self.config.use_degrees
        return np.array([1.0 if (n == self.config.gripper or not degrees) else np.pi / 180.0 for n in self.joint_names])

    def connect(self) -> None:
        """Connect, trying the line again (``connect_attempts`` in all) when the servos did not answer:
        a serial adapter just opened can miss the first packet. Configuration errors are not retried."""
        with self._lock:
            for attempt in range(1, self.config.connect_attempts + 1):
                try:
                    return self._connect()
                except _LineError:
                    if attempt == self.config.connect_attempts:
                        raise
                    time.sleep(self.config.reconnect_s)

    def _connect(self) -> None:
        try:
            importlib.import_module(ROBOT_MODULES[self.config.robot_type])
            from lerobot.robots import make_robot_from_config
            from lerobot.robots.config import RobotConfig as LeRobotRobotConfig
        except ImportError as exc:
            raise RobotError(f"LeRobot arms need lerobot (pip install lerobot, in its own environment): {exc}") from exc
        cfg = self.config
        kwargs = {"port": cfg.port, "id": cfg.id, "use_degrees": cfg.use_degrees}
        if cfg.calibration_dir:
            kwargs["calibration_dir"] = Path(cfg.calibration_dir).expanduser()  # lerobot calls .mkdir() on it
        robot = make_robot_from_config(LeRobotRobotConfig.get_choice_class(cfg.robot_type)(**kwargs))
        motors = [key[:-4] for key in robot.action_features if key.endswith(".pos")]
        if sorted(motors) != sorted(self.joint_names):
            raise RobotError(f"{self.name}: lerobot's motors {motors} differ from the limits file's joints "
                             f"{self.joint_names}")
        if not robot.calibration:
            raise RobotError(f"{self.name}: no lerobot calibration at {robot.calibration_fpath}; calibrate the arm "
                             f"first (lerobot-calibrate --robot.type={cfg.robot_type} --robot.port={cfg.port} "
                             f"--robot.id={cfg.id}), or set calibration_dir/robot_id to where its file is")
        try:
            robot.connect(calibrate=False)  # a calibration moves the arm: never without a person
        except Exception as exc:  # lerobot raises ConnectionError, RuntimeError, serial errors
            _abandon(robot)
            raise _LineError(f"{self.name}: cannot connect: {_first_line(exc)}") from exc
        try:
            if not robot.is_calibrated:
                if not cfg.write_calibration:
                    raise RobotError(
                        f"{self.name}: the motors hold a different calibration than {robot.calibration_fpath} "
                        "(another arm's file, or a replaced motor): joint angles would be wrong. Run lerobot-calibrate "
                        "again, or set write_calibration if that file is this arm's")
                # torque off while the homing offsets change: with torque on, a servo chases its old goal
                # in the new frame. Goal := present (new frame) before torque comes back: nothing moves.
                with robot.bus.torque_disabled():
                    robot.bus.write_calibration(robot.calibration)
                    present = robot.bus.sync_read("Present_Position", normalize=False)
                    robot.bus.sync_write("Goal_Position", present, normalize=False)
            present = robot.get_observation()
            robot.send_action({k: v for k, v in present.items() if k.endswith(".pos")})  # hold where it is
        except RobotError:
            _abandon(robot)  # torque stays as lerobot's connect left it: on, holding where the arm is
            raise
        except Exception as exc:
            _abandon(robot)
            raise RobotError(f"{self.name}: connected, then failed: {_first_line(exc)}") from exc
        self.robot, self.lost = robot, False

    def _lost(self, what: str, exc: Exception) -> RobotError:
        """The line failed: drop this connection (read() makes a new one) and say so."""
        _abandon(self.robot)
        self.robot, self.lost = None, True
        return RobotError(f"{self.name}: {what} failed ({_first_line(exc)}); reconnecting")

    def _reconnect(self) -> None:
        now = time.monotonic()
        if now - self._last_attempt < self.config.reconnect_s:
            raise RobotError(f"{self.name}: disconnected; next reconnection attempt within {self.config.reconnect_s} s")
        self._last_attempt = now
        self._connect()
        self.reconnects += 1

    def read(self) -> JointReading:
        with self._lock:
            if self.robot is None:
                if not self.lost:
                    raise RobotError(f"{self.name}: not connected")
                self._reconnect()
            before = time.time()
            try:
                observation = self.robot.get_observation()
            except Exception as exc:
                raise self._lost("reading the joints", exc) from exc
            stamp = 0.5 * (before + time.time())  # the sync read's middle: when the servos answered
        raw = np.array([observation[f"{n}.pos"] for n in self.joint_names], dtype=np.float64)
        return JointReading(raw * self._scale(), stamp)

    def command(self, positions) -> None:
        raw = self.check_command(positions) / self._scale()
        with self._lock:
            if self.robot is None:
                raise RobotError(f"{self.name}: not connected; command not sent")
            try:
                self.robot.send_action({f"{n}.pos": float(v) for n, v in zip(self.joint_names, raw)})
            except Exception as exc:
                raise self._lost("sending the command", exc) from exc

    def disconnect(self) -> None:
        with self._lock:
            robot, self.robot, self.lost = self.robot, None, False
            if robot is not None:
                try:
                    robot.disconnect()  # torque off (lerobot's disable_torque_on_disconnect)
                except Exception:
                    _abandon(robot)


def _abandon(robot) -> None:
    """Close a connection that failed, without raising (the port may already be gone) and without
    touching the motors: they keep holding their last goal rather than going limp under gravity."""
    if robot is None:
        return
    bus = getattr(robot, "bus", None)
    try:
        if bus is not None and bus.port_handler.is_open:
            bus.port_handler.closePort()
    except Exception:
        pass


class _LineError(RobotError):
    """The servos did not answer (as opposed to a configuration error): worth trying again."""


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
