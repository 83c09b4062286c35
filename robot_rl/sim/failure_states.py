"""Return-and-explore in simulation: a bank of saved simulator states where the policy needed help.

VLAC's second human-in-the-loop stage resets the scene to states where the policy tends to fail and
lets it explore from there, instead of always from the start. In simulation the sim bridge saves the
full world state (:meth:`robot_rl.sim.world.World.snapshot`) whenever the human takes over (the
policy had drifted far enough for the human to step in), and a reset starts from one of the saved
states with probability ``return_probability``. Each state is used at most ``max_uses`` times and the
bank keeps the newest ``capacity`` states, so it follows where the *current* policy fails. States live
as ``.npz`` files in a directory, so a restarted sim keeps its bank.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from robot_rl.data.npz import read_npz


class FailureStates:
    def __init__(self, directory: str | Path, capacity: int = 50, max_uses: int = 3, seed: int = 0):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.capacity, self.max_uses = capacity, max_uses
        self.rng = np.random.default_rng(seed)
        self.uses: dict[str, int] = {}
        self.saved = self.restored = 0

    def files(self) -> list[Path]:
        return sorted(self.dir.glob("state_*.npz"))

    def __len__(self) -> int:
        return len(self.files())

    def add(self, state: dict[str, np.ndarray]) -> Path:
        path = self.dir / f"state_{time.time_ns()}.npz"
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **state)
        os.replace(tmp, path)
        self.saved += 1
        for old in self.files()[:-self.capacity]:  # the oldest go: the policy has moved on
            old.unlink(missing_ok=True)
            self.uses.pop(old.name, None)
        return path

    def sample(self) -> tuple[str, dict[str, np.ndarray]] | None:
        """A saved state to start from (uniform over the bank), or None when the bank is empty."""
        files = self.files()
        if not files:
            return None
        path = files[int(self.rng.integers(len(files)))]
        state = read_npz(path)
        self.uses[path.name] = self.uses.get(path.name, 0) + 1
        if self.uses[path.name] >= self.max_uses:
            path.unlink(missing_ok=True)
            self.uses.pop(path.name)
        self.restored += 1
        return path.name, state
