"""The episode format (see docs/episode-format.md).

One directory per episode under a dataset directory::

    DATASET/
      <episode_id>/
        meta.json     what the episode is: task, instruction, seed, success, source, cameras,
                      image size, joint names, control rate, length, format version
        steps.npz     per-step arrays, T rows each:
                        image_<camera>    uint8 (T, H, W, 3) RGB frame seen at step t
                        joint_positions   float32 (T, J) measured joints at step t
                        action            float32 (T, J) joint targets commanded at step t
                        intervention      bool (T,) the command came from a human (teleop)
                        stamp             float64 (T,) observation time of step t (seconds)
                      optional per-step arrays, T rows each, e.g.
                        progress          float32 (T,) ground-truth task progress (simulation only)
                        object_positions  float32 (T, 3 x objects) ground-truth positions (simulation only)
                        object_positions_in_<camera>  the same in each camera's frame (simulation only)

An episode is written to ``<episode_id>.partial/`` and renamed into place only when complete, so a
reader never sees half an episode and a crash leaves the partial directory for inspection.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from robot_rl.data.npz import read_npz

FORMAT_VERSION = 1
RESERVED_ARRAYS = ("joint_positions", "action", "intervention", "stamp")
PARTIAL_SUFFIX = ".partial"


class EpisodeFormatError(ValueError):
    """An episode on disk does not follow the format; the message names the file and field."""


@dataclass
class EpisodeMeta:
    episode_id: str
    task: str
    instruction: str
    seed: int
    success: bool
    source: str  # "oracle", "scripted", "policy", "teleop", "mixed"
    cameras: list[str]
    image_height: int
    image_width: int
    joint_names: list[str]
    control_rate_hz: float
    length: int = 0
    format_version: int = FORMAT_VERSION
    created: float = field(default_factory=time.time)
    extra: dict = field(default_factory=dict)


# optional per-step array: the joint targets the arm was actually sent, where ``action`` is a label
EXECUTED_ARRAY = "executed_action"


@dataclass
class Episode:
    meta: EpisodeMeta
    images: dict[str, np.ndarray]
    joint_positions: np.ndarray
    actions: np.ndarray
    intervention: np.ndarray
    stamps: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # optional per-step arrays

    def __len__(self) -> int:
        return self.meta.length

    @property
    def success_step(self) -> int | None:
        """The first row after the action that completed the task (``meta.extra.success_step``, written by
        ``robot-rl collect``), or None where a successful episode does not say or the episode failed."""
        step = self.meta.extra.get("success_step") if self.meta.success else None
        if step is None:
            return None
        if not 1 <= int(step) <= len(self):
            raise EpisodeFormatError(f"episode {self.meta.episode_id}: extra.success_step {step} is outside "
                                     f"1..{len(self)} (its length)")
        return int(step)

    def executed_as_labelled(self) -> np.ndarray:
        """(T,) bool: the arm was sent row t's ``action``. False only where the episode records an
        ``executed_action`` that differs (``collect --behaviour dart``: the action is the oracle's label,
        the arm was sent it plus a perturbation). A chunk of labels from row t describes what the arm
        did only up to the first row that was not executed as labelled: after it, the states (and so
        the later labels) depend on a perturbation that the frames of row t cannot show."""
        executed = self.extras.get(EXECUTED_ARRAY)
        if executed is None:
            return np.ones(len(self), bool)
        return np.all(executed == self.actions, axis=1)


class EpisodeWriter:
    """Accumulates steps in memory and writes the episode atomically on :meth:`finish`."""

    def __init__(self, dataset_dir: str | Path, meta: EpisodeMeta):
        self.dir = Path(dataset_dir)
        self.meta = meta
        self.rows: dict[str, list] = {k: [] for k in ("joint_positions", "action", "intervention", "stamp")}
        self.frames: dict[str, list] = {c: [] for c in meta.cameras}
        self.extras: dict[str, list] = {}

    def add(self, images: dict[str, np.ndarray], joint_positions, action, stamp: float, intervention: bool = False,
            extras: dict[str, float | np.ndarray] | None = None) -> None:
        for cam in self.meta.cameras:
            frame = images[cam]
            if frame.shape != (self.meta.image_height, self.meta.image_width, 3) or frame.dtype != np.uint8:
                raise EpisodeFormatError(
                    f"episode {self.meta.episode_id}: camera '{cam}' frame is {frame.shape} {frame.dtype}, expected "
                    f"({self.meta.image_height}, {self.meta.image_width}, 3) uint8")
            self.frames[cam].append(frame)
        j = len(self.meta.joint_names)
        q, a = np.asarray(joint_positions, np.float32), np.asarray(action, np.float32)
        if q.shape != (j,) or a.shape != (j,):
            raise EpisodeFormatError(f"episode {self.meta.episode_id}: joints {q.shape} / action {a.shape}, expected ({j},)")
        self.rows["joint_positions"].append(q)
        self.rows["action"].append(a)
        self.rows["intervention"].append(bool(intervention))
        self.rows["stamp"].append(float(stamp))
        for name, value in (extras or {}).items():
            if name in RESERVED_ARRAYS or name.startswith("image_"):
                raise EpisodeFormatError(f"episode {self.meta.episode_id}: optional array '{name}' clashes with a required one")
            rows = self.extras.setdefault(name, [])
            if len(rows) != len(self.rows["stamp"]) - 1:
                raise EpisodeFormatError(f"episode {self.meta.episode_id}: optional array '{name}' must have a value at every step")
            rows.append(np.asarray(value, np.float32))

    def finish(self, success: bool) -> Path:
        self.meta.success = bool(success)
        self.meta.length = len(self.rows["stamp"])
        return _write(self.dir, self.meta, self.arrays())

    def arrays(self) -> dict[str, np.ndarray]:
        """The steps so far as the arrays of ``steps.npz``."""
        t, j = len(self.rows["stamp"]), len(self.meta.joint_names)
        arrays = {f"image_{c}": np.stack(f) if f else np.zeros((0, self.meta.image_height, self.meta.image_width, 3), np.uint8)
                  for c, f in self.frames.items()}
        arrays["joint_positions"] = np.stack(self.rows["joint_positions"]) if t else np.zeros((0, j), np.float32)
        arrays["action"] = np.stack(self.rows["action"]) if t else np.zeros((0, j), np.float32)
        arrays["intervention"] = np.asarray(self.rows["intervention"], dtype=bool)
        arrays["stamp"] = np.asarray(self.rows["stamp"], dtype=np.float64)
        for name, rows in self.extras.items():
            if len(rows) != t:
                raise EpisodeFormatError(f"episode {self.meta.episode_id}: optional array '{name}' has {len(rows)} rows, "
                                         f"the episode {t}")
            arrays[name] = np.stack(rows)
        return arrays

    def episode(self, success: bool) -> Episode:
        """The finished episode in memory (what :meth:`finish` would write)."""
        self.meta.success = bool(success)
        self.meta.length = len(self.rows["stamp"])
        return episode_from_arrays(self.meta, self.arrays())


def episode_from_arrays(meta: EpisodeMeta, arrays: dict[str, np.ndarray]) -> Episode:
    reserved = {f"image_{c}" for c in meta.cameras} | set(RESERVED_ARRAYS)
    return Episode(meta, {c: arrays[f"image_{c}"] for c in meta.cameras}, arrays["joint_positions"], arrays["action"],
                   arrays["intervention"], arrays["stamp"], {k: v for k, v in arrays.items() if k not in reserved})


def episode_arrays(episode: Episode) -> dict[str, np.ndarray]:
    arrays = {f"image_{c}": episode.images[c] for c in episode.meta.cameras}
    arrays.update(joint_positions=episode.joint_positions, action=episode.actions, intervention=episode.intervention,
                  stamp=episode.stamps)
    arrays.update(episode.extras)
    return arrays


def write_episode(dataset_dir: str | Path, episode: Episode) -> Path:
    """Write a whole episode atomically (``<id>.partial/`` then rename); FileExistsError if it is there."""
    return _write(Path(dataset_dir), episode.meta, episode_arrays(episode))


def _write(dataset_dir: Path, meta: EpisodeMeta, arrays: dict[str, np.ndarray]) -> Path:
    final = dataset_dir / meta.episode_id
    partial = dataset_dir / (meta.episode_id + PARTIAL_SUFFIX)
    if final.exists():
        raise FileExistsError(f"episode {final} already exists")
    if partial.exists():  # left by a crash or a full disk: this write replaces it
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        with open(partial / "steps.npz", "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        (partial / "meta.json").write_text(json.dumps(asdict(meta), indent=2))
        os.replace(partial, final)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)  # a full disk must not keep half an episode's bytes
        raise
    return final


def new_episode_id(task: str, seed: int) -> str:
    """Sorts in creation order (nanoseconds after the second), unique across machines (random tail)."""
    ns = time.time_ns()
    return f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(ns // 10**9))}.{ns % 10**9:09d}_{task}_s{seed}_{uuid.uuid4().hex[:6]}"


def list_episodes(dataset_dir: str | Path) -> list[Path]:
    """Complete episode directories, oldest first (partial ones are skipped)."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory {root} does not exist")
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.endswith(PARTIAL_SUFFIX)
                  and (p / "meta.json").is_file())


def read_meta(episode_dir: str | Path) -> EpisodeMeta:
    path = Path(episode_dir) / "meta.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EpisodeFormatError(f"{path}: cannot read episode metadata: {exc}") from exc
    if raw.get("format_version") != FORMAT_VERSION:
        raise EpisodeFormatError(f"{path}: format_version {raw.get('format_version')!r}, this reader knows {FORMAT_VERSION}")
    known = set(EpisodeMeta.__dataclass_fields__)
    missing = [k for k in known if k not in raw and k not in ("extra", "created")]
    if missing:
        raise EpisodeFormatError(f"{path}: missing fields {sorted(missing)}")
    return EpisodeMeta(**{k: v for k, v in raw.items() if k in known})


def read_episode(episode_dir: str | Path) -> Episode:
    meta = read_meta(episode_dir)
    path = Path(episode_dir) / "steps.npz"
    try:
        arrays = read_npz(path)
    except (OSError, ValueError) as exc:
        raise EpisodeFormatError(f"{path}: cannot read steps: {exc}") from exc
    expected = [f"image_{c}" for c in meta.cameras] + ["joint_positions", "action", "intervention", "stamp"]
    for key in expected:
        if key not in arrays:
            raise EpisodeFormatError(f"{path}: missing array '{key}' (has {sorted(arrays)})")
        if len(arrays[key]) != meta.length:
            raise EpisodeFormatError(f"{path}: array '{key}' has {len(arrays[key])} rows, meta.json says length {meta.length}")
    extras = {k: v for k, v in arrays.items() if k not in expected and not k.startswith("image_")}
    for key, value in extras.items():
        if len(value) != meta.length:
            raise EpisodeFormatError(f"{path}: optional array '{key}' has {len(value)} rows, meta.json says length {meta.length}")
    return Episode(meta, {c: arrays[f"image_{c}"] for c in meta.cameras}, arrays["joint_positions"],
                   arrays["action"], arrays["intervention"], arrays["stamp"], extras)


def remove_partials(dataset_dir: str | Path) -> list[Path]:
    """Delete leftovers of interrupted writes; returns what was removed."""
    removed = [p for p in Path(dataset_dir).glob("*" + PARTIAL_SUFFIX) if p.is_dir()]
    for p in removed:
        shutil.rmtree(p)
    return removed
