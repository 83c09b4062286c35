"""The episode recorder behind ``episode_node``: topic callbacks in, finished RL episodes out (ROS-free).

One step is recorded per command the safety node executed (``/safety/command``), so the episode's
steps are exactly what the robot was told, and by whom (``frame_id``: policy, teleop, hold, estop,
handover). Hand-over blends are neither the policy's sample nor the human's command, so like holds
they are neither PPO decisions nor demonstrations.
Per step: the camera frames at the policy's resolution, the measured joints, the executed command,
``intervention`` (a human commanded it) and the optional arrays of ``docs/episode-format.md``:

- ``policy_version``: the learner version whose chunk produced the command (``policy_v<N>`` in the
  trajectory's frame_id), -1 for steps no policy chunk produced (human, hold, e-stop);
- ``obs_step``: the step whose observation the chunk was computed from. A chunk is stamped with its
  observation's time; the first command from a new chunk becomes that decision's step, and its
  frames and joints are the ones *with that stamp* (kept in a short history), so the learner sees
  exactly the observation the policy saw. Later commands from the same chunk point back to it;
- ``chunk_step``: which point of the chunk was executed (the safety layer drops points whose time
  has passed, so this is found by matching the executed targets against the chunk's points);
- ``reward``: the sum of the progress critic's deltas (``/reward/progress``) since the previous step;
  ``done_prob`` the critic's latest done probability.

A decision whose observation or chunk is no longer in the history (a dropped frame) is recorded
with ``policy_version`` -1: the step stays in the episode, but the learner does not use it as a PPO
decision (counted in ``unmatched``).

An episode ends by :meth:`EpisodeRecorder.stop` (the node: a service, an operator event, a new
instruction), by the critic's done (``done_prob`` above ``done_threshold`` for ``done_frames``
readings in a row) or by the time limit, whichever comes first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from robot_rl.data.episodes import Episode, EpisodeMeta, EpisodeWriter, new_episode_id
from robot_rl.policy.base import ActionChunk
from robot_rl.safety.limits import in_joint_order

NOT_POLICY = -1  # policy_version / obs_step / chunk_step of a step no policy chunk produced


@dataclass
class RecorderConfig:
    cameras: list[str]
    image_width: int
    image_height: int
    joint_names: list[str]
    control_rate_hz: float = 10.0
    max_duration_s: float = 30.0
    done_threshold: float = 0.5
    done_frames: int = 2  # 0: the critic's done never ends an episode
    min_steps: int = 2  # shorter episodes are discarded (a reset right after a start)
    history: int = 64  # observations and chunks kept for matching (6 s at 10 Hz)
    joint_history: int = 2000  # joint states kept (4 s of a 500 Hz arm driver)
    joint_sync_tolerance_s: float = 0.05  # as the policy node's: joints nearest the frames, at most this far
    robot: str = "robot"
    exploration: str | None = "step"  # how the policy's chunks were drawn (learn/ppo.py section 9); None: no noise


@dataclass
class Outcome:
    reason: str  # "done" (critic), "time_limit", "success" / "failure" (operator), "reset", "stopped", ...
    success: bool  # reported success: simulator truth when known, else the operator's mark or the critic's done


@dataclass
class _Current:
    writer: EpisodeWriter
    started: float
    decision_stamp: float | None = None
    decision_step: int = NOT_POLICY
    decision_version: int = NOT_POLICY
    reward: float = 0.0
    done_prob: float = 0.0
    done_count: int = 0
    sim_success: bool | None = None
    intervened_steps: int = 0
    unmatched: int = 0
    extra: dict = field(default_factory=dict)


class EpisodeRecorder:
    def __init__(self, config: RecorderConfig):
        self.config = config
        self.frames: dict[str, OrderedDict] = {c: OrderedDict() for c in config.cameras}  # stamp -> image
        self.joints: OrderedDict = OrderedDict()  # stamp -> positions (our joint order)
        self.chunks: OrderedDict = OrderedDict()  # stamp -> (positions in our order, version)
        self.current: _Current | None = None
        self.pending_end: Outcome | None = None
        self.pending: tuple | None = None  # the latest command, recorded once its period is over

    # -- inputs, in any order ------------------------------------------------------------------------
    def _keep(self, store: OrderedDict, stamp: float, value) -> None:
        store[stamp] = value
        while len(store) > self.config.history:
            store.popitem(last=False)

    def on_frame(self, camera: str, stamp: float, image: np.ndarray) -> None:
        """A frame already at the policy's resolution (the node resizes)."""
        if camera in self.frames:
            self._keep(self.frames[camera], stamp, image)

    def on_joints(self, stamp: float, positions: np.ndarray) -> None:
        self.joints[stamp] = np.asarray(positions, np.float32)
        while len(self.joints) > self.config.joint_history:
            self.joints.popitem(last=False)

    def on_chunk(self, chunk: ActionChunk) -> None:
        positions = in_joint_order(chunk.joint_names, chunk.positions, self.config.joint_names, "/policy/trajectory")
        self._keep(self.chunks, chunk.stamp, (positions, chunk.version))

    def on_reward(self, delta: float, done_prob: float) -> Outcome | None:
        cur = self.current
        if cur is None:
            return None
        cur.reward += float(delta)
        cur.done_prob = float(done_prob)
        c = self.config
        cur.done_count = cur.done_count + 1 if done_prob > c.done_threshold else 0
        if c.done_frames > 0 and cur.done_count >= c.done_frames:
            return self._end_soon("done", True)
        return None

    def on_sim_success(self, success: bool) -> None:
        if self.current is not None:
            self.current.sim_success = bool(success) or bool(self.current.sim_success)

    # -- lifecycle ------------------------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        return self.current is not None

    def start(self, instruction: str, task: str, now: float, seed: int = -1, extra: dict | None = None) -> str:
        c = self.config
        meta = EpisodeMeta(new_episode_id(task or "episode", max(seed, 0)), task, instruction, seed, False, "rl",
                           list(c.cameras), c.image_height, c.image_width, list(c.joint_names), c.control_rate_hz,
                           extra={"robot": c.robot, "exploration": c.exploration, **(extra or {})})
        self.current = _Current(EpisodeWriter("", meta), now)
        self.pending_end, self.pending = None, None
        return meta.episode_id

    def _end_soon(self, reason: str, success: bool) -> Outcome:
        self.pending_end = self.pending_end or Outcome(reason, success)
        return self.pending_end

    def check_time(self, now: float) -> Outcome | None:
        if self.current is not None and now - self.current.started >= self.config.max_duration_s:
            return self._end_soon("time_limit", False)
        return None

    def stop(self, reason: str, success: bool | None = None) -> tuple[Episode | None, Outcome]:
        """End the episode: (the episode, or None when too short to keep; the outcome)."""
        if self.current is not None and self.pending is not None:
            self._record(*self.pending)
        self.pending = None
        cur, self.current = self.current, None
        outcome = self.pending_end or Outcome(reason, bool(success))
        self.pending_end = None
        if cur is None:
            return None, outcome
        if cur.sim_success is not None:  # simulator truth, for reporting only
            outcome = Outcome(outcome.reason, cur.sim_success)
        meta = cur.writer.meta
        versions = [int(v) for v in cur.writer.extras.get("policy_version", []) if v >= 0]
        meta.extra.update({"policy_versions": [min(versions), max(versions)] if versions else [],
                           "outcome": outcome.reason, "intervened_steps": cur.intervened_steps,
                           "unmatched_decisions": cur.unmatched, "critic_done": outcome.reason == "done"})
        if len(cur.writer.rows["stamp"]) < self.config.min_steps:
            return None, outcome
        return cur.writer.episode(outcome.success), outcome

    # -- one executed command = one step ---------------------------------------------------------------
    def _latest(self, store: OrderedDict):
        """The newest-stamped of what has arrived (a late, older frame does not replace a newer one)."""
        return store[max(store)] if store else None

    def _observation_at(self, stamp: float):
        """The frames stamped ``stamp`` and the joint state nearest to it (the policy node's rule)."""
        images = {c: self.frames[c].get(stamp) for c in self.config.cameras}
        joints = None
        if self.joints:
            skew, nearest = min((abs(t - stamp), t) for t in self.joints)
            joints = self.joints[nearest] if skew <= self.config.joint_sync_tolerance_s else None
        if any(v is None for v in images.values()) or joints is None:
            return None
        return images, joints

    def on_executed(self, positions: np.ndarray, source: str, stamp: float, now: float) -> Outcome | None:
        """One executed command (our joint order; ``stamp``: its observation's time).

        Steps are control periods: a command that replaces the previous one within half a period
        (the safety node acts on a fresh chunk at once, and its timer may have just fired) takes that
        step's place, so an episode has one step per period of the robot's command stream.
        """
        cur = self.current
        if cur is None:
            return None
        latest = [self._latest(self.frames[c]) for c in self.config.cameras]
        joints = self._latest(self.joints)
        if any(v is None for v in latest) or joints is None:
            return self.check_time(now)  # nothing observed yet: no step
        held = self.pending
        self.pending = (np.asarray(positions, np.float64).copy(), source, stamp, now,
                        dict(zip(self.config.cameras, latest)), joints)
        if held is not None and now - held[3] >= 0.5 / self.config.control_rate_hz:
            self._record(*held)
        return self.check_time(now)

    def _record(self, positions: np.ndarray, source: str, stamp: float, now: float, images: dict,
                joints: np.ndarray) -> None:
        """Append one step; ``images``/``joints``: the newest observation when the command was executed."""
        cur = self.current
        step = len(cur.writer.rows["stamp"])
        version, obs_step, chunk_step = NOT_POLICY, NOT_POLICY, NOT_POLICY
        if source == "policy":
            if stamp != cur.decision_stamp:  # a new decision: its observation is this step's
                cur.decision_stamp, cur.decision_step, cur.decision_version = stamp, step, NOT_POLICY
                observed, chunk = self._observation_at(stamp), self.chunks.get(stamp)
                if observed is not None and chunk is not None and chunk[1] >= 0:
                    images, joints = observed
                    cur.decision_version = chunk[1]
                else:
                    cur.unmatched += 1
            chunk = self.chunks.get(stamp)
            if cur.decision_version >= 0 and chunk is not None:
                version, obs_step = cur.decision_version, cur.decision_step
                chunk_step = int(np.argmin(np.abs(chunk[0] - positions).max(axis=1)))
        elif source == "teleop":
            cur.intervened_steps += 1
        cur.writer.add(images, joints, positions, now, intervention=source == "teleop",
                       extras={"policy_version": version, "obs_step": obs_step, "chunk_step": chunk_step,
                               "reward": cur.reward, "done_prob": cur.done_prob})
        cur.reward = 0.0
