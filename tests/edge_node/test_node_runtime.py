"""The node runtime end to end over an in-memory line (both interpreters)."""

import asyncio

from node_helpers import MemoryLine

from edge_node import protocol as P
from edge_node.config import Config
from edge_node.node import Node, Sensor
from edge_node.uplink import SerialUplink


class Counter:
    def __init__(self):
        self.n = 0

    def read(self):
        self.n += 1
        return self.n


class FlakySensor:
    def __init__(self):
        self.fail = True

    def read(self):
        if self.fail:
            raise OSError("I2C timeout")
        return 7.0


def _node(line, **cfg):
    defaults = {"node_id": "t-1", "period_s": 0.05, "resend_s": 0.3, "link_timeout_s": 1.0}
    defaults["hello_s"] = 0.5
    for k in cfg:
        defaults[k] = cfg[k]
    config = Config(None, defaults)
    sensors = [Sensor("a", "C62", Counter().read), Sensor("b", "CEL", lambda: 21.5)]
    return Node(config, sensors, SerialUplink(line, config), "9.9.9", clock=None)


async def _with_node(node, body):
    task = asyncio.create_task(node.run())
    try:
        await body()
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


async def test_hello_then_readings_then_acks():
    line = MemoryLine()
    node = _node(line)

    async def body():
        hello = await line.next("hello")
        assert hello["node"] == "t-1" and hello["firmware"] == "9.9.9"
        assert hello["sensors"] == [["a", "C62", 50], ["b", "CEL", 50]]
        line.send({"type": "ack", "node": "t-1", "seq": 0, "upto": 0, "got": 0})
        r = await line.next("readings")
        names = [v[0] for v in r["values"]]
        assert "a" in names or "b" in names
        line.send({"type": "ack", "node": "t-1", "seq": 0, "upto": r["seq"], "got": r["seq"]})
        r2 = await line.next("readings", where=lambda m: m["seq"] > r["seq"])
        assert r2["time"] is None

    await _with_node(node, body)
    assert node.uplink.stats["acks"] >= 2


async def test_gateway_away_buffers_then_resends_everything():
    line = MemoryLine()
    node = _node(line, buffer_frames=500)
    up = node.uplink

    async def body():
        await line.next("hello")
        line.send({"type": "ack", "node": "t-1", "seq": 0, "upto": 0, "got": 0})
        first = await line.next("readings")
        line.cut = True  # the gateway goes away; the node learns it from missing acks
        while up.online() or up.seq < first["seq"] + 30:
            await asyncio.sleep(0.05)
        line.cut = False
        await line.next("hello")
        line.send({"type": "ack", "node": "t-1", "seq": 0, "upto": first["seq"], "got": 0})
        seen = set()
        last = up.seq
        while not all(s in seen for s in range(first["seq"] + 1, last + 1)):
            m = await line.next("readings")
            seen.add(m["seq"])
            line.send({"type": "ack", "node": "t-1", "seq": 0, "upto": 0, "got": m["seq"]})
        assert up.buffer.dropped == 0

    await _with_node(node, body)


async def test_set_period_command_is_acked_and_takes_effect():
    line = MemoryLine()
    node = _node(line)

    async def body():
        await line.next("hello")
        cmd = {"type": "command", "node": "t-1", "seq": 77, "command": "set-period"}
        cmd["sensor"] = "b"
        cmd["period_ms"] = 2000
        line.send(cmd)
        ack = await line.next("ack", where=lambda m: m["got"] == 77)
        assert ack["upto"] == 0
        hello = await line.next("hello", where=lambda m: m["sensors"][1][2] == 2000)
        assert hello["sensors"][0][2] == 50
        bad = {"type": "command", "node": "t-1", "seq": 78, "command": "set-period"}
        bad["sensor"] = "zz"
        bad["period_ms"] = 10
        line.send(bad)
        err = await line.next("error", where=lambda m: m["ref"] == 78)
        assert err["code"] == P.E_BAD_VALUE and "zz" in err["text"]

    await _with_node(node, body)
    assert node.config.period("b") == 2.0
    samples_b = node.sensors["b"].samples
    assert samples_b <= 3  # one before and one right after the change, none since


async def test_sensor_fault_reported_once_and_others_keep_sampling():
    line = MemoryLine()
    flaky = FlakySensor()
    config = Config(None, {"node_id": "t-2", "period_s": 0.05})
    sensors = [Sensor("ph", "C62", flaky.read), Sensor("t", "CEL", lambda: 3.0)]
    node = Node(config, sensors, SerialUplink(line, config), "1.0")

    async def body():
        err = await line.next("error")
        assert err["code"] == P.E_SENSOR and "I2C timeout" in err["text"]
        line.send({"type": "ack", "node": "t-2", "seq": 0, "upto": 0, "got": 0})
        r = await line.next("readings")
        assert [v[0] for v in r["values"]] == ["t"]
        while node.sensors["ph"].errors < 3:
            await asyncio.sleep(0.05)
        flaky.fail = False
        while node.sensors["ph"].samples < 1:
            await asyncio.sleep(0.05)

    await _with_node(node, body)
    assert node.sensors["t"].samples >= 3
    errors = []
    while True:  # exactly one error report for the whole failure streak
        try:
            errors.append(await line.next("error", timeout=0.01))
        except asyncio.TimeoutError:
            break
    assert errors == []


async def test_identify_and_reboot_call_the_hardware_hooks():
    line = MemoryLine()
    calls = []

    async def blink(seconds):
        calls.append(("identify", seconds))

    config = Config(None, {"node_id": "t-3", "period_s": 1})
    node = Node(config, [Sensor("a", "C62", lambda: 1)], SerialUplink(line, config), "1.0")
    node.identify_hook = blink
    node.reset_hook = lambda: calls.append(("reset",))

    async def body():
        await line.next("hello")
        line.send({"type": "command", "node": "t-3", "seq": 5, "command": "identify", "seconds": 3})
        await line.next("ack", where=lambda m: m["got"] == 5)
        line.send({"type": "command", "node": "t-3", "seq": 6, "command": "reboot"})
        await line.next("ack", where=lambda m: m["got"] == 6)
        line.send({"type": "command", "node": "other", "seq": 7, "command": "reboot"})
        while ("reset",) not in calls:
            await asyncio.sleep(0.05)

    await _with_node(node, body)
    assert calls == [("identify", 3), ("reset",)]
