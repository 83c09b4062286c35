"""The safety filter: the only path from a policy or a human to the robot's command.

Inputs arrive as they come (joint state, policy action chunks, teleop commands, the teleop engaged
flag, e-stop); :meth:`SafetyFilter.step` then says what to command now and why. Rules, in order:

1. E-stop latches. While latched, the command is the joint position measured when it latched
   (the arm freezes where it is, it does not finish travelling to an old target). Only an explicit
   release unlatches; afterwards motion resumes only from input that arrives after the release.
2. No fresh joint state: hold the last safe command (a robot whose state we cannot see must not be
   given new targets). Before any safe command exists, nothing is commanded at all.
   A new episode (``new_episode``: a new instruction) drops the chunk and re-anchors the hold to the
   next measured position; until it arrives nothing is commanded.
3. Teleop engaged: the human's command wins; a stale teleop command holds instead.
4. Otherwise the policy chunk: the first point whose time lies in the future is commanded (targets
   whose time has passed are dropped, which compensates inference latency). A chunk computed from an
   observation older than ``max_observation_age`` is rejected on arrival; an exhausted chunk holds.

Hand-over: when control passes between policy and human (either way), the command does not jump to
the new source's target. For ``handover_s`` seconds it moves linearly from the last command to the
new source's (moving) target, so the joint speed during a hand-over is bounded by distance/handover_s
on top of the source's own motion.

Every command is clamped to the joint limits of the robot's calibration file, and the decision says
which joints were clamped. Times are float seconds of one clock (the node's ROS clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from robot_rl.policy.base import ActionChunk
from robot_rl.safety.limits import RobotLimits


@dataclass
class SafetyConfig:
    max_observation_age: float = 0.3  # s; older policy chunks are rejected
    joint_state_timeout: float = 0.3  # s without joint state -> hold
    teleop_timeout: float = 0.3  # s without a teleop command while engaged -> hold
    handover_s: float = 0.5  # s of blending when control passes between policy and teleop (0: none)


@dataclass
class Decision:
    positions: np.ndarray | None  # None: command nothing (no safe command exists yet)
    source: str  # "policy", "teleop", "hold", "estop" or "none"
    stamp: float  # time of the observation/input the command derives from
    clamped: list[str] = field(default_factory=list)
    reason: str = ""
    remaining: int = 0  # policy: waypoints of the chunk after this one
    blended: bool = False  # a hand-over blend, not the source's own target


class SafetyFilter:
    def __init__(self, limits: RobotLimits, config: SafetyConfig | None = None):
        self.limits = limits
        self.config = config or SafetyConfig()
        self.joint_names = list(limits.joint_names)
        self._index = {n: i for i, n in enumerate(self.joint_names)}
        self.measured: np.ndarray | None = None
        self.measured_at = -np.inf
        self.chunk: ActionChunk | None = None
        self._chunk_positions: np.ndarray | None = None  # chunk reordered to our joint order
        self.teleop: np.ndarray | None = None
        self.teleop_at = -np.inf
        self.teleop_stamp = 0.0
        self.engaged = False
        self.estop = False
        self.estop_position: np.ndarray | None = None
        self.last: Decision = Decision(None, "none", 0.0, reason="no command yet")
        self.rejected = 0
        self.last_rejection = ""
        self.episode_start = -np.inf
        self.anchor_pending = False
        self.active_source: str | None = None  # "policy" or "teleop": who commanded last
        self.blend_from: np.ndarray | None = None
        self.blend_start = -np.inf

    # -- inputs --------------------------------------------------------------------------------
    def _reorder(self, names: list[str], values: np.ndarray, what: str) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1 and len(names) != values.shape[0] or values.ndim == 2 and len(names) != values.shape[1]:
            raise ValueError(f"{what}: {len(names)} joint names but values of shape {values.shape}")
        index = {n: i for i, n in enumerate(names)}
        missing = [n for n in self.joint_names if n not in index]
        if missing:
            raise ValueError(f"{what}: missing joints {missing} (expected {self.joint_names})")
        order = [index[n] for n in self.joint_names]
        out = values[..., order]
        if not np.all(np.isfinite(out)):
            raise ValueError(f"{what}: non-finite values")
        return out

    def _reject(self, reason: str) -> str:
        self.rejected += 1
        self.last_rejection = reason
        return reason

    def update_joint_state(self, names: list[str], positions, now: float, stamp: float | None = None) -> str | None:
        try:
            self.measured = self._reorder(names, positions, "joint state")
        except ValueError as exc:
            return self._reject(str(exc))
        self.measured_at = now
        # anchor only to a state measured after the episode began (one in flight from before the
        # reset would hold the arm where the last episode left it)
        if self.anchor_pending and (stamp is None or stamp >= self.episode_start):
            self.last = Decision(self.measured.copy(), "hold", now, reason="new episode: holding the measured position")
            self.anchor_pending = False
        return None

    def new_episode(self, now: float) -> None:
        """A new episode (a new instruction; in sim the world may have been reset under the arm).

        The old chunk is dropped, chunks computed from earlier observations are refused, and the hold
        position becomes the next *measured* position: holding the previous target would drag a
        reset arm back to where the last episode left it.
        """
        self.chunk = self._chunk_positions = None
        self.episode_start = now
        self.anchor_pending = True

    def update_policy(self, chunk: ActionChunk, now: float) -> str | None:
        """Accept a chunk, or return why it was rejected."""
        if self.estop:
            return self._reject("policy chunk ignored: e-stop latched")
        if chunk.stamp < self.episode_start:
            return self._reject("policy chunk rejected: computed from an observation before the current episode began")
        age = now - chunk.stamp
        if age > self.config.max_observation_age:
            return self._reject(
                f"policy chunk rejected: observation is {age * 1e3:.0f} ms old "
                f"(max_observation_age {self.config.max_observation_age * 1e3:.0f} ms)"
            )
        try:
            positions = self._reorder(chunk.joint_names, chunk.positions, "policy chunk")
        except ValueError as exc:
            return self._reject(str(exc))
        self.chunk, self._chunk_positions = chunk, positions
        return None

    def update_teleop(self, names: list[str], positions, now: float, stamp: float | None = None) -> str | None:
        if self.estop:
            return self._reject("teleop command ignored: e-stop latched")
        try:
            self.teleop = self._reorder(names, positions, "teleop command")
        except ValueError as exc:
            return self._reject(str(exc))
        self.teleop_at = now
        self.teleop_stamp = now if stamp is None else stamp
        return None

    def update_engaged(self, engaged: bool) -> None:
        self.engaged = bool(engaged)

    def update_estop(self, active: bool) -> None:
        if active and not self.estop:
            self.estop = True
            held = self.measured if self.measured is not None else self.last.positions
            self.estop_position = None if held is None else held.copy()
            self.chunk = self._chunk_positions = None
            self.teleop = None
            self.active_source = "estop"  # motion after the release blends from the frozen position
        elif not active and self.estop:
            # Released: resume only on input that arrives from now on.
            self.estop = False
            self.chunk = self._chunk_positions = None
            self.teleop = None

    # -- output --------------------------------------------------------------------------------
    def _hold(self, reason: str) -> Decision:
        return Decision(self.last.positions, "hold" if self.last.positions is not None else "none",
                        self.last.stamp, reason=reason)

    def step(self, now: float) -> Decision:
        decision = self._decide(now)
        if decision.positions is not None and decision.source in ("policy", "teleop"):
            self._blend(decision, now)
            positions, clamped = self.limits.clamp(decision.positions)
            decision.positions, decision.clamped = positions, clamped
        if decision.positions is not None:
            self.last = decision
        return decision

    def _blend(self, decision: Decision, now: float) -> None:
        """Smooth hand-over: from the last command towards the new source's target over handover_s."""
        if decision.source != self.active_source:
            switching = self.active_source is not None and self.last.positions is not None
            self.active_source = decision.source
            self.blend_from = self.last.positions.copy() if switching else None
            self.blend_start = now
        if self.blend_from is None or self.config.handover_s <= 0:
            return
        w = (now - self.blend_start) / self.config.handover_s
        if w >= 1.0:
            self.blend_from = None
            return
        decision.positions = self.blend_from + w * (decision.positions - self.blend_from)
        decision.reason = f"hand-over to {decision.source}: {w:.0%}"
        decision.blended = True

    def _decide(self, now: float) -> Decision:
        if self.estop:
            if self.estop_position is None:
                return Decision(None, "estop", now, reason="e-stop latched before any joint state")
            return Decision(self.estop_position.copy(), "estop", now, reason="e-stop latched")
        if self.anchor_pending:
            return Decision(None, "none", now, reason="new episode: waiting for the measured position")
        if now - self.measured_at > self.config.joint_state_timeout:
            return self._hold("joint state stale" if self.measured is not None else "no joint state yet")
        if self.engaged:
            if self.teleop is None or now - self.teleop_at > self.config.teleop_timeout:
                return self._hold("teleop engaged but its command is stale")
            return Decision(self.teleop.copy(), "teleop", self.teleop_stamp)
        if self.chunk is None:
            return self._hold("no policy chunk")
        future = np.nonzero(self.chunk.times() > now)[0]
        if future.size == 0:
            return self._hold("policy chunk exhausted (no fresh chunk)")
        return Decision(self._chunk_positions[future[0]].copy(), "policy", self.chunk.stamp,
                        remaining=int(self.chunk.horizon - future[0] - 1))
