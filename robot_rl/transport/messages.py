"""The messages of the robot <-> learner protocol, on the wire format of ``wire.py``.

Robot -> learner (DEALER -> ROUTER, the episode port)::

    kind "episode"   header: episode_id, robot, meta (the episode's meta.json fields)
                     arrays: image_<camera>, joint_positions, action, intervention, stamp, and the
                             episode's optional per-step arrays (policy_version, reward, ...)
Learner -> robot (the reply on the same connection)::

    kind "ack"       header: episode_id, duplicate (bool): the learner holds it durably; the robot
                     removes it from its spool
    kind "reject"    header: episode_id (when it could be read), reason: the learner will never take
                     this message; the robot moves the episode aside (spool/rejected/), never deletes it

Learner -> robots (PUB -> SUB, the weights port)::

    kind "weights"   header: version, architecture (fingerprint of the model config), model_config,
                     created; arrays: safetensors (uint8, the safetensors file bytes of the state dict)

Every decoded message is checked against the episode format before anything is written: the
learner never stores an episode that ``data.episodes.read_episode`` would refuse.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict

import numpy as np

from robot_rl.data.episodes import FORMAT_VERSION, RESERVED_ARRAYS, Episode, EpisodeMeta, episode_arrays
from robot_rl.transport.wire import WireError, encode

#: episodes larger than this are refused by the learner (a 60 s episode at 10 Hz with two 96x128
#: cameras is about 22 MB; 640x480 at 30 Hz for a minute would be 3.3 GB and belongs downsampled)
MAX_EPISODE_BYTES = 512 * 1024 * 1024
MAX_WEIGHTS_BYTES = 2 * 1024 * 1024 * 1024


def encode_episode(episode: Episode, robot: str) -> list[bytes]:
    return encode("episode", {"episode_id": episode.meta.episode_id, "robot": robot, "meta": asdict(episode.meta)},
                  episode_arrays(episode))


def episode_from_message(header: dict, arrays: dict[str, np.ndarray]) -> Episode:
    """An :class:`Episode` from a decoded "episode" message, or :class:`WireError` saying what is wrong."""
    raw = header.get("meta")
    if not isinstance(raw, dict):
        raise WireError("episode message has no 'meta' map")
    known = set(EpisodeMeta.__dataclass_fields__)
    missing = sorted(k for k in known if k not in raw and k not in ("extra", "created"))
    if missing:
        raise WireError(f"episode meta lacks fields {missing}")
    try:
        meta = EpisodeMeta(**{k: v for k, v in raw.items() if k in known})
    except TypeError as exc:
        raise WireError(f"episode meta: {exc}") from exc
    eid = meta.episode_id
    if not isinstance(eid, str) or not eid or "/" in eid or eid.startswith(".") or len(eid) > 200:
        raise WireError(f"episode id {eid!r} is not a plain name")
    if header.get("episode_id") != eid:
        raise WireError(f"header episode_id {header.get('episode_id')!r} differs from meta's {eid!r}")
    if meta.format_version != FORMAT_VERSION:
        raise WireError(f"episode {eid}: format_version {meta.format_version!r}, this learner reads {FORMAT_VERSION}")
    if not isinstance(meta.cameras, list) or not all(isinstance(c, str) for c in meta.cameras):
        raise WireError(f"episode {eid}: cameras must be a list of names")
    t, j = meta.length, len(meta.joint_names)
    expected = {f"image_{c}": ((t, meta.image_height, meta.image_width, 3), "uint8") for c in meta.cameras}
    expected.update(joint_positions=((t, j), "float32"), action=((t, j), "float32"), intervention=((t,), "bool"),
                    stamp=((t,), "float64"))
    for name, (shape, dtype) in expected.items():
        a = arrays.get(name)
        if a is None:
            raise WireError(f"episode {eid}: missing array '{name}'")
        if tuple(a.shape) != shape or a.dtype.name != dtype:
            raise WireError(f"episode {eid}: array '{name}' is {a.dtype.name} {list(a.shape)}, expected {dtype} {list(shape)}")
    extras = {k: v for k, v in arrays.items() if k not in expected}
    for name, a in extras.items():
        if name.startswith("image_") or name in RESERVED_ARRAYS:
            raise WireError(f"episode {eid}: array '{name}' belongs to a camera not in meta.cameras")
        if len(a.shape) == 0 or a.shape[0] != t:
            raise WireError(f"episode {eid}: optional array '{name}' has {a.shape[0] if a.shape else 0} rows, the episode {t}")
    for name in ("joint_positions", "action", "stamp"):
        if not np.all(np.isfinite(arrays[name])):
            raise WireError(f"episode {eid}: array '{name}' has non-finite values")
    return Episode(meta, {c: arrays[f"image_{c}"] for c in meta.cameras}, arrays["joint_positions"], arrays["action"],
                   arrays["intervention"], arrays["stamp"], extras)


# VLA config fields added after models had been exported, with the value every earlier model had. A
# config without one (an older export's metadata) means that value, so an older export still takes
# the weights of a learner that writes the field. Kept equal to VLAConfig's defaults by a test; this
# module stays free of torch.
LATER_FIELDS = {"pooling": "mean", "keypoints": 32, "pretrained_stages": 3, "freeze_pretrained": False, "arm_geometry": {}}


def architecture_fingerprint(model_config: dict) -> str:
    """Two models with the same fingerprint have state dicts of the same names and shapes."""
    shape_fields = {k: v for k, v in {**LATER_FIELDS, **model_config}.items()
                    if k not in ("control_rate_hz", "init_log_std")}
    return hashlib.sha256(json.dumps(shape_fields, sort_keys=True).encode()).hexdigest()[:16]


def encode_weights(version: int, model_config: dict, safetensors_bytes: bytes) -> list[bytes]:
    return encode("weights", {"version": int(version), "architecture": architecture_fingerprint(model_config),
                              "model_config": model_config, "created": time.time()},
                  {"safetensors": np.frombuffer(safetensors_bytes, np.uint8)})


def weights_from_message(header: dict, arrays: dict[str, np.ndarray]) -> tuple[int, str, dict, bytes]:
    """(version, architecture, model_config, safetensors bytes), or :class:`WireError`."""
    if header.get("kind") != "weights":
        raise WireError(f"expected a 'weights' message, got '{header.get('kind')}'")
    version, arch, config = header.get("version"), header.get("architecture"), header.get("model_config")
    if not isinstance(version, int) or version < 0:
        raise WireError(f"weights version {version!r} is not a non-negative int")
    if not isinstance(config, dict) or not isinstance(arch, str):
        raise WireError("weights message lacks model_config or architecture")
    if architecture_fingerprint(config) != arch:
        raise WireError(f"weights v{version}: architecture {arch} does not match its own model_config")
    blob = arrays.get("safetensors")
    if blob is None or blob.dtype != np.uint8 or blob.ndim != 1:
        raise WireError(f"weights v{version}: no uint8 'safetensors' array")
    return version, arch, config, blob.tobytes()
