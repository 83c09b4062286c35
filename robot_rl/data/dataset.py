"""Episodes as training samples for chunked policies: (frames, joints, instruction) -> next H actions.

Sample ``(episode, t)`` takes the frames and joints of step t and the actions commanded at steps
t .. t+H-1; past the end of the episode the last action repeats (the arm holds). All episodes are
loaded into memory (uint8 frames: 1000 steps of two 96x128 cameras are 74 MB).

``until_success`` (default on) ends a successful episode where its task was done, when the episode
says where (``meta.extra.success_step``, written by ``robot-rl collect``): the settle tail that
collect records after success is there for the progress critic (it shows what "done" looks like),
not for the policy. Behind it the oracle lets go (it lifts off the button as soon as the press
counts), so without the cut every chunk that starts near the button ends in "go up" and the
samples over a pressed button teach leaving it; a policy that is stopped at success never needs
what comes after it. With the cut the chunks hold the action that finished the task. Episodes
without ``success_step`` (recorded on a robot) are used whole.

Episodes whose ``action`` is a label rather than what the arm was sent (``collect --behaviour dart``:
``executed_action`` beside it) give a sample at row t only when the arm was sent the labels of rows
t .. t+H-2: then the chunk is the oracle's own path from the state of row t, which may be off target
(that is the point: a recovery). A chunk that spans a perturbation would mix in states that the frames
of row t cannot predict (``Episode.executed_as_labelled``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robot_rl.data.episodes import Episode, EpisodeFormatError, list_episodes, read_episode

OBJECTS_ARRAY = "object_positions"  # optional per-step array: ground-truth object positions (sim)
# optional per-step arrays, one per camera: the same positions in that camera's frame (sim)
CAMERA_OBJECTS_PREFIX = "object_positions_in_"


@dataclass
class ChunkBatch:
    images: dict[str, np.ndarray]  # camera -> (B, H, W, 3) uint8
    joints: np.ndarray  # (B, J) float32
    instructions: list[str]  # (B,)
    actions: np.ndarray  # (B, horizon, J) float32 absolute targets
    returns: np.ndarray  # (B,) float32 discounted success return from step t
    # (B, 3 x objects) float32 ground-truth object positions at step t, when every episode of the
    # dataset records them (``object_positions``: simulated demonstrations), followed with
    # ``objects_in_cameras`` by the same in each camera's frame (B, 3 x objects x (1 + cameras)); else None
    objects: np.ndarray | None = None


class DemoDataset:
    def __init__(self, dataset_dir: str | Path | list, horizon: int, cameras: list[str] | None = None,
                 only_success: bool = True, gamma: float = 0.99, max_episodes: int | None = None,
                 until_success: bool = True, objects_in_cameras: bool = False):
        # several directories are one dataset (the original demonstrations and newer ones, say)
        self.dirs = [str(d) for d in (dataset_dir if isinstance(dataset_dir, (list, tuple)) else [dataset_dir])]
        dataset_dir = ", ".join(self.dirs)  # for the messages below
        paths = [p for d in self.dirs for p in list_episodes(d)]
        if max_episodes is not None:  # spread over the dataset (episodes are sorted by time and task)
            paths = [paths[i] for i in np.linspace(0, len(paths) - 1, min(max_episodes, len(paths))).astype(int)]
        episodes = [read_episode(p) for p in paths]
        if only_success:
            episodes = [e for e in episodes if e.meta.success]
        if not episodes:
            raise EpisodeFormatError(f"{dataset_dir}: no {'successful ' if only_success else ''}episodes to learn from")
        first = episodes[0].meta
        self.cameras = list(cameras or first.cameras)
        self.joint_names = list(first.joint_names)
        self.image_size = (first.image_height, first.image_width)
        for e in episodes:
            m = e.meta
            if m.joint_names != self.joint_names:
                raise EpisodeFormatError(f"episode {m.episode_id}: joints {m.joint_names} differ from {self.joint_names}")
            missing = [c for c in self.cameras if c not in m.cameras]
            if missing or (m.image_height, m.image_width) != self.image_size:
                raise EpisodeFormatError(
                    f"episode {m.episode_id}: cameras {m.cameras} at {m.image_height}x{m.image_width}, expected "
                    f"{self.cameras} at {self.image_size[0]}x{self.image_size[1]}")
        self.episodes: list[Episode] = episodes
        self.horizon = horizon
        self.gamma = gamma
        # last row of each episode that is a training sample and an action target
        self.last = [((e.success_step if until_success else None) or len(e)) - 1 for e in episodes]
        # each episode's sample rows (all of 0..last unless a perturbation cut some chunks), and all of them flat
        self.sample_rows = [self._sample_rows(e, last) for e, last in zip(episodes, self.last)]
        self.index = np.array([(i, t) for i, rows in enumerate(self.sample_rows) for t in rows], dtype=np.int64).reshape(-1, 2)
        self.control_rate_hz = float(first.control_rate_hz)
        # train-bc's auxiliary loss needs the objects' positions at every sample, so only a dataset
        # whose episodes all carry them (simulation) offers them; with ``objects_in_cameras`` also as each
        # camera sees them (a wrist camera's view is relative to the gripper: no fixed map from the world's)
        self.object_arrays = [OBJECTS_ARRAY] + ([f"{CAMERA_OBJECTS_PREFIX}{c}" for c in self.cameras]
                                                if objects_in_cameras else [])
        self.has_objects = all(name in e.extras for e in episodes for name in self.object_arrays)

    def _sample_rows(self, episode: Episode, last: int) -> np.ndarray:
        """Rows 0..last whose chunk of labels the arm executed (all of them for an ordinary episode)."""
        labelled = episode.executed_as_labelled()[: last + 1]
        if labelled.all():
            return np.arange(last + 1)
        # row t needs rows t .. t+H-2 executed as labelled (the last label's command moves nothing in the chunk)
        return np.array([t for t in range(last + 1) if labelled[t: t + self.horizon - 1].all()], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def instructions(self) -> list[str]:
        return sorted({e.meta.instruction for e in self.episodes})

    def batch(self, rows: np.ndarray) -> ChunkBatch:
        images = {c: [] for c in self.cameras}
        joints, instructions, actions, returns, objects = [], [], [], [], []
        for i, t in self.index[rows]:
            e = self.episodes[i]
            if self.has_objects:
                objects.append(np.concatenate([e.extras[name][t] for name in self.object_arrays]))
            for c in self.cameras:
                images[c].append(e.images[c][t])
            joints.append(e.joint_positions[t])
            instructions.append(e.meta.instruction)
            steps = np.minimum(np.arange(t, t + self.horizon), self.last[i])
            actions.append(e.actions[steps])
            to_go = self.last[i] - t
            returns.append(self.gamma ** to_go if e.meta.success else 0.0)
        return ChunkBatch({c: np.stack(v) for c, v in images.items()}, np.stack(joints).astype(np.float32),
                          instructions, np.stack(actions).astype(np.float32), np.asarray(returns, np.float32),
                          np.stack(objects).astype(np.float32) if objects else None)

    def object_statistics(self) -> dict[str, np.ndarray]:
        """Mean/std of the object positions over the samples (the auxiliary loss's units)."""
        if not self.has_objects:
            missing = sorted({name for e in self.episodes for name in self.object_arrays if name not in e.extras})
            raise ValueError(f"{', '.join(self.dirs)}: not every episode records {', '.join(repr(n) for n in missing)} "
                             "(simulated demonstrations from `robot-rl collect` do)")
        rows = np.concatenate([np.concatenate([e.extras[name][samples] for name in self.object_arrays], axis=1)
                               for e, samples in zip(self.episodes, self.sample_rows)])
        return {"mean": rows.mean(0), "std": rows.std(0)}

    def statistics(self, action_target) -> dict[str, np.ndarray]:
        """Per-joint mean/std of the joints, and per chunk point mean/std of the network's target:
        ``action_target(chunks (T, H, J), joints (T, J)) -> (T, H, P)`` (``VLAModel.action_target``:
        absolute targets, offsets from the joints, or arm-frame moves)."""
        joints, targets = [], []
        for e, last, t in zip(self.episodes, self.last, self.sample_rows):
            steps = np.minimum(t[:, None] + np.arange(self.horizon)[None, :], last)
            joints.append(e.joint_positions[t])
            targets.append(np.asarray(action_target(e.actions[steps], e.joint_positions[t])))
        joints, targets = np.concatenate(joints), np.concatenate(targets)
        return {"joint_mean": joints.mean(0), "joint_std": joints.std(0),
                "action_mean": targets.mean(0), "action_std": targets.std(0)}

