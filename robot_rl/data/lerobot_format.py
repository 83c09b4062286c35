"""Episodes to and from a LeRobotDataset (v3: parquet + video + metadata), with lerobot's own classes.

lerobot pins an older torch than robot_rl, so it lives in its own environment (``make lerobot-env``:
``.venv-lerobot``); this module runs there (``python -m robot_rl.data.lerobot_format export|import``)
and imports nothing of robot_rl but the episode format. ``robot-rl convert to-lerobot|from-lerobot``
in the main environment runs it there (see :func:`lerobot_python`).

How an episode maps onto the dataset (one LeRobot episode per episode, ``fps`` = control rate):

| episode                         | LeRobotDataset feature                                  |
| ------------------------------- | ------------------------------------------------------- |
| ``image_<cam>`` uint8 (T,H,W,3) | ``observation.images.<cam>``: video (AV1 by default) or PNG images |
| ``joint_positions`` (T,J)       | ``observation.state`` float32, ``names`` = joint names |
| ``action`` (T,J)                | ``action`` float32, ``names`` = joint names            |
| ``reward`` (optional)           | ``next.reward`` float32 (1,)                            |
| end of episode                  | ``next.done`` bool (1,), true on the last frame          |
| ``intervention``                | ``complementary_info.is_intervention`` bool (1,)        |
| ``stamp`` float64               | ``complementary_info.stamp`` float64 (1,) (LeRobot's own ``timestamp`` is frame_index / fps) |
| any other optional array        | ``complementary_info.<name>`` float32                    |
| ``instruction``                 | the frame's ``task``                                    |
| ``meta.json`` (id, success, source, seed, task, extra, ...) | ``meta/robot_rl_episodes.jsonl``, one line per episode index |

What the format cannot hold, and what the round trip therefore changes (docs/data-formats.md):
- video is lossy: with ``images="video"`` (LeRobot's default, AV1) frames come back close, not equal;
  ``images="png"`` stores lossless PNG images and the round trip is exact.
- ``fps`` is an integer in LeRobot: a control rate like 12.5 Hz is refused (the exact rate would
  otherwise be lost).
- episode-level fields have no place in LeRobot's episode table, so they travel in the side file
  above; LeRobot's tools ignore it, and a dataset imported without it gets ``success`` from
  ``next.success`` when present (else false), ``source`` ``lerobot``, ``seed`` -1.
- an optional array that only some of the exported episodes have is written as NaN for the others
  (features are per dataset) and dropped again on import.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from robot_rl.data.episodes import (Episode, EpisodeFormatError, EpisodeMeta, list_episodes, read_episode,
                                    write_episode)

SIDE_FILE = "meta/robot_rl_episodes.jsonl"
IMAGE_PREFIX = "observation.images."
INFO_PREFIX = "complementary_info."
STATE, ACTION, REWARD, DONE, SUCCESS = "observation.state", "action", "next.reward", "next.done", "next.success"
INTERVENTION, STAMP = INFO_PREFIX + "is_intervention", INFO_PREFIX + "stamp"


class LeRobotFormatError(ValueError):
    """A dataset or episode cannot be converted; the message names the file or feature."""


def lerobot_python(repo_root: Path | None = None) -> str | None:
    """The Python of an environment with lerobot: this one, ``$ROBOT_RL_LEROBOT_PYTHON`` or ``.venv-lerobot``."""
    import importlib.util

    if importlib.util.find_spec("lerobot") is not None:
        return sys.executable
    explicit = os.environ.get("ROBOT_RL_LEROBOT_PYTHON")
    if explicit:
        return explicit
    root = repo_root or Path(__file__).resolve().parents[2]
    candidate = root / ".venv-lerobot" / "bin" / "python"
    return str(candidate) if candidate.exists() else None


# -- export ----------------------------------------------------------------------------------------
def _features(episodes: list[Episode], images: str) -> dict:
    first = episodes[0].meta
    j = len(first.joint_names)
    features = {}
    for cam in first.cameras:
        features[IMAGE_PREFIX + cam] = {"dtype": "video" if images == "video" else "image",
                                        "shape": (first.image_height, first.image_width, 3),
                                        "names": ["height", "width", "channels"]}
    features[STATE] = {"dtype": "float32", "shape": (j,), "names": list(first.joint_names)}
    features[ACTION] = {"dtype": "float32", "shape": (j,), "names": list(first.joint_names)}
    features[DONE] = {"dtype": "bool", "shape": (1,), "names": None}
    features[INTERVENTION] = {"dtype": "bool", "shape": (1,), "names": None}
    features[STAMP] = {"dtype": "float64", "shape": (1,), "names": None}
    extras: dict[str, tuple] = {}
    for ep in episodes:
        for name, values in ep.extras.items():
            extras.setdefault(name, tuple(values.shape[1:]) or (1,))
    for name, shape in sorted(extras.items()):
        key = REWARD if name == "reward" else INFO_PREFIX + name
        features[key] = {"dtype": "float32", "shape": shape, "names": None}
    return features


def _check_same_layout(episodes: list[Episode], paths: list[Path]) -> None:
    first = episodes[0].meta
    for ep, path in zip(episodes, paths):
        m = ep.meta
        for field in ("cameras", "image_height", "image_width", "joint_names", "control_rate_hz"):
            if getattr(m, field) != getattr(first, field):
                raise LeRobotFormatError(f"{path}: {field} {getattr(m, field)!r} differs from the first episode's "
                                         f"{getattr(first, field)!r}; a LeRobotDataset has one layout (export them apart)")
    if float(first.control_rate_hz) != int(first.control_rate_hz):
        raise LeRobotFormatError(f"{paths[0]}: control_rate_hz {first.control_rate_hz} is not a whole number; "
                                 "LeRobotDataset fps is an integer")


def export_lerobot(dataset_dir: str | Path, root: str | Path, repo_id: str = "local/robot_rl",
                   images: str = "video", vcodec: str = "libsvtav1", log=print) -> dict:
    """Write every episode of ``dataset_dir`` as a new LeRobotDataset at ``root``."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    if images not in ("video", "png"):
        raise LeRobotFormatError(f"images={images!r}: expected 'video' or 'png'")
    root = Path(root)
    if root.exists():
        raise LeRobotFormatError(f"{root}: already exists (a LeRobotDataset is written to a new directory)")
    paths = list_episodes(dataset_dir)
    if not paths:
        raise LeRobotFormatError(f"{dataset_dir}: no episodes")
    episodes = [read_episode(p) for p in paths]
    _check_same_layout(episodes, paths)
    features = _features(episodes, images)
    first = episodes[0].meta
    partial = root.with_name(root.name + ".partial")  # renamed into place when whole, like an episode
    shutil.rmtree(partial, ignore_errors=True)
    ds = LeRobotDataset.create(repo_id, int(first.control_rate_hz), features, root=partial,
                               robot_type=str(first.extra.get("robot", "robot_rl")), use_videos=images == "video",
                               vcodec=vcodec)
    side = []
    try:
        for index, ep in enumerate(episodes):
            t = len(ep)
            for i in range(t):
                frame = {IMAGE_PREFIX + c: ep.images[c][i] for c in ep.meta.cameras}
                frame[STATE] = ep.joint_positions[i].astype(np.float32)
                frame[ACTION] = ep.actions[i].astype(np.float32)
                frame[DONE] = np.array([i == t - 1])
                frame[INTERVENTION] = np.array([bool(ep.intervention[i])])
                frame[STAMP] = np.array([ep.stamps[i]], np.float64)
                for key, spec in features.items():
                    name = "reward" if key == REWARD else key[len(INFO_PREFIX):] if key.startswith(INFO_PREFIX) else None
                    if name is None or key in (INTERVENTION, STAMP):
                        continue
                    values = ep.extras.get(name)
                    value = np.full(spec["shape"], np.nan, np.float32) if values is None else values[i]
                    frame[key] = np.asarray(value, np.float32).reshape(spec["shape"])
                frame["task"] = ep.meta.instruction or ep.meta.task or "unknown"
                ds.add_frame(frame)
            ds.save_episode()
            meta = dict(vars(ep.meta))
            side.append({"episode_index": index, **meta})
            log(f"episode {index}: {ep.meta.episode_id} ({t} frames)")
    finally:
        ds.finalize()
    (partial / SIDE_FILE).write_text("".join(json.dumps(line) + "\n" for line in side))
    os.replace(partial, root)
    return {"root": str(root), "episodes": len(episodes), "frames": int(sum(len(e) for e in episodes)),
            "features": sorted(features), "images": images}


# -- import ----------------------------------------------------------------------------------------
def _open(root: Path, repo_id: str):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    info = root / "meta" / "info.json"
    if not info.is_file():
        raise LeRobotFormatError(f"{root}: not a LeRobotDataset (no meta/info.json)")
    try:
        version = json.loads(info.read_text()).get("codebase_version")
    except json.JSONDecodeError as exc:
        raise LeRobotFormatError(f"{info}: not JSON: {exc}") from exc
    if version != "v3.0":
        raise LeRobotFormatError(f"{info}: codebase_version {version!r}; this reader takes v3.0 datasets "
                                 "(lerobot's convert_dataset_v21_to_v30 upgrades older ones)")
    try:
        return LeRobotDataset(repo_id, root=root, video_backend="pyav")
    except Exception as exc:  # parquet/arrow/video errors of a damaged dataset, with lerobot's reason
        raise LeRobotFormatError(f"{root}: lerobot cannot load the dataset: {type(exc).__name__}: {exc}") from exc


def _column(table, key: str, start: int, length: int) -> np.ndarray:
    """Rows start..start+length of a column as numpy, (T,) or (T, N), in the stored dtype."""
    import pyarrow as pa

    column = table.column(key).slice(start, length).combine_chunks()
    if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type):
        return column.flatten().to_numpy(zero_copy_only=False).reshape(length, -1)
    return column.to_numpy(zero_copy_only=False)


def import_lerobot(root: str | Path, out_dir: str | Path | None, repo_id: str = "local/robot_rl",
                   log=print) -> list[Episode]:
    """Every episode of the LeRobotDataset at ``root`` as an episode (written under ``out_dir`` if given)."""
    from lerobot.datasets.video_utils import decode_video_frames

    root = Path(root)
    ds = _open(root, repo_id)
    features = ds.meta.features
    for key in (STATE, ACTION):
        if key not in features:
            raise LeRobotFormatError(f"{root}: no feature '{key}' (features: {sorted(features)})")
    j = features[STATE]["shape"][0]
    if tuple(features[ACTION]["shape"]) != (j,):
        raise LeRobotFormatError(f"{root}: feature 'action' has shape {features[ACTION]['shape']}, episodes need joint "
                                 f"targets shaped like 'observation.state' ({j},)")
    names = features[STATE].get("names")
    if isinstance(names, dict):  # older datasets: {"motors": [...]}
        names = next(iter(names.values()))
    joint_names = list(names) if names and len(names) == j else [f"joint_{i}" for i in range(j)]
    cameras = [k[len(IMAGE_PREFIX):] for k, f in features.items() if k.startswith(IMAGE_PREFIX)
               and f["dtype"] in ("video", "image")]
    side = {}
    side_path = root / SIDE_FILE
    if side_path.is_file():
        for n, line in enumerate(side_path.read_text().splitlines()):
            try:
                record = json.loads(line)
                side[int(record.pop("episode_index"))] = record
            except (json.JSONDecodeError, KeyError, ValueError) as exc:
                raise LeRobotFormatError(f"{side_path}: line {n + 1}: {exc}") from exc
    scalars = [k for k, f in features.items() if f["dtype"] not in ("video", "image", "string")]
    table = ds.hf_dataset.data  # Arrow, as stored: the numpy formatter of `datasets` turns float64 into float32
    episodes = []
    for index in range(ds.meta.total_episodes):
        ep_meta = ds.meta.episodes[index]
        lo, hi = int(ep_meta["dataset_from_index"]), int(ep_meta["dataset_to_index"])
        t = hi - lo
        rows = {key: _column(table, key, lo, t) for key in scalars}
        timestamps = [float(x) for x in np.asarray(rows["timestamp"]).reshape(-1)]
        images = {}
        for cam in cameras:
            key = IMAGE_PREFIX + cam
            if features[key]["dtype"] == "video":
                start = ep_meta[f"videos/{key}/from_timestamp"]
                frames = decode_video_frames(root / ds.meta.get_video_file_path(index, key),
                                             [start + ts for ts in timestamps], ds.tolerance_s, "pyav")
            else:
                frames = np.stack([ds[lo + i][key] for i in range(t)])
            images[cam] = (np.asarray(frames, np.float32).transpose(0, 2, 3, 1) * 255.0).round().clip(0, 255).astype(np.uint8)
        stamps = np.asarray(rows[STAMP], np.float64).reshape(t) if STAMP in rows else np.asarray(timestamps, np.float64)
        intervention = (np.asarray(rows[INTERVENTION]).reshape(t).astype(bool) if INTERVENTION in rows
                        else np.zeros(t, bool))
        extras = {}
        for key in scalars:
            if key == REWARD:
                name = "reward"
            elif key.startswith(INFO_PREFIX) and key not in (INTERVENTION, STAMP):
                name = key[len(INFO_PREFIX):]
            else:
                continue
            values = np.asarray(rows[key], np.float32)
            values = values.reshape(t) if values.size == t else values.reshape(t, -1)
            if not np.isnan(values).all():  # NaN-filled: this episode did not have the array
                extras[name] = values
        record = side.get(index)
        task = ep_meta["tasks"][0] if len(ep_meta["tasks"]) else ""
        if record is not None:
            meta = EpisodeMeta(**{k: v for k, v in record.items() if k in EpisodeMeta.__dataclass_fields__})
        else:
            success = bool(np.asarray(rows[SUCCESS]).reshape(-1)[-1]) if SUCCESS in rows else False
            meta = EpisodeMeta(f"lerobot_{root.name}_{index:06d}", "", task, -1, success, "lerobot", cameras,
                               features[IMAGE_PREFIX + cameras[0]]["shape"][0] if cameras else 0,
                               features[IMAGE_PREFIX + cameras[0]]["shape"][1] if cameras else 0,
                               joint_names, float(ds.fps), extra={"lerobot_dataset": str(root), "episode_index": index})
        meta.length = t
        if meta.cameras != cameras or meta.length != t:
            raise LeRobotFormatError(f"{side_path}: episode {index} says cameras {meta.cameras}, the dataset has {cameras}")
        episode = Episode(meta, images, np.asarray(rows[STATE], np.float32).reshape(t, j),
                          np.asarray(rows[ACTION], np.float32).reshape(t, j), intervention, stamps, extras)
        if out_dir is not None:
            try:
                write_episode(out_dir, episode)
            except EpisodeFormatError as exc:
                raise LeRobotFormatError(f"{root}: episode {index}: {exc}") from exc
        episodes.append(episode)
        log(f"episode {index}: {meta.episode_id} ({t} frames)")
    return episodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robot_rl.data.lerobot_format",
                                     description="episodes <-> LeRobotDataset v3 (run in the lerobot environment)")
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export")
    e.add_argument("episodes")
    e.add_argument("--out", required=True)
    e.add_argument("--repo-id", default="local/robot_rl")
    e.add_argument("--images", default="video", choices=["video", "png"])
    e.add_argument("--vcodec", default="libsvtav1")
    i = sub.add_parser("import")
    i.add_argument("dataset")
    i.add_argument("--out", required=True)
    i.add_argument("--repo-id", default="local/robot_rl")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local datasets only: never reach for the hub
    log = lambda text: print(text, file=sys.stderr)  # noqa: E731 - stdout is the JSON summary
    try:
        if args.command == "export":
            summary = export_lerobot(args.episodes, args.out, args.repo_id, args.images, args.vcodec, log)
        else:
            episodes = import_lerobot(args.dataset, args.out, args.repo_id, log)
            summary = {"out": args.out, "episodes": [{"id": e.meta.episode_id, "steps": len(e)} for e in episodes]}
    except (LeRobotFormatError, EpisodeFormatError, FileNotFoundError, FileExistsError) as exc:
        print(f"robot-rl convert: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
