"""Simulated serial servo buses on a pseudo-terminal: a LeRobot arm, minus the arm.

LeRobot arms talk to their servos over one half-duplex serial line: the SO-100/SO-101 to six Feetech
STS3215 with Feetech protocol 0 (``scservo_sdk``), the Koch to Dynamixel XL430/XL330 with Dynamixel
protocol 2.0 (``dynamixel_sdk``). With no arm plugged in, this module stands in at the lowest level
there is: the serial port. It opens a pty, and a thread answers the packets lerobot's motor buses
send (PING, READ, WRITE, SYNC_READ, SYNC_WRITE, broadcast PING) from each servo's control table, so
lerobot's robot classes, the vendor SDKs and pyserial all run unchanged against it. ``device`` is
what ``--robot.port`` (or ``robot_driver_node``'s ``port``) is given.

What each servo does, as its firmware does:

- registers: one control table per servo (little-endian; Feetech sign-magnitude with bit 11 for
  ``Homing_Offset`` and bit 15 for positions and speeds, Dynamixel two's complement);
- Feetech: ``Present_Position = actual - Homing_Offset``; Dynamixel: ``Present_Position = actual +
  Homing_Offset`` (direction reversed by ``Drive_Mode`` bit 0), and EEPROM (addresses below 64)
  refuses writes while torque is on (access error), as an X-series servo does;
- with torque on, the shaft moves toward ``Goal_Position`` at ``speed_ticks_s`` (the goal clamped to
  the position limits where the firmware clamps it); enabling torque makes the servo hold where it
  is (``Goal_Position`` := ``Present_Position``); ``Moving`` and ``Present_Velocity`` follow.

``unplug()`` closes the line as a pulled USB cable does (the host's reads and writes fail);
``replug()`` opens a new one and points ``link`` at it (a pty's name changes, a udev symlink such
as ``/dev/serial/by-id/...`` does not: use ``link`` as the port to test reconnection).

``robot-rl sim-servos --arm so101|koch`` runs one from the command line for a dry run.
"""

from __future__ import annotations

import abc
import json
import os
import select
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

RESOLUTION = 4096
ARM_MOTORS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


def encode_sign_magnitude(value: int, sign_bit: int) -> int:
    return (1 << sign_bit) | -value if value < 0 else value


def decode_sign_magnitude(raw: int, sign_bit: int) -> int:
    magnitude = raw & ((1 << sign_bit) - 1)
    return -magnitude if raw & (1 << sign_bit) else magnitude


def encode_twos_complement(value: int, size: int) -> int:
    return value & ((1 << (8 * size)) - 1)


def decode_twos_complement(raw: int, size: int) -> int:
    return raw - (1 << (8 * size)) if raw & (1 << (8 * size - 1)) else raw


@dataclass(frozen=True)
class ServoModel:
    """Where a servo family keeps what the simulation needs, and how it encodes signed values."""

    name: str
    number: int  # Model_Number
    model_address: int
    firmware: dict[int, int]  # address -> byte
    homing_offset: tuple[int, int]  # (address, size)
    min_limit: tuple[int, int]
    max_limit: tuple[int, int]
    torque_enable: int
    goal_position: tuple[int, int]
    present_position: tuple[int, int]
    present_velocity: tuple[int, int]
    moving: int
    read_only: frozenset
    homing_sign: int  # Present = actual + homing_sign * Homing_Offset
    sign_bits: dict[str, int] = field(default_factory=dict)  # Feetech sign-magnitude, by register name
    eeprom_end: int = 0  # Dynamixel: writes below this address need torque off
    drive_mode: int = -1  # Dynamixel: Drive_Mode address (bit 0 reverses the direction)
    operating_mode: int = -1  # Dynamixel: Operating_Mode address (limits clamp in mode 3 only)
    defaults: dict[int, tuple[int, int]] = field(default_factory=dict)  # address -> (value, size)

    def encode(self, register: str, value: int, size: int) -> int:
        bit = self.sign_bits.get(register)
        return encode_sign_magnitude(value, bit) if bit is not None else encode_twos_complement(value, size)

    def decode(self, register: str, raw: int, size: int) -> int:
        bit = self.sign_bits.get(register)
        return decode_sign_magnitude(raw, bit) if bit is not None else decode_twos_complement(raw, size)


STS3215 = ServoModel(
    "sts3215", 777, 3, {0: 3, 1: 10}, homing_offset=(31, 2), min_limit=(9, 2), max_limit=(11, 2), torque_enable=40,
    goal_position=(42, 2), present_position=(56, 2), present_velocity=(58, 2), moving=66,
    read_only=frozenset(range(0, 5)) | frozenset(range(56, 72)), homing_sign=-1,
    sign_bits={"homing_offset": 11, "goal_position": 15, "present_position": 15, "present_velocity": 15},
    defaults={5: (0, 1), 6: (0, 1), 7: (250, 1), 8: (1, 1), 62: (74, 1), 63: (30, 1)})


def _dynamixel_x(name: str, number: int) -> ServoModel:
    return ServoModel(
        name, number, 0, {6: 52}, homing_offset=(20, 4), min_limit=(52, 4), max_limit=(48, 4), torque_enable=64,
        goal_position=(116, 4), present_position=(132, 4), present_velocity=(128, 4), moving=122,
        read_only=frozenset(range(0, 7)) | frozenset(range(120, 147)), homing_sign=+1, eeprom_end=64,
        drive_mode=10, operating_mode=11, defaults={8: (3, 1), 9: (250, 1), 11: (3, 1), 68: (2, 1), 144: (50, 2),
                                                    146: (30, 1)})


XL430_W250, XL330_M288 = _dynamixel_x("xl430-w250", 1060), _dynamixel_x("xl330-m288", 1200)


class AccessError(Exception):
    """A write the firmware refuses (Dynamixel: EEPROM while torque is on)."""


class SimulatedServo:
    """One servo: its control table and its shaft (encoder ticks)."""

    def __init__(self, servo_id: int, model: ServoModel, actual: float = 2047.0, speed_ticks_s: float = 3000.0):
        self.id, self.model = servo_id, model
        self.actual, self.speed_ticks_s = float(actual), speed_ticks_s  # ~260 deg/s, unloaded
        self.velocity, self.last_update = 0.0, time.monotonic()
        self.memory = bytearray(256)
        m = model
        self._put(m.model_address, m.number, 2)
        for address, value in m.firmware.items():
            self.memory[address] = value
        for address, (value, size) in m.defaults.items():
            self._put(address, value, size)
        self._put(m.max_limit[0], RESOLUTION - 1, m.max_limit[1])
        self._set("goal_position", self.present())
        self._publish()

    # -- registers ----------------------------------------------------------------------------------
    def _get(self, address: int, size: int) -> int:
        return int.from_bytes(self.memory[address:address + size], "little")

    def _put(self, address: int, value: int, size: int) -> None:
        self.memory[address:address + size] = value.to_bytes(size, "little")

    def _value(self, register: str) -> int:
        address, size = getattr(self.model, register)
        return self.model.decode(register, self._get(address, size), size)

    def _set(self, register: str, value: int) -> None:
        address, size = getattr(self.model, register)
        self._put(address, self.model.encode(register, value, size), size)

    def _direction(self) -> int:
        reversed_ = self.model.drive_mode >= 0 and self.memory[self.model.drive_mode] & 1
        return -1 if reversed_ else 1

    def present(self) -> int:
        return self._direction() * int(round(self.actual)) + self.model.homing_sign * self._value("homing_offset")

    def set_present(self, present: int) -> None:
        self.actual = float(self._direction() * (present - self.model.homing_sign * self._value("homing_offset")))

    def goal(self) -> int:
        """Goal_Position in the homed frame, clamped to the position limits where the firmware does."""
        goal = self._value("goal_position")
        clamps = self.model.operating_mode < 0 or self.memory[self.model.operating_mode] == 3
        low, high = self._get(*self.model.min_limit), self._get(*self.model.max_limit)
        return min(max(goal, low), high) if clamps and high > low else goal

    def _publish(self) -> None:
        self._set("present_position", self.present())
        self._set("present_velocity", int(round(self.velocity)))
        self.memory[self.model.moving] = int(abs(self.velocity) > 1.0)

    def advance(self, now: float) -> None:
        dt, self.last_update = max(0.0, now - self.last_update), now
        self.velocity = 0.0
        if self.memory[self.model.torque_enable] and dt > 0:
            error = self._direction() * (self.goal() - self.present())
            step = max(-self.speed_ticks_s * dt, min(self.speed_ticks_s * dt, error))
            self.actual += step
            self.velocity = self._direction() * step / dt
        self._publish()

    def read(self, address: int, length: int) -> bytes:
        return bytes(self.memory[address:address + length])

    def write(self, address: int, data: bytes) -> None:
        torque_was = self.memory[self.model.torque_enable]
        if torque_was and address < self.model.eeprom_end:
            raise AccessError(f"servo {self.id}: EEPROM address {address} written with torque on")
        for offset, byte in enumerate(data):
            if address + offset not in self.model.read_only:
                self.memory[address + offset] = byte
        if self.memory[self.model.torque_enable] and not torque_was:  # torque on: hold where the shaft is
            self._set("goal_position", self.present())
        self._publish()

    def calibrate(self, calibration: dict) -> None:
        """What lerobot-calibrate leaves in the registers (done with torque off)."""
        if "drive_mode" in calibration and self.model.drive_mode >= 0:
            self.memory[self.model.drive_mode] = int(calibration["drive_mode"])
        self._set("homing_offset", int(calibration["homing_offset"]))
        self._put(self.model.min_limit[0], int(calibration["range_min"]), self.model.min_limit[1])
        self._put(self.model.max_limit[0], int(calibration["range_max"]), self.model.max_limit[1])


class SimulatedServoBus(abc.ABC):
    """Servos behind a pty, one protocol; ``device`` is the path the host opens."""

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
    def arm(cls, models: list[ServoModel], calibration: dict | None = None, link=None,
            positions: dict | None = None) -> "SimulatedServoBus":
        """A LeRobot arm: motors 1-6 named as lerobot names them; ``calibration``: lerobot's per-motor
        calibration (its ``<id>.json`` as a dict) already in the servos, as ``lerobot-calibrate`` leaves
        them; ``positions``: each motor's Present_Position at power-on (default: mid-range)."""
        servos = []
        for index, (name, model) in enumerate(zip(ARM_MOTORS, models), start=1):
            servo = SimulatedServo(index, model)
            cal = (calibration or {}).get(name)
            if cal:
                servo.calibrate(cal)
            present = (positions or {}).get(name)
            if present is None and cal:
                present = (int(cal["range_min"]) + int(cal["range_max"])) // 2
            if present is not None:
                servo.set_present(int(present))
            servo._set("goal_position", servo.present())
            servo._publish()
            servos.append(servo)
        return cls(servos, link)

    # -- the line -----------------------------------------------------------------------------------
    def start(self) -> "SimulatedServoBus":
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline: bytes as the servos see them
        self.port = os.ttyname(self._slave)
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.port)
            os.replace(tmp, self.link)
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="servo-sim", daemon=True)
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

    def replug(self) -> "SimulatedServoBus":
        """Plugged back in: a new line; the servos kept their registers and shafts (still powered)."""
        self.unplug()
        return self.start()

    def close(self) -> None:
        self.unplug()
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()

    def __enter__(self) -> "SimulatedServoBus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def device(self) -> str:
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
            return int.from_bytes(self.servos[servo_id].read(address, length), "little")

    def value(self, servo_id: int, register: str) -> int:
        """A register by its role (``goal_position``, ``homing_offset``, ...), decoded."""
        with self._lock:
            return self.servos[servo_id]._value(register)

    def torque(self, servo_id: int) -> int:
        with self._lock:
            servo = self.servos[servo_id]
            return servo.memory[servo.model.torque_enable]

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
                with self._lock:
                    self.packets += 1
                    now = time.monotonic()
                    for servo in self.servos.values():
                        servo.advance(now)
                    reply = self._handle(*packet)
                if reply:
                    try:
                        os.write(master, reply)
                    except OSError:
                        return

    @abc.abstractmethod
    def _take_packet(self, buffer: bytearray):
        """(id, instruction, params) of the first whole packet in ``buffer`` (consumed), or None."""

    @abc.abstractmethod
    def _status(self, servo_id: int, params: bytes = b"", error: int = 0) -> bytes: ...

    def _write(self, servo_id: int, address: int, data: bytes) -> int:
        """Apply a write; the status packet's error byte."""
        try:
            self.servos[servo_id].write(address, data)
            return 0
        except AccessError:
            return self.ACCESS_ERROR

    ACCESS_ERROR = 0x07
    BROADCAST = 0xFE
    PING, READ, WRITE, SYNC_READ, SYNC_WRITE = 0x01, 0x02, 0x03, 0x82, 0x83

    ADDRESS_BYTES = 1  # bytes of an address or length in a packet's parameters (Dynamixel: 2)

    def _handle(self, target: int, instruction: int, params: bytes) -> bytes:
        """The instruction set both protocols share."""
        word = self.ADDRESS_BYTES
        number = (lambda b: int.from_bytes(b, "little"))
        targets = list(self.servos) if target == self.BROADCAST else [target] if target in self.servos else []
        if instruction == self.PING:
            return b"".join(self._status(i, self._ping_params(i)) for i in sorted(targets))
        if instruction == self.READ and len(params) == 2 * word and target != self.BROADCAST and targets:
            address, length = number(params[:word]), number(params[word:])
            return self._status(target, self.servos[target].read(address, length))
        if instruction == self.WRITE and len(params) > word:
            address = number(params[:word])
            errors = {i: self._write(i, address, params[word:]) for i in targets}
            return self._status(target, error=errors[target]) if target != self.BROADCAST and targets else b""
        if instruction == self.SYNC_WRITE and len(params) >= 2 * word:
            address, length = number(params[:word]), number(params[word:2 * word])
            for k in range(2 * word, len(params) - length, length + 1):
                if params[k] in self.servos:
                    self._write(params[k], address, params[k + 1:k + 1 + length])
            return b""
        if instruction == self.SYNC_READ and len(params) >= 2 * word:
            address, length = number(params[:word]), number(params[word:2 * word])
            return b"".join(self._status(i, self.servos[i].read(address, length))
                            for i in params[2 * word:] if i in self.servos)
        return b""  # anything else (REG_WRITE/ACTION, bulk, reboot): the servos stay silent

    def _ping_params(self, servo_id: int) -> bytes:
        return b""


class FeetechBus(SimulatedServoBus):
    """Feetech protocol 0: ``FF FF id len instruction params checksum``, sum-complement checksum."""

    @classmethod
    def so_arm(cls, calibration: dict | None = None, link=None, positions: dict | None = None) -> "FeetechBus":
        """An SO-100/SO-101 follower: six STS3215."""
        return cls.arm([STS3215] * 6, calibration, link, positions)

    @staticmethod
    def checksum(body) -> int:
        return (~sum(body)) & 0xFF

    def _take_packet(self, buffer: bytearray):
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
            if length < 2 or self.checksum(body) != check:
                self.errors += 1
                del buffer[:1]  # a corrupt packet: resynchronise on the next header
                continue
            del buffer[:length + 4]
            return body[0], body[2], body[3:]

    def _status(self, servo_id: int, params: bytes = b"", error: int = 0) -> bytes:
        body = bytes([servo_id, len(params) + 2, error]) + params
        return b"\xff\xff" + body + bytes([self.checksum(body)])


def dynamixel_crc(data) -> int:
    """CRC-16 of Dynamixel protocol 2.0 (polynomial 0x8005, initial value 0, not reflected)."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


class DynamixelBus(SimulatedServoBus):
    """Dynamixel protocol 2.0: ``FF FF FD 00 id len(2) instruction params crc(2)``, byte stuffing
    (``FF FF FD`` in a payload is followed by an extra ``FD``), status instruction 0x55."""

    HEADER = b"\xff\xff\xfd\x00"
    ADDRESS_BYTES = 2

    @classmethod
    def koch_arm(cls, calibration: dict | None = None, link=None, positions: dict | None = None) -> "DynamixelBus":
        """A Koch v1.1 follower: two XL430-W250 (shoulder) and four XL330-M288."""
        return cls.arm([XL430_W250] * 2 + [XL330_M288] * 4, calibration, link, positions)

    @staticmethod
    def _unstuff(payload: bytes) -> bytes:
        return payload.replace(b"\xff\xff\xfd\xfd", b"\xff\xff\xfd")

    @staticmethod
    def _stuff(payload: bytes) -> bytes:
        return payload.replace(b"\xff\xff\xfd", b"\xff\xff\xfd\xfd")

    def _take_packet(self, buffer: bytearray):
        while True:
            start = buffer.find(self.HEADER)
            if start < 0:
                del buffer[:max(0, len(buffer) - 3)]
                return None
            del buffer[:start]
            if len(buffer) < 7:
                return None
            length = buffer[5] | (buffer[6] << 8)
            if len(buffer) < 7 + length:
                return None
            packet = bytes(buffer[:7 + length])
            if length < 3 or dynamixel_crc(packet[:-2]) != int.from_bytes(packet[-2:], "little"):
                self.errors += 1
                del buffer[:1]
                continue
            del buffer[:7 + length]
            payload = self._unstuff(packet[7:-2])
            return packet[4], payload[0], payload[1:]

    def _status(self, servo_id: int, params: bytes = b"", error: int = 0) -> bytes:
        payload = self._stuff(bytes([0x55, error]) + params)
        packet = self.HEADER + bytes([servo_id]) + (len(payload) + 2).to_bytes(2, "little") + payload
        return packet + dynamixel_crc(packet).to_bytes(2, "little")

    def _ping_params(self, servo_id: int) -> bytes:
        servo = self.servos[servo_id]
        return servo.model.number.to_bytes(2, "little") + bytes([servo.memory[6]])


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


def example_calibration(arm: str = "so101") -> dict:
    """A plausible calibration (what lerobot-calibrate writes for an arm homed mid-range)."""
    if arm == "koch":
        ranges = {"shoulder_pan": (1000, 3100), "shoulder_lift": (900, 3000), "elbow_flex": (1100, 3200),
                  "wrist_flex": (950, 3150), "wrist_roll": (0, 4095), "gripper": (1900, 2900)}
        offsets = {"shoulder_pan": -1024, "shoulder_lift": 512, "elbow_flex": -300, "wrist_flex": 100,
                   "wrist_roll": 0, "gripper": -50}
        drive_modes = {"shoulder_lift": 1, "elbow_flex": 0}
    else:
        ranges = {"shoulder_pan": (700, 3400), "shoulder_lift": (800, 3300), "elbow_flex": (850, 3200),
                  "wrist_flex": (750, 3300), "wrist_roll": (0, 4095), "gripper": (2000, 3400)}
        offsets = {"shoulder_pan": -35, "shoulder_lift": 120, "elbow_flex": -240, "wrist_flex": 60,
                   "wrist_roll": 10, "gripper": 900}
        drive_modes = {}
    return {name: {"id": i, "drive_mode": drive_modes.get(name, 0), "homing_offset": offsets[name],
                   "range_min": ranges[name][0], "range_max": ranges[name][1]}
            for i, name in enumerate(ARM_MOTORS, start=1)}
