"""Keyboard in a terminal: no X server, no root (reads the terminal in cbreak mode, not /dev/input).

``tty: ""`` reads the terminal the node was started from; a path such as ``/dev/pts/3`` reads
another one (start the graph in one terminal, type in a second; ``tty`` prints a terminal's path).
Keys (all configurable):

- space toggles control between the human and the policy;
- ``jog_keys``: one pair of keys per joint, (+, -): ``qa ws ed rf tg yh`` by default;
- ``1`` success, ``2`` failure, ``0`` reset.

A terminal reports key presses and auto-repeat, not key releases, so a press jogs its joint for
``press_s`` seconds; holding a key keeps it moving through the auto-repeat.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import tty as ttymod
from dataclasses import dataclass, field

import numpy as np

from robot_rl.teleop.base import TeleopContext, TeleopDevice, TeleopReading
from robot_rl.teleop.jog import per_joint


@dataclass
class KeyboardConfig:
    tty: str = ""  # "" = the controlling terminal on stdin; else a terminal device path
    jog_keys: list[str] = field(default_factory=lambda: ["qa", "ws", "ed", "rf", "tg", "yh"])
    speeds: list[float] = field(default_factory=lambda: [0.6, 0.6, 0.6, 0.8, 0.8, 0.05])
    press_s: float = 0.15
    engage_key: str = " "
    success_key: str = "1"
    failure_key: str = "2"
    reset_key: str = "0"


class KeyboardDevice(TeleopDevice):
    type_name = "keyboard"

    def __init__(self, config: KeyboardConfig, joint_names: list[str]):
        self.config = config
        # no jog keys: only engagement and events (the leader arm's keyboard)
        keys = per_joint(config.jog_keys, joint_names, "jog_keys", self.type_name) if config.jog_keys else []
        self.speeds = np.asarray(per_joint(config.speeds, joint_names, "speeds", self.type_name) if keys
                                 else [0.0] * len(joint_names), np.float64)
        self.jog: dict[str, tuple[int, float]] = {}
        for j, pair in enumerate(keys):
            if len(pair) != 2:
                raise ValueError(f"teleop device 'keyboard' option 'jog_keys': entry {j} ('{pair}') must be two keys (+ and -)")
            self.jog[pair[0]], self.jog[pair[1]] = (j, 1.0), (j, -1.0)
        self.events = {config.success_key: "success", config.failure_key: "failure", config.reset_key: "reset"}
        clash = set(self.jog) & ({config.engage_key} | set(self.events))
        if clash:
            raise ValueError(f"teleop device 'keyboard': keys {sorted(clash)} are bound twice")
        self.fd: int | None = None
        self.own_fd = False
        self.saved_mode = None
        self.engaged = False
        self.until = np.full(len(joint_names), -np.inf)  # jog each joint until this time
        self.direction = np.zeros(len(joint_names))

    def connect(self) -> None:
        c = self.config
        if c.tty:
            try:
                self.fd, self.own_fd = os.open(c.tty, os.O_RDONLY | os.O_NOCTTY), True
            except OSError as exc:
                raise OSError(f"teleop device 'keyboard': cannot open terminal '{c.tty}': {exc}") from exc
        else:
            self.fd = sys.stdin.fileno()
        if not os.isatty(self.fd):
            where = c.tty or "stdin"
            self.disconnect()
            raise OSError(f"teleop device 'keyboard': {where} is not a terminal; run the node in a terminal "
                          f"or set the option 'tty' to one (e.g. /dev/pts/3, see the command 'tty')")
        self.saved_mode = termios.tcgetattr(self.fd)
        ttymod.setcbreak(self.fd)  # keys arrive one by one, no echo; Ctrl-C still interrupts

    def disconnect(self) -> None:
        if self.fd is not None and self.saved_mode is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved_mode)
        if self.fd is not None and self.own_fd:
            os.close(self.fd)
        self.fd, self.saved_mode, self.own_fd = None, None, False

    def help(self) -> str:
        c = self.config
        return (f"keyboard teleop: [space] take/give control, jog {' '.join(c.jog_keys)} (+/-), "
                f"[{c.success_key}] success, [{c.failure_key}] failure, [{c.reset_key}] reset")

    def _pending_keys(self) -> str:
        if self.fd is None:
            raise RuntimeError("teleop device 'keyboard' is not connected")
        keys = ""
        while select.select([self.fd], [], [], 0)[0]:
            chunk = os.read(self.fd, 64)
            if not chunk:
                break
            keys += chunk.decode("utf-8", "ignore")
        return keys

    def read(self, context: TeleopContext) -> TeleopReading:
        events = []
        for key in self._pending_keys():
            if key == self.config.engage_key:
                self.engaged = not self.engaged
            elif key in self.events:
                events.append(self.events[key])
            elif key in self.jog:
                j, sign = self.jog[key]
                self.until[j], self.direction[j] = context.now + self.config.press_s, sign
        moving = self.until > context.now
        return TeleopReading(engaged=self.engaged, velocity=np.where(moving, self.direction * self.speeds, 0.0),
                             events=events)
