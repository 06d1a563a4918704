"""The resend buffer and the flash config (both interpreters)."""

from node_helpers import raises

from edge_node.buffer import SendBuffer
from edge_node.config import Config, ConfigError, check


def test_buffer_bounded_drops_oldest_and_counts():
    b = SendBuffer(3)
    for seq in range(1, 6):
        b.add(seq, b"f%d" % seq, False)
    assert len(b) == 3 and b.dropped == 2 and b.oldest() == 3
    assert [s for s, _ in b.due(1000, 10)] == [3, 4, 5]


def test_buffer_keeps_a_heap_reserve_on_micropython():
    import gc

    b = SendBuffer(10, reserve=1 << 40)  # more free heap than any board has
    for seq in range(1, 4):
        b.add(seq, b"f%d" % seq, False)
    if hasattr(gc, "mem_free"):  # MicroPython: the heap bounds the buffer, the newest stays
        assert len(b) == 1 and b.dropped == 2 and b.oldest() == 3
    else:  # CPython: only the count does
        assert len(b) == 3 and b.dropped == 0


def test_buffer_ack_frees_upto_and_selected():
    b = SendBuffer(10)
    for seq in range(1, 8):
        b.add(seq, b"x", True)
    assert b.ack(3, 6) == 4
    assert b.due(0, 10) == [(4, b"x"), (5, b"x"), (7, b"x")]
    assert b.due(60000, 10) == []  # just sent: not due yet
    assert b.due(0, 2) == [(4, b"x"), (5, b"x")]
    b.add(8, b"y", False)
    assert b.due(60000, 10) == [(8, b"y")]  # never sent: due at once
    b.mark_sent(8)
    b.mark_sent(99)  # unknown (already acknowledged): ignored
    assert b.due(60000, 10) == []


def test_config_defaults_and_validation():
    c = Config(None, {"node_id": "wq-1"})
    assert c.get("node_id") == "wq-1" and c.period("ph") == 1.0
    c.set("period.ph", 5)
    assert c.period("ph") == 5.0 and c.period("temperature") == 1.0
    e = raises(ConfigError, c.set, "period_s", 0)
    assert e.key == "period_s"
    raises(ConfigError, c.set, "buffer_frames", 2.5)
    raises(ConfigError, c.set, "colour", "red")
    raises(ConfigError, check, "node_id", "")
    raises(ConfigError, check, "wdt_ms", True)


def _tmp(name):
    import os

    d = os.getenv("TMPDIR") or "/tmp"
    return "%s/twinedge-cfg-%s-%d.json" % (d, name, id(name))


def test_config_saved_and_loaded_from_flash():
    import os

    path = _tmp("save")
    try:
        c = Config(path, {"node_id": "wq-2"})
        c.set("period_s", 2.5)
        c2 = Config(path)
        assert c2.get("period_s") == 2.5 and c2.get("node_id") == "wq-2"
        assert c2.problems == []
    finally:
        os.remove(path)


def test_config_bad_file_falls_back_to_defaults_with_problems():
    import os

    path = _tmp("bad")
    try:
        with open(path, "w") as f:
            f.write('{"period_s": -1, "buffer_frames": 10, "colour": 1}')
        c = Config(path)
        assert c.get("period_s") == 1.0 and c.get("buffer_frames") == 10
        assert len(c.problems) == 2 and "period_s" in c.problems[0] + c.problems[1]
        with open(path, "w") as f:
            f.write("{not json")
        assert "not valid JSON" in Config(path).problems[0]
    finally:
        os.remove(path)
