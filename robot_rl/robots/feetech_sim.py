"""A simulated Feetech STS3215 servo bus on a pseudo-terminal: the SO-100/SO-101 arm, minus the arm.

A LeRobot SO-101 talks to its six STS3215 servos over one half-duplex serial line with Feetech's
protocol 0 (the ``scservo_sdk`` packets). With no arm plugged in, this module stands in at the lowest
level there is: the serial port. It opens a pty, and a thread answers the packets lerobot's
``FeetechMotorsBus`` sends (PING, READ, WRITE, SYNC_READ, SYNC_WRITE, broadcast PING) from each
servo's control table, so lerobot's robot class, the Feetech SDK and pyserial all run unchanged
against it. ``port`` is what ``--robot.port`` (or ``robot_driver_node``'s ``port``) is given.

What each servo does, as the firmware does:

- registers: one 256-byte control table per servo (little-endian words; sign-magnitude where the
  firmware uses it: bit 11 for ``Homing_Offset``, bit 15 for positions and speeds);
- ``Present_Position = actual - Homing_Offset``; with torque on, the actual position moves toward
  ``Goal_Position`` (clamped to the position limits) at ``speed_ticks_s``; enabling torque makes the
  servo hold where it is (``Goal_Position`` := ``Present_Position``);
- ``Present_Velocity`` and ``Moving`` follow the motion.

``unplug()`` closes the line as a pulled USB cable does (the host's reads and writes fail);
``replug()`` opens a new one and points ``link`` at it (a pty's name changes, a udev symlink such
as ``/dev/serial/by-id/...`` does not: use ``link`` as the port to test reconnection).

``robot-rl sim-servos`` runs one from the command line for a dry run of a LeRobot arm set-up.
"""

from __future__ import annotations

import json
import os
import select
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

# Feetech protocol 0 instructions and the STS3215 control table (addresses, byte lengths)
PING, READ, WRITE, REG_WRITE, ACTION, SYNC_READ, SYNC_WRITE = 0x01, 0x02, 0x03, 0x04, 0x05, 0x82, 0x83
BROADCAST = 0xFE
FIRMWARE_MAJOR, FIRMWARE_MINOR, MODEL_NUMBER = 0, 1, 3
MIN_LIMIT, MAX_LIMIT, HOMING_OFFSET = 9, 11, 31
TORQUE_ENABLE, GOAL_POSITION, LOCK = 40, 42, 55
PRESENT_POSITION, PRESENT_VELOCITY, PRESENT_VOLTAGE, PRESENT_TEMPERATURE, MOVING = 56, 58, 62, 63, 66
READ_ONLY = set(range(0, 5)) | set(range(56, 72))
STS3215 = 777
RESOLUTION = 4096
SO_ARM_MOTORS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


def checksum(body) -> int:
    return (~sum(body)) & 0xFF


def encode_sign_magnitude(value: int, sign_bit: int) -> int:
    return (1 << sign_bit) | -value if value < 0 else value


def decode_sign_magnitude(raw: int, sign_bit: int) -> int:
    magnitude = raw & ((1 << sign_bit) - 1)
    return -magnitude if raw & (1 << sign_bit) else magnitude


@dataclass
class SimulatedServo:
    """One STS3215: its control table and its shaft."""

    id: int
    actual: float = 2047.0  # shaft position, encoder ticks before the homing offset
    speed_ticks_s: float = 3000.0  # ~260 deg/s: an STS3215 at 7.4 V, unloaded
    memory: bytearray = field(default_factory=lambda: bytearray(256))
    velocity: float = 0.0
    last_update: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        m = self.memory
        m[FIRMWARE_MAJOR], m[FIRMWARE_MINOR] = 3, 10
        self._put(MODEL_NUMBER, STS3215)
        m[5], m[6], m[7], m[8] = self.id, 0, 250, 1  # ID, baud 1 Mbps, return delay, status level
        self._put(MIN_LIMIT, 0)
        self._put(MAX_LIMIT, RESOLUTION - 1)
        m[PRESENT_VOLTAGE], m[PRESENT_TEMPERATURE] = 74, 30
        self._put(GOAL_POSITION, self.present())
        self._publish()

    # -- registers ----------------------------------------------------------------------------------
    def _get(self, address: int) -> int:
        return self.memory[address] | (self.memory[address + 1] << 8)

    def _put(self, address: int, value: int) -> None:
        self.memory[address], self.memory[address + 1] = value & 0xFF, (value >> 8) & 0xFF

    def homing_offset(self) -> int:
        return decode_sign_magnitude(self._get(HOMING_OFFSET), 11)

    def present(self) -> int:
        return int(round(self.actual)) - self.homing_offset()

    def goal(self) -> int:
        """Goal_Position in the homed frame, clamped to the position limits as the firmware does."""
        goal = decode_sign_magnitude(self._get(GOAL_POSITION), 15)
        low, high = self._get(MIN_LIMIT), self._get(MAX_LIMIT)
        return min(max(goal, low), high) if high > low else goal

    def _publish(self) -> None:
        self._put(PRESENT_POSITION, encode_sign_magnitude(self.present(), 15))
        self._put(PRESENT_VELOCITY, encode_sign_magnitude(int(round(self.velocity)), 15))
        self.memory[MOVING] = int(abs(self.velocity) > 1.0)

    def advance(self, now: float) -> None:
        dt, self.last_update = max(0.0, now - self.last_update), now
        self.velocity = 0.0
        if self.memory[TORQUE_ENABLE] and dt > 0:
            error = self.goal() + self.homing_offset() - self.actual
            step = max(-self.speed_ticks_s * dt, min(self.speed_ticks_s * dt, error))
            self.actual += step
            self.velocity = step / dt
        self._publish()

    def read(self, address: int, length: int) -> bytes:
        return bytes(self.memory[address:address + length])

    def write(self, address: int, data: bytes) -> None:
        torque_was = self.memory[TORQUE_ENABLE]
        for offset, byte in enumerate(data):
            if address + offset not in READ_ONLY:
                self.memory[address + offset] = byte
        if self.memory[TORQUE_ENABLE] and not torque_was:  # torque on: hold where the shaft is
            self._put(GOAL_POSITION, encode_sign_magnitude(self.present(), 15))
        self._publish()


class SimulatedFeetechBus:
    """Servos behind a pty; ``port`` (or ``link``, when given) is the device path for the host."""

    def __init__(self, servos: list[SimulatedServo], link: str | os.PathLike | None = None):
        self.servos = {s.id: s for s in servos}
        self.link = Path(link) if link else None
        self.packets = 0  # packets answered or applied: what the host actually sent
        self.errors = 0  # packets with a bad checksum
        self._lock = threading.Lock()
        self._master = self._slave = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.port = ""

    @classmethod
    def so_arm(cls, calibration: dict | None = None, link=None, positions: dict | None = None) -> "SimulatedFeetechBus":
        """An SO-100/SO-101 arm: motors 1-6; ``calibration``: lerobot's per-motor calibration (a dict
        as in its ``<id>.json``) already written to the servos, as ``lerobot-calibrate`` leaves them;
        ``positions``: each motor's Present_Position (homed ticks) at power-on."""
        servos = []
        for index, name in enumerate(SO_ARM_MOTORS, start=1):
            servo = SimulatedServo(index)
            cal = (calibration or {}).get(name)
            if cal:
                servo.write(HOMING_OFFSET, _word(encode_sign_magnitude(int(cal["homing_offset"]), 11)))
                servo.write(MIN_LIMIT, _word(int(cal["range_min"])))
                servo.write(MAX_LIMIT, _word(int(cal["range_max"])))
            present = (positions or {}).get(name)
            if present is None and cal:
                present = (int(cal["range_min"]) + int(cal["range_max"])) // 2
            if present is not None:
                servo.actual = float(present + servo.homing_offset())
            servo.write(GOAL_POSITION, _word(encode_sign_magnitude(servo.present(), 15)))
            servos.append(servo)
        return cls(servos, link)

    # -- the line -----------------------------------------------------------------------------------
    def start(self) -> "SimulatedFeetechBus":
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline: bytes as the servos see them
        self.port = os.ttyname(self._slave)
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.port)
            os.replace(tmp, self.link)
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="feetech-sim", daemon=True)
        self._thread.start()
        return self

    def unplug(self) -> None:
        """The cable is pulled: the line closes and the host's I/O on it fails."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None

    def replug(self) -> "SimulatedFeetechBus":
        """Plugged back in: a new line; the servos kept their registers and shafts (still powered)."""
        self.unplug()
        return self.start()

    def close(self) -> None:
        self.unplug()
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()

    def __enter__(self) -> "SimulatedFeetechBus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def device(self) -> str:
        """The path the host should open."""
        return str(self.link) if self.link is not None else self.port

    # -- what the test (or the person watching) sees ------------------------------------------------
    def present_positions(self) -> dict[int, int]:
        with self._lock:
            now = time.monotonic()
            for servo in self.servos.values():
                servo.advance(now)
            return {i: s.present() for i, s in self.servos.items()}

    def register(self, servo_id: int, address: int, length: int = 2) -> int:
        with self._lock:
            data = self.servos[servo_id].read(address, length)
        return int.from_bytes(data, "little")

    def move_by_hand(self, servo_id: int, present: int) -> None:
        """Someone moves a joint (torque off), or the load pushes it: the shaft goes to ``present``."""
        with self._lock:
            servo = self.servos[servo_id]
            servo.actual = float(present + servo.homing_offset())
            servo._publish()

    # -- the protocol -------------------------------------------------------------------------------
    def _serve(self) -> None:
        buffer = bytearray()
        master = self._master
        while not self._stop.is_set():
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                continue
            try:
                buffer += os.read(master, 4096)
            except OSError:
                return
            while True:
                packet = self._take_packet(buffer)
                if packet is None:
                    break
                reply = self._handle(*packet)
                if reply:
                    try:
                        os.write(master, reply)
                    except OSError:
                        return

    def _take_packet(self, buffer: bytearray):
        """(id, instruction, params) of the first whole packet in ``buffer`` (consumed), or None."""
        while True:
            start = buffer.find(b"\xff\xff")
            if start < 0:
                del buffer[:max(0, len(buffer) - 1)]
                return None
            del buffer[:start]
            if len(buffer) < 4:
                return None
            length = buffer[3]
            if len(buffer) < length + 4:
                return None
            body, check = bytes(buffer[2:length + 3]), buffer[length + 3]
            if length < 2 or checksum(body) != check:
                self.errors += 1
                del buffer[:1]  # a corrupt packet: resynchronise on the next header
                continue
            del buffer[:length + 4]
            return body[0], body[2], body[3:]

    def _status(self, servo_id: int, params: bytes = b"") -> bytes:
        body = bytes([servo_id, len(params) + 2, 0]) + params
        return b"\xff\xff" + body + bytes([checksum(body)])

    def _handle(self, target: int, instruction: int, params: bytes) -> bytes:
        with self._lock:
            self.packets += 1
            now = time.monotonic()
            for servo in self.servos.values():
                servo.advance(now)
            targets = list(self.servos) if target == BROADCAST else [target] if target in self.servos else []
            if instruction == PING:
                return b"".join(self._status(i) for i in sorted(targets))
            if instruction == READ and len(params) == 2 and target != BROADCAST and targets:
                return self._status(target, self.servos[target].read(params[0], params[1]))
            if instruction in (WRITE, REG_WRITE) and params:
                for i in targets:
                    self.servos[i].write(params[0], params[1:])
                return self._status(target) if target != BROADCAST and targets else b""
            if instruction == SYNC_WRITE and len(params) >= 2:
                address, length = params[0], params[1]
                for k in range(2, len(params) - length, length + 1):
                    if params[k] in self.servos:
                        self.servos[params[k]].write(address, params[k + 1:k + 1 + length])
                return b""
            if instruction == SYNC_READ and len(params) >= 2:
                address, length = params[0], params[1]
                return b"".join(self._status(i, self.servos[i].read(address, length))
                                for i in params[2:] if i in self.servos)
            return b""  # ACTION and anything unknown: the servos stay silent


def _word(value: int) -> bytes:
    return bytes([value & 0xFF, (value >> 8) & 0xFF])


def load_lerobot_calibration(path: str | os.PathLike) -> dict:
    """lerobot's ``<calibration_dir>/<id>.json``: motor -> {id, drive_mode, homing_offset, range_min, range_max}."""
    path = Path(path)
    try:
        calibration = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a lerobot calibration file: {exc}") from exc
    for motor, values in calibration.items():
        missing = {"homing_offset", "range_min", "range_max"} - set(values)
        if missing:
            raise ValueError(f"{path}: motor {motor!r} lacks {sorted(missing)}")
    return calibration


def example_so_arm_calibration() -> dict:
    """A plausible SO-101 calibration (what lerobot-calibrate writes for an arm homed mid-range)."""
    ranges = {"shoulder_pan": (700, 3400), "shoulder_lift": (800, 3300), "elbow_flex": (850, 3200),
              "wrist_flex": (750, 3300), "wrist_roll": (0, 4095), "gripper": (2000, 3400)}
    offsets = {"shoulder_pan": -35, "shoulder_lift": 120, "elbow_flex": -240, "wrist_flex": 60,
               "wrist_roll": 10, "gripper": 900}
    return {name: {"id": i, "drive_mode": 0, "homing_offset": offsets[name],
                   "range_min": ranges[name][0], "range_max": ranges[name][1]}
            for i, name in enumerate(SO_ARM_MOTORS, start=1)}
