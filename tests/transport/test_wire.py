"""The wire format: round trip, and every kind of malformed message refused with a reason."""

import msgpack
import numpy as np
import pytest

from robot_rl.transport.wire import PROTOCOL_VERSION, WireError, decode, encode


def test_round_trip_keeps_dtype_shape_and_values():
    arrays = {"image": np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3), "x": np.array([1.5, -2.0], np.float32),
              "flags": np.array([True, False])}
    header, out = decode(encode("score", {"id": 7, "instruction": "pick"}, arrays))
    assert header["kind"] == "score" and header["id"] == 7 and header["v"] == PROTOCOL_VERSION
    for k, v in arrays.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape and (out[k] == v).all()


@pytest.mark.parametrize("frames, reason", [
    ([], "empty message"),
    ([b"\xc1garbage"], "not valid msgpack"),
    ([msgpack.packb([1, 2])], "expected a map"),
    ([msgpack.packb({"v": 99, "kind": "x", "arrays": []})], "protocol version 99"),
    ([msgpack.packb({"v": PROTOCOL_VERSION, "kind": "x", "arrays": [{"name": "a", "dtype": "object", "shape": [1]}]}), b"1"],
     "dtype 'object'"),
    ([msgpack.packb({"v": PROTOCOL_VERSION, "kind": "x", "arrays": [{"name": "a", "dtype": "float32", "shape": [4]}]}), b"12"],
     "needs 16 bytes"),
    ([msgpack.packb({"v": PROTOCOL_VERSION, "kind": "x", "arrays": [{"name": "a", "dtype": "uint8", "shape": [-1]}]}), b""],
     "non-negative"),
    ([msgpack.packb({"v": PROTOCOL_VERSION, "kind": "x", "arrays": []}), b"extra"], "declares 0 arrays"),
])
def test_malformed_messages_are_refused_with_a_reason(frames, reason):
    with pytest.raises(WireError, match=reason):
        decode(frames)


def test_size_limit():
    with pytest.raises(WireError, match="exceeds the limit"):
        decode(encode("x", {}, {"a": np.zeros(1000, np.uint8)}), max_bytes=500)
