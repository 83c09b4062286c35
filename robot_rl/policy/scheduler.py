"""Action scheduling: turning a stream of action chunks into one joint target per control period.

A chunk computed from the observation at ``stamp`` proposes targets for the control slots
``stamp + (k + 1) * period``. Slots are the control grid (:meth:`ActionScheduler.slot`), so chunks from
observations with jittery stamps still line up. Two ways to merge overlapping chunks:

- ``latest``: the newest chunk replaces every slot it covers (what most real-robot stacks do);
- ``ensemble``: ACT's temporal ensembling. Every chunk's proposal for a slot is kept and the target
  is their weighted mean with weights ``exp(-decay * i)``, ``i = 0`` for the oldest proposal, so the
  commitment made earlier dominates and a single bad inference cannot yank the arm.

Slots whose time has passed are dropped (latency compensation: a chunk that arrives late does not
replay the targets the arm should already have reached). ``depth(now)`` says how many future slots
are filled, which the policy node compares with its threshold to request the next inference.
"""

from __future__ import annotations

import math

import numpy as np

from robot_rl.policy.base import ActionChunk

MODES = ("latest", "ensemble")


class ActionScheduler:
    def __init__(self, period: float, mode: str = "latest", decay: float = 0.01, max_proposals: int = 64):
        if mode not in MODES:
            raise ValueError(f"unknown chunk merging '{mode}'; expected one of {list(MODES)}")
        if period <= 0:
            raise ValueError(f"control period must be positive, got {period}")
        self.period = period
        self.mode = mode
        self.decay = decay
        self.max_proposals = max_proposals
        self.slots: dict[int, list[np.ndarray]] = {}  # slot -> proposals, oldest first
        self.joint_names: list[str] | None = None
        self.stamp = None  # observation stamp of the newest chunk

    def slot(self, t: float) -> int:
        """The control slot of time ``t``: a stamp up to a quarter period early still counts as that
        slot's (camera stamps jitter around the grid; a late one belongs to the slot it is past)."""
        return int(math.floor(t / self.period + 0.25))

    def reset(self) -> None:
        self.slots.clear()
        self.stamp = None

    def add(self, chunk: ActionChunk, now: float | None = None) -> None:
        if self.joint_names is not None and list(chunk.joint_names) != self.joint_names:
            self.reset()  # another joint order: nothing queued is comparable
        self.joint_names = list(chunk.joint_names)
        first = self.slot(chunk.stamp) + 1
        if self.mode == "latest":
            self.slots = {s: v for s, v in self.slots.items() if s < first}
        for k in range(chunk.horizon):
            proposals = self.slots.setdefault(first + k, [])
            proposals.append(np.asarray(chunk.positions[k], np.float64))
            del proposals[:-self.max_proposals]
        self.stamp = chunk.stamp
        if now is not None:
            self.drop_past(now)

    def drop_past(self, now: float) -> None:
        """Forget the current slot and earlier ones: their time has come, the arm is past them."""
        current = self.slot(now)
        for s in [s for s in self.slots if s <= current]:
            del self.slots[s]

    def target(self, slot: int) -> np.ndarray | None:
        proposals = self.slots.get(slot)
        if not proposals:
            return None
        if self.mode == "latest" or len(proposals) == 1:
            return proposals[-1].copy()
        w = np.exp(-self.decay * np.arange(len(proposals)))
        return (w[:, None] * np.stack(proposals)).sum(0) / w.sum()

    def next_target(self, now: float) -> np.ndarray | None:
        """The target for the next control slot after ``now`` (None when nothing is queued for it)."""
        self.drop_past(now)
        return self.target(self.slot(now) + 1)

    def depth(self, now: float) -> int:
        """Future slots that have a target."""
        current = self.slot(now)
        return sum(1 for s in self.slots if s > current)

    def chunk(self, now: float) -> ActionChunk | None:
        """The queued future targets as one chunk starting at the next slot; its stamp is the current
        slot's time, so row k is for slot + k + 1 (observation-age checks belong before ``add``)."""
        self.drop_past(now)
        current = self.slot(now)
        rows, s = [], current + 1
        while s in self.slots:
            rows.append(self.target(s))
            s += 1
        if not rows or self.joint_names is None:
            return None
        return ActionChunk(current * self.period, self.period, self.joint_names, np.stack(rows))
