"""The simulated human of the sim training loop: the scripted oracle takes over when the policy goes wrong.

What counts as going wrong is the ``trigger``:

- ``drift`` (default): each read compares the policy's proposal for now with what the oracle
  (privileged object poses, simulation only) would command; the largest arm-joint difference staying
  above ``threshold`` rad for ``patience`` reads is a drift. It fires on tasks the policy does well
  too, mostly on the wrist roll (see ``path``), so this human also corrects successes in the making.
- ``stall``: the human watches the task, as an operator does: when its ground-truth progress
  (``TeleopContext.progress``, simulation only) has not risen by ``stall_gain`` for ``stall_s``
  seconds of policy control, the policy is stuck or going backwards. Corrections then land on the
  tasks the policy fails, not on the noise of the ones it solves.
- ``path``: what an operator sees, where the gripper is sent: the grip points that the policy's
  proposal and the oracle's command put the gripper at (the arm's forward kinematics) staying more
  than ``path_threshold`` metres apart for ``patience`` reads. Unlike ``drift`` it does not fire on
  the wrist roll, whose command the oracle jumps to its final angle at once while a learned policy
  turns it the way the arm executes it (measured: nearly every drift take-over of the shipped
  cartesian start was the roll, in the first steps of the approach; docs/learning-benchmark.md,
  item 36), and it does fire on a policy that hovers while the oracle would move on. The fingers'
  heading is not judged.
- Two triggers joined by ``+`` (``drift+stall``, ``path+stall``): either, each with its own count
  and clock, as an operator steps in on both. The drift trigger alone compares one step's joint
  targets, and a stuck policy can stay within ``threshold`` of them (measured: a pusher hovering
  beside the cube for 100 steps, never corrected; docs/learning-benchmark.md, item 35).

Either way the human intervenes with probability ``probability``: for ``takeover_s`` seconds the
oracle commands (absolute joint targets), then control goes back to the policy, which is left alone
for ``cooldown_s``. A drift or stall the human lets pass re-arms (after ``patience`` more reads, or
``stall_s`` more seconds). Seeded, so a run is repeatable. Like a real operator it never marks
success (the sim's ground truth only ever reaches evaluation), though it may ask for a reset after
``reset_after`` interventions in one episode (0: never).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_rl.teleop.base import TeleopContext, TeleopDevice, TeleopReading


TRIGGERS = ("drift", "path", "stall", "drift+stall", "path+stall")


@dataclass
class ScriptedHumanConfig:
    trigger: str = "drift"  # drift | path | stall | drift+stall | path+stall (see the module docstring)
    threshold: float = 0.2  # rad: arm-joint disagreement that counts as drifting (trigger drift)
    path_threshold: float = 0.03  # m: grip points this far apart count as leaving the path (trigger path)
    patience: int = 3  # consecutive drifting reads before the human reacts (triggers drift and path)
    stall_s: float = 2.0  # seconds of policy control without stall_gain of progress (trigger stall)
    stall_gain: float = 0.05  # task progress (0..1) that counts as getting somewhere (trigger stall)
    probability: float = 1.0  # chance of stepping in when a drift is noticed
    takeover_s: float = 1.5
    cooldown_s: float = 1.0
    reset_after: int = 0
    seed: int = 0
    control_rate_hz: float = 10.0  # the teleop node fills in its own
    scene: str = ""  # MJCF of the world (default: the tabletop shipped in sim/)

    def __post_init__(self) -> None:
        if self.trigger not in TRIGGERS:
            raise ValueError(f"scripted human: trigger {self.trigger!r}: expected one of {list(TRIGGERS)}")


class ScriptedHuman(TeleopDevice):
    type_name = "scripted"

    def __init__(self, config: ScriptedHumanConfig, joint_names: list[str]):
        from robot_rl.sim.oracle import OracleConfig, ScriptedOracle
        from robot_rl.sim.tabletop import JOINT_NAMES

        self.config = config
        self.triggers = frozenset(config.trigger.split("+"))  # drift+stall: both
        self.oracle = ScriptedOracle.for_scene(1.0 / config.control_rate_hz, OracleConfig(chunk_length=1), config.scene or None)
        missing = [n for n in JOINT_NAMES if n not in joint_names]
        if missing:
            raise ValueError(f"teleop device 'scripted' drives the tabletop arm: joints {missing} are not among {joint_names}")
        self.oracle_joints = list(JOINT_NAMES)
        self.to_robot = [self.oracle_joints.index(n) for n in joint_names]  # oracle order -> robot order
        self.to_oracle = [joint_names.index(n) for n in self.oracle_joints]  # robot order -> oracle order
        self.arm = np.array([n != "gripper" for n in joint_names])
        self.rng = np.random.default_rng(config.seed)
        self.instruction = ""
        self.until = -np.inf  # engaged until
        self.quiet_until = -np.inf
        self.interventions = 0  # this episode
        self.total_interventions = 0
        self.last_drift = 0.0  # rad, the last read's largest arm-joint disagreement
        self.last_path_error = 0.0  # m, the last read's distance between the commanded grip points
        self.reads_over = {"drift": 0, "path": 0}  # consecutive reads beyond each trigger's threshold
        self.best_progress, self.best_at = -np.inf, -np.inf  # trigger stall: the last real gain, and when

    def oracle_target(self, context: TeleopContext) -> np.ndarray | None:
        if context.measured is None or not context.objects or not context.instruction:
            return None
        if context.instruction != self.instruction or context.new_episode:  # a new episode: the oracle's phase restarts
            self.oracle.reset(context.instruction)
            self.instruction = context.instruction
        index = {n: i for i, n in enumerate(context.joint_names)}
        q = np.asarray(context.measured)[[index[n] for n in self.oracle_joints]]
        return self.oracle.act(q, context.objects)[0][self.to_robot]

    def read(self, context: TeleopContext) -> TeleopReading:
        c, now = self.config, context.now
        if context.new_episode:
            self.until, self.quiet_until, self.interventions = -np.inf, -np.inf, 0
            self.reads_over = dict.fromkeys(self.reads_over, 0)
            self.best_progress, self.best_at = -np.inf, -np.inf
        target = self.oracle_target(context)
        if target is None:
            self.until = -np.inf
            return TeleopReading(engaged=False)
        if now < self.until:
            return TeleopReading(engaged=True, positions=target)
        if self.until > -np.inf:  # a take-over just ended
            self.until, self.quiet_until = -np.inf, now + c.cooldown_s
            self.reads_over = dict.fromkeys(self.reads_over, 0)
            self.best_progress, self.best_at = -np.inf, -np.inf  # the policy's own progress counts from here
        events = []
        if context.policy_target is not None and now >= self.quiet_until:
            if self._gone_wrong(context, target, now):
                if self.rng.random() < c.probability:
                    self.until = now + c.takeover_s
                    self.interventions += 1
                    self.total_interventions += 1
                    if c.reset_after and self.interventions >= c.reset_after:
                        events.append("reset")
                    return TeleopReading(engaged=True, positions=target, events=events)
        return TeleopReading(engaged=False, events=events)

    def _gone_wrong(self, context: TeleopContext, target: np.ndarray, now: float) -> bool:
        """This read's trigger fired (its state re-arms, whether or not the human then steps in)."""
        proposal = np.asarray(context.policy_target, dtype=np.float64)
        self.last_drift = float(np.max(np.abs(proposal - target)[self.arm]))
        kinematics = self.oracle.kin
        self.last_path_error = float(np.linalg.norm(kinematics.forward(proposal[self.to_oracle])[0]
                                                    - kinematics.forward(np.asarray(target)[self.to_oracle])[0]))
        over = {"drift": self.last_drift > self.config.threshold, "path": self.last_path_error > self.config.path_threshold}
        # every trigger is evaluated on every read, so each keeps its own count and clock
        fired = [self._persists(trigger, over[trigger]) for trigger in self.triggers & over.keys()]
        if "stall" in self.triggers:
            fired.append(self._stalled(context, now))
        return any(fired)

    def _persists(self, trigger: str, over: bool) -> bool:
        """Counts the reads in a row beyond ``trigger``'s threshold; fires, and starts over, at ``patience``."""
        count = self.reads_over[trigger] + 1 if over else 0
        fired = count >= self.config.patience
        self.reads_over[trigger] = 0 if fired else count
        return fired

    def _stalled(self, context: TeleopContext, now: float) -> bool:
        c = self.config
        if context.progress is None:
            raise ValueError(f"scripted human: trigger {c.trigger!r} needs the task's ground-truth progress "
                             "(TeleopContext.progress: /sim/progress in the ROS graph), and none came")
        progress = float(context.progress)
        if progress >= 1.0:
            return False  # done: nothing to correct
        if progress >= self.best_progress + c.stall_gain or self.best_at == -np.inf:
            self.best_progress, self.best_at = max(progress, self.best_progress), now
            return False
        if now - self.best_at >= c.stall_s:
            self.best_progress, self.best_at = progress, now
            return True
        return False
