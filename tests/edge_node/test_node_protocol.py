"""The wire protocol against the shared vectors in edge_node/vectors.json (both interpreters)."""

import json

from node_helpers import raises

from edge_node import protocol as P

_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
VECTORS_PATH = _HERE + "/../../edge_node/vectors.json"


def _vectors():
    with open(VECTORS_PATH) as f:
        return json.load(f)


def test_crc_check_value():
    v = _vectors()["crc16"]
    assert P.crc16(bytes.fromhex(v["input"])) == v["crc"] == 0x29B1


def test_valid_vectors_encode_to_pinned_bytes():
    for v in _vectors()["valid"]:
        assert P.encode(v["message"]).hex() == v["frame"], v["name"]


def test_valid_vectors_decode_to_pinned_values():
    for v in _vectors()["valid"]:
        frame = bytes.fromhex(v["frame"])
        assert frame[0] == 0 and frame[-1] == 0 and 0 not in frame[1:-1], v["name"]
        assert P.decode(frame[1:-1]) == v["message"], v["name"]


def test_invalid_vectors_are_rejected_with_reason():
    for v in _vectors()["invalid"]:
        e = raises(P.ProtocolError, P.decode, bytes.fromhex(v["frame"])[1:-1])
        assert e.reason == v["reason"], (v["name"], e.reason)


def test_cobs_round_trip_with_long_zero_free_runs():
    for data in (b"", b"\x00", b"\x00\x00", bytes(range(1, 255)), bytes(300), b"\x01" * 600):
        enc = P.cobs_encode(data)
        assert 0 not in enc
        assert P.cobs_decode(enc) == data


def test_splitter_resynchronises_after_garbage():
    good = [P.encode(v["message"]) for v in _vectors()["valid"][:3]]
    stream = b"\xff\x13garbage" + good[0] + b"\x01\x02\x03" + good[1] + good[2]
    sp = P.FrameSplitter()
    frames = []
    for i in range(0, len(stream), 7):  # arrives in small pieces
        frames.extend(sp.feed(stream[i : i + 7]))
    decoded = []
    bad = 0
    for f in frames:
        try:
            decoded.append(P.decode(f))
        except P.ProtocolError:
            bad += 1
    assert [m["seq"] for m in decoded] == [0, 42, 4294967295]
    assert bad == 2  # the garbage before the first frame and the bytes between frames


def test_splitter_drops_oversized_runs_and_recovers():
    sp = P.FrameSplitter()
    frame = P.encode({"type": "ack", "node": "a", "seq": 0, "upto": 1, "got": 2})
    assert sp.feed(b"\x01" * 300) == []
    assert sp.feed(b"\x01" * 10 + frame) == [frame[1:-1]]
    assert sp.overflows == 1


def test_encoder_rejects_bad_messages():
    raises(P.ProtocolError, P.encode, {"type": "nope", "node": "a", "seq": 0})
    raises(P.ProtocolError, P.encode, {"type": "ack", "node": "a", "seq": -1})
    raises(P.ProtocolError, P.encode, {"type": "hello", "node": "x" * 25, "seq": 0})
    many = [["s%03d" % i, 1.0] for i in range(40)]
    raises(P.ProtocolError, P.encode, {"type": "readings", "node": "a", "seq": 1, "values": many})
    cmd = {"type": "command", "node": "a", "seq": 1, "command": "dance"}
    raises(P.ProtocolError, P.encode, cmd)


def test_float32_values_and_millisecond_time():
    msg = {"type": "readings", "node": "a", "seq": 3, "time": 1700000000.123, "values": []}
    msg["values"] = [["t", 21.3]]
    out = P.decode(P.encode(msg)[1:-1])
    assert abs(out["values"][0][1] - 21.3) < 1e-5
    assert abs(out["time"] - 1700000000.123) < 1e-6
