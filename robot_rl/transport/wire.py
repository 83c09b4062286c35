"""The wire format of every robot_rl ZeroMQ message: a msgpack header plus raw arrays. No pickle.

A message is a multipart ZeroMQ message::

    frame 0      msgpack map: {"v": PROTOCOL_VERSION, "kind": str, ..., "arrays": [{"name", "dtype", "shape"}, ...]}
    frame 1..n   the raw bytes of each array, C order, in the order of "arrays"

Decoding checks everything before any array is built: the header is a msgpack map, the protocol
version matches, the message is not larger than the limit, each dtype is on the allow-list, each shape
is a list of non-negative ints and each frame has exactly ``prod(shape) * itemsize`` bytes. Anything
else raises :class:`WireError` naming what is wrong; nothing in a message is ever executed.
"""

from __future__ import annotations

import math

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
ALLOWED_DTYPES = ("uint8", "int8", "uint16", "int16", "int32", "int64", "float16", "float32", "float64", "bool")


class WireError(ValueError):
    """A message that does not follow the wire format; the message says what is wrong."""


def encode(kind: str, header: dict | None = None, arrays: dict[str, np.ndarray] | None = None) -> list[bytes]:
    specs, frames = [], []
    for name, value in (arrays or {}).items():
        a = np.ascontiguousarray(value)
        if a.dtype.name not in ALLOWED_DTYPES:
            raise WireError(f"array '{name}' has dtype {a.dtype.name}, allowed: {', '.join(ALLOWED_DTYPES)}")
        specs.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape)})
        frames.append(a.tobytes())
    meta = {**(header or {}), "v": PROTOCOL_VERSION, "kind": kind, "arrays": specs}
    return [msgpack.packb(meta, use_bin_type=True), *frames]


def decode(frames: list[bytes], max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays) of a multipart message, or :class:`WireError`."""
    if not frames:
        raise WireError("empty message")
    total = sum(len(f) for f in frames)
    if total > max_bytes:
        raise WireError(f"message of {total} bytes exceeds the limit of {max_bytes} bytes")
    try:
        header = msgpack.unpackb(frames[0], raw=False, strict_map_key=True)
    except (ValueError, msgpack.exceptions.UnpackException) as exc:  # garbage, truncated, extra data
        raise WireError(f"header is not valid msgpack: {exc}") from exc
    if not isinstance(header, dict):
        raise WireError(f"header is a {type(header).__name__}, expected a map")
    if header.get("v") != PROTOCOL_VERSION:
        raise WireError(f"protocol version {header.get('v')!r}, this end speaks {PROTOCOL_VERSION}")
    if not isinstance(header.get("kind"), str):
        raise WireError("header has no 'kind' string")
    specs = header.get("arrays", [])
    if not isinstance(specs, list) or len(specs) != len(frames) - 1:
        raise WireError(f"header declares {len(specs) if isinstance(specs, list) else '?'} arrays, message has {len(frames) - 1}")
    arrays = {}
    for spec, raw in zip(specs, frames[1:]):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise WireError(f"array spec {spec!r} has no name")
        name, dtype, shape = spec["name"], spec.get("dtype"), spec.get("shape")
        if name in arrays:
            raise WireError(f"array '{name}' appears twice")
        if dtype not in ALLOWED_DTYPES:
            raise WireError(f"array '{name}' has dtype {dtype!r}, allowed: {', '.join(ALLOWED_DTYPES)}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise WireError(f"array '{name}' has shape {shape!r}, expected a list of non-negative ints")
        expected = math.prod(shape) * np.dtype(dtype).itemsize
        if len(raw) != expected:
            raise WireError(f"array '{name}' {dtype} {shape} needs {expected} bytes, the frame has {len(raw)}")
        arrays[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
    return header, arrays
