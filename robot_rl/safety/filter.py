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
which joints were clamped. Then, in this order:

- Velocity and acceleration: the step from the last command is limited to ``max_velocity`` and the
  change of that step's velocity to ``max_acceleration`` (per control period ``control_period_s``);
  the limiter never overshoots the target, so a stop is never delayed. Limited joints are reported.
- Workspace: the end effector of the command, from the robot's own model (MJCF/URDF through MuJoCo
  forward kinematics), must lie inside the limits file's box; a command outside is refused: the arm
  holds and the reason names the axis and the box.
- A policy chunk whose first target is further than ``max_jump`` from the measured position, or whose
  consecutive targets differ by more, is refused on arrival (a jump is a sign of a broken policy or a
  unit mix-up: clipping it silently would hide that). A NaN or infinite value is refused the same way.

Times are float seconds of one clock (the node's ROS clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from robot_rl.policy.base import ActionChunk
from robot_rl.safety.limits import RobotLimits
from robot_rl.safety.workspace import Workspace


@dataclass
class SafetyConfig:
    max_observation_age: float = 0.3  # s; older policy chunks are rejected
    joint_state_timeout: float = 0.3  # s without joint state -> hold
    teleop_timeout: float = 0.3  # s without a teleop command while engaged -> hold
    handover_s: float = 0.5  # s of blending when control passes between policy and teleop (0: none)
    control_period_s: float = 0.1  # the node's step period: velocity and acceleration limits act per step


@dataclass
class Decision:
    positions: np.ndarray | None  # None: command nothing (no safe command exists yet)
    source: str  # "policy", "teleop", "hold", "estop" or "none"
    stamp: float  # time of the observation/input the command derives from
    clamped: list[str] = field(default_factory=list)
    reason: str = ""
    remaining: int = 0  # policy: waypoints of the chunk after this one
    blended: bool = False  # a hand-over blend, not the source's own target
    limited: list[str] = field(default_factory=list)  # joints slowed by the velocity/acceleration limits


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
        self.velocity = np.zeros(len(self.joint_names))  # of the last command step
        self.chunk_at = -np.inf
        self.last_step_at = -np.inf
        self.workspace = Workspace(limits.workspace, self.joint_names, limits.source) if limits.workspace else None
        self.refused = {"jump": 0, "workspace": 0, "non_finite": 0, "stale": 0}

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
            self.refused["stale"] += 1
            return self._reject(
                f"policy chunk rejected: observation is {age * 1e3:.0f} ms old "
                f"(max_observation_age {self.config.max_observation_age * 1e3:.0f} ms)"
            )
        try:
            positions = self._reorder(chunk.joint_names, chunk.positions, "policy chunk")
        except ValueError as exc:
            if "non-finite" in str(exc):
                self.refused["non_finite"] += 1
            return self._reject(str(exc))
        jump = self._jump(positions)
        if jump:
            self.refused["jump"] += 1
            return self._reject(jump)
        self.chunk, self._chunk_positions = chunk, positions
        self.chunk_at = now
        return None

    def _jump(self, positions: np.ndarray) -> str | None:
        """Why the chunk jumps further than max_jump (from the measured position, or between targets)."""
        limit = self.limits.max_jump
        if limit is None:
            return None
        steps = [("the measured position", self.measured, positions[0])] if self.measured is not None else []
        steps += [(f"target {i}", positions[i], positions[i + 1]) for i in range(len(positions) - 1)]
        for what, start, end in steps:
            excess = np.abs(end - start) - limit
            if np.any(excess > 0):
                j = int(np.argmax(excess))
                return (f"policy chunk refused: jumps {abs(end[j] - start[j]):.3f} on {self.joint_names[j]} from {what} "
                        f"(max_jump {limit[j]:.3f} in {self.limits.source})")
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
        start = self.last.positions if self.last.positions is not None else self.measured
        # Time since the last command, at most one control period: an extra command between two timed
        # ones (the node also steps on events) gets only the motion its share of the period allows.
        dt = float(np.clip(now - self.last_step_at, 1e-3, self.config.control_period_s))
        if decision.positions is not None and decision.source in ("policy", "teleop"):
            self._blend(decision, now)
            positions, clamped = self.limits.clamp(decision.positions)
            positions, limited = self._rate_limit(positions, start, dt)
            outside = self.workspace.violation(positions) if self.workspace is not None else None
            if outside:
                self.refused["workspace"] += 1
                self.last_rejection = outside
                decision = self._hold(f"{decision.source} command refused: {outside}")
            else:
                decision.positions, decision.clamped, decision.limited = positions, clamped, limited
        if decision.source in ("policy", "teleop") and start is not None:
            self.velocity = (decision.positions - start) / dt
        else:
            self.velocity = np.zeros_like(self.velocity)  # holding, frozen or nothing: at rest
        if decision.positions is not None:
            self.last = decision
            self.last_step_at = now
        return decision

    def _rate_limit(self, target: np.ndarray, start: np.ndarray | None, dt: float) -> tuple[np.ndarray, list[str]]:
        """The target, reached from ``start`` (the last command) no faster than max_velocity and
        max_acceleration allow in ``dt``."""
        if start is None:
            return target, []
        wanted = (target - start) / dt
        velocity = np.clip(wanted, -self.limits.max_velocity, self.limits.max_velocity)
        if self.limits.max_acceleration is not None:
            change = self.limits.max_acceleration * dt
            velocity = np.clip(velocity, self.velocity - change, self.velocity + change)
        # never past the target: slowing down to stop at it is always allowed
        velocity = np.clip(velocity, np.minimum(wanted, 0.0), np.maximum(wanted, 0.0))
        out = start + velocity * dt
        limited = [n for n, a, b in zip(self.joint_names, out, target) if abs(a - b) > 1e-9]
        return out, limited

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
            return self._hold(f"policy chunk exhausted (no fresh chunk for {(now - self.chunk_at) * 1e3:.0f} ms: "
                              "inference stalled or its input is stale)")
        return Decision(self._chunk_positions[future[0]].copy(), "policy", self.chunk.stamp,
                        remaining=int(self.chunk.horizon - future[0] - 1))
