"""The learner's buffers: the demonstration buffer and the store of recent policy versions.

:class:`DemoBuffer` holds (observation, demonstrated chunk) samples for the demo-replay NLL term:
preloaded from collected demonstrations, and fed during RL with the steps a human commanded
(human-guided exploration: those steps never enter the PPO ratio). A ring buffer of fixed capacity
(oldest human steps leave first; the preloaded demonstrations can be pinned so they never leave).
Rows of episodes that record the objects' ground-truth positions (``object_positions``: simulated
demonstrations) keep them too, for the demo phase's auxiliary loss (``ppo.objects_coef``).

:class:`VersionStore` keeps the state dicts of the last ``keep`` published versions, so that the
behaviour log-probabilities of an episode are recomputed with the weights that actually acted.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from robot_rl.data.dataset import OBJECTS_ARRAY
from robot_rl.data.episodes import Episode
from robot_rl.data.npz import read_npz


class DemoBuffer:
    def __init__(self, cameras: list[str], image_shape: tuple[int, int], joints: int, horizon: int, capacity: int = 5000):
        h, w = image_shape
        self.cameras, self.horizon, self.capacity = list(cameras), horizon, capacity
        self.images = {c: np.zeros((capacity, h, w, 3), np.uint8) for c in cameras}
        self.joints = np.zeros((capacity, joints), np.float32)
        self.actions = np.zeros((capacity, horizon, joints), np.float32)
        self.mask = np.zeros((capacity, horizon), bool)
        self.instructions: list[str] = [""] * capacity
        # allocated by the first episode that records object positions (their count comes from it);
        # rows without them (a human's steps on a real robot) are NaN
        self.objects: np.ndarray | None = None
        self.size = 0
        self.pinned = 0  # the first `pinned` rows (preloaded demonstrations) are never overwritten
        self.cursor = 0
        self.added_human = 0

    def __len__(self) -> int:
        return self.size

    def add_episode(self, episode: Episode, steps: np.ndarray | None = None, pin: bool = False) -> int:
        """Add the samples of ``steps`` (default: every step) of a demonstration or an intervention.

        A sample is the observation of step t and the commands of steps t .. t+H-1 that belong to the
        same demonstration (for an intervention: the steps the human kept control). Where the actions are
        labels the arm was not sent as they are (``collect --behaviour dart``), a chunk stops after the
        first label that was not executed: what follows depends on a perturbation row t cannot show."""
        t_all = len(episode)
        is_demo = np.ones(t_all, bool) if steps is None else np.zeros(t_all, bool)
        if steps is not None:
            is_demo[steps] = True
        added = 0
        objects = episode.extras.get(OBJECTS_ARRAY)
        if objects is not None and self.objects is None:
            self.objects = np.full((self.capacity, objects.shape[1]), np.nan, np.float32)
        if objects is not None and objects.shape[1] != self.objects.shape[1]:
            raise ValueError(f"episode {episode.meta.episode_id}: {OBJECTS_ARRAY} has {objects.shape[1]} columns, "
                             f"the demo buffer's rows have {self.objects.shape[1]}")
        labelled = episode.executed_as_labelled()
        for t in np.nonzero(is_demo)[0]:
            if not pin and self.pinned >= self.capacity:
                break
            row = self._next_row(pin)
            if row is None:
                break
            for c in self.cameras:
                self.images[c][row] = episode.images[c][t]
            self.joints[row] = episode.joint_positions[t]
            idx = np.arange(t, t + self.horizon)
            valid = idx < t_all
            valid[valid] &= is_demo[idx[valid]]
            # point k needs the labels of rows t .. t+k-1 executed as they are (point 0 is always its own)
            valid[1:] &= labelled[np.minimum(idx[:-1], t_all - 1)]
            valid &= np.cumsum(~valid) == 0  # only the run of demonstrated steps from t on
            clipped = np.minimum(idx, t_all - 1)
            self.actions[row] = np.where(valid[:, None], episode.actions[clipped], 0.0)
            self.mask[row] = valid
            self.instructions[row] = episode.meta.instruction
            if self.objects is not None:
                self.objects[row] = objects[t] if objects is not None else np.nan
            added += 1
        if pin:
            self.pinned = self.size
        else:
            self.added_human += added
        return added

    def add_demonstration(self, episode: Episode) -> int:
        """Pin the samples of a collected demonstration, up to where its task was done.

        ``robot-rl collect`` records a few settle steps after success for the critic; in them the
        oracle moves away (it lifts off the button), and a chunk that ran into them would teach
        "leave" next to the goal. As in behaviour cloning (``DemoDataset(until_success=True)``),
        samples and chunk targets stop at ``success_step``; an episode without it is used whole."""
        end = episode.success_step
        return self.add_episode(episode, None if end is None else np.arange(end), pin=True)

    def _next_row(self, pin: bool) -> int | None:
        if self.size < self.capacity:
            row = self.size
            self.size += 1
            return row
        if pin:
            return None  # full of pinned demonstrations
        span = self.capacity - self.pinned
        row = self.pinned + self.cursor % span
        self.cursor += 1
        return row

    def object_rows(self) -> np.ndarray:
        """Indices of the rows that carry object positions."""
        if self.objects is None:
            return np.zeros(0, np.int64)
        return np.nonzero(~np.isnan(self.objects[:self.size]).any(axis=1))[0]

    def sample(self, n: int, rng: np.random.Generator, embed, human_fraction: float = 0.0,
               with_objects: bool = False) -> tuple:
        """``n`` samples (fewer when the buffer holds fewer). With ``human_fraction`` > 0 and both kinds
        present, that share of the batch is drawn from the human's steps and the rest from the pinned
        demonstrations (as HIL-SERL and RLPD draw half from each buffer): otherwise a few hundred
        corrections are a few percent of a batch next to thousands of preloaded demonstration rows.
        ``with_objects`` appends the rows' object positions (NaN where a row has none) to the tuple."""
        n = min(n, self.size)
        if human_fraction > 0 and 0 < self.pinned < self.size:
            k = int(round(n * human_fraction))
            rows = np.concatenate([rng.integers(self.pinned, self.size, size=k), rng.integers(0, self.pinned, size=n - k)])
        else:
            rows = rng.integers(0, self.size, size=n)
        images = {c: torch.from_numpy(v[rows]) for c, v in self.images.items()}
        text = torch.from_numpy(np.stack([embed(self.instructions[i]) for i in rows]))
        sample = (images, torch.from_numpy(self.joints[rows]), text, torch.from_numpy(self.actions[rows]),
                  torch.from_numpy(self.mask[rows].astype(np.float32)))
        if with_objects:
            objects = self.objects[rows] if self.objects is not None else np.full((len(rows), 0), np.nan, np.float32)
            sample += (torch.from_numpy(objects),)
        return sample

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        n = self.size
        np.savez(tmp, **{f"image_{c}": v[:n] for c, v in self.images.items()}, joints=self.joints[:n],
                 actions=self.actions[:n], mask=self.mask[:n], instructions=np.asarray(self.instructions[:n]),
                 counters=np.asarray([self.pinned, self.cursor, self.added_human]),
                 **({"objects": self.objects[:n]} if self.objects is not None else {}))
        tmp.replace(path)

    def load(self, path: str | Path) -> None:
        z = read_npz(path)
        n = len(z["joints"])
        if n > self.capacity:
            raise ValueError(f"{path}: {n} demo samples, the buffer holds {self.capacity} (raise demo_capacity)")
        for c in self.cameras:
            self.images[c][:n] = z[f"image_{c}"]
        self.joints[:n], self.actions[:n], self.mask[:n] = z["joints"], z["actions"], z["mask"]
        self.instructions[:n] = [str(s) for s in z["instructions"]]
        if "objects" in z:
            self.objects = np.full((self.capacity, z["objects"].shape[1]), np.nan, np.float32)
            self.objects[:n] = z["objects"]
        self.pinned, self.cursor, self.added_human = (int(x) for x in z["counters"])
        self.size = n


class VersionStore:
    """version -> state dict (CPU tensors) of the last ``keep`` versions."""

    def __init__(self, keep: int):
        self.keep = max(1, keep)
        self.states: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()

    def add(self, version: int, state: dict[str, torch.Tensor]) -> None:
        self.states[version] = {k: v.detach().clone().cpu() for k, v in state.items()}
        while len(self.states) > self.keep:
            self.states.popitem(last=False)

    def __contains__(self, version: int) -> bool:
        return version in self.states

    def get(self, version: int) -> dict[str, torch.Tensor]:
        return self.states[version]

    def to_dict(self) -> dict:
        return {"keep": self.keep, "states": {int(k): v for k, v in self.states.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "VersionStore":
        store = cls(int(d["keep"]))
        for k, v in d["states"].items():
            store.states[int(k)] = v
        return store
