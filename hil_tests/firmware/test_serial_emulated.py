"""The gateway's serial source against the emulated node (edge_node under CPython on a pty)."""

from __future__ import annotations

import math

import pytest

from gateway.errors import SourceError
from gateway.readings import Quality
from gateway.sources import SourceContext
from hil_tests.emulators.serial_node import SerialNode
from hil_tests.firmware.collect import Collector, collecting

FAST = {"period": 0.1, "resend_s": 0.3, "link_timeout_s": 1.0, "hello_s": 0.3}


def _unique(c: Collector, quantity: str = "temperature") -> bool:
    seqs = c.seqs(quantity)
    return len(seqs) == len(set(seqs))


async def test_announce_then_readings_with_units_and_device_info() -> None:
    async with SerialNode(seed=3, **FAST) as node, collecting(f"serial:{node.path}") as c:
        await c.wait_for(lambda c: len(c.seqs("ph")) >= 5)
        info = c.ctx.device_info
        assert info["node"] == "wq-0001" and info["firmware"] == "emulator-0.1.0"
        assert info["sensors"]["conductivity"] == {"unit": "G42", "period_s": 0.1}
        units = {r.quantity: r.unit for r in c.readings}
        assert units == {
            "temperature": "CEL",
            "ph": "C62",
            "conductivity": "G42",
            "dissolved_oxygen": "M1",
            "turbidity": "NTU",
            "orp": "2Z",
        }
        r = c.readings[-1]
        assert r.device == "wq-0001" and r.observed_at is not None
        assert abs(r.observed_at - r.received_at) < 2 and r.quality is Quality.GOOD
        assert c.ctx.counters.frames_bad == 0 and c.ctx.counters.frames_ok >= 5
        assert _unique(c)


async def test_line_noise_counted_and_lost_frames_resent() -> None:
    async with SerialNode(seed=4, **FAST) as node, collecting(f"serial:{node.path}") as c:
        await c.wait_for(lambda c: len(c.seqs("ph")) >= 3)
        node.garbage(200)
        node.bad_crc(3)
        node.truncate(2)
        node.garbage(10)
        await c.wait_for(lambda c: c.ctx.counters.frames_bad >= 5 and len(c.seqs("ph")) >= 25)
        seqs = sorted(c.seqs("ph"))
        # corrupted frames come back as resends: no hole in the sequence, nothing twice
        assert seqs == list(range(seqs[0], seqs[-1] + 1))
        assert c.ctx.counters.gaps == 0
        assert c.error is None


async def test_port_vanishes_and_returns_without_loss_or_double_count() -> None:
    ctx = SourceContext("asset-1", None)
    async with SerialNode(seed=5, buffer_frames=500, **FAST) as node:
        async with collecting(f"serial:{node.path}", ctx) as c:
            await c.wait_for(lambda c: len(c.seqs("orp")) >= 3)
            before = list(c.readings)
            await node.vanish()
            await c.wait_for(lambda c: c.error is not None)
            assert isinstance(c.error, SourceError)
        sent = node.uplink.seq
        await node.reappear()
        async with collecting(f"serial:{node.path}", ctx) as c2:
            await c2.wait_for(lambda c: max(c.seqs("orp"), default=0) >= sent + 3, timeout=15)
            seqs = sorted(r.seq for r in before + c2.readings if r.quantity == "orp")
            assert seqs == list(range(seqs[0], seqs[-1] + 1))  # nothing lost, nothing twice
            # the node hears the gateway again on the new port: a command reaches it
            await c2.source.command("identify", {"seconds": 2})
            assert node.identified[-1] == 2
        assert ctx.counters.gaps == 0 and node.uplink.buffer.dropped == 0


async def test_set_period_and_identify_commands_reach_the_node() -> None:
    async with SerialNode(seed=6, **FAST) as node, collecting(f"serial:{node.path}") as c:
        await c.wait_for(lambda c: "sensors" in c.ctx.device_info)
        await c.source.command("set-period", {"period": "2s", "sensor": "turbidity"})
        assert node.config.period("turbidity") == 2.0
        await c.wait_for(lambda c: c.ctx.device_info["sensors"]["turbidity"]["period_s"] == 2.0)
        await c.source.command("identify", {"seconds": 4})
        assert node.identified == [4]
        n, ph = len(c.seqs("turbidity")), len(c.seqs("ph"))
        await c.wait_for(lambda c: len(c.seqs("ph")) >= ph + 10)  # about one second at 0.1 s
        assert len(c.seqs("turbidity")) <= n + 1
        with pytest.raises(ValueError, match="no sensor"):
            await c.source.command("set-period", {"period": "1s", "sensor": "salinity"})


async def test_out_of_range_values_are_suspect_never_dropped() -> None:
    async with SerialNode(seed=7, **FAST) as node, collecting(f"serial:{node.path}") as c:
        await c.wait_for(lambda c: len(c.seqs("ph")) >= 1)
        node.node.sensors["ph"].read = lambda: 15.5
        node.node.sensors["temperature"].read = lambda: math.nan
        await c.wait_for(lambda c: any(r.value == 15.5 for r in c.readings))
        bad = [r for r in c.readings if r.quantity == "ph" and r.value == 15.5]
        assert bad[0].quality is Quality.SUSPECT
        await c.wait_for(lambda c: any(r.quality is Quality.INVALID for r in c.readings))
        assert c.ctx.counters.out_of_range >= 1


async def test_stuck_values_and_slow_writes_are_delivered_as_they_are() -> None:
    async with SerialNode(seed=8, **FAST) as node, collecting(f"serial:{node.path}") as c:
        await c.wait_for(lambda c: len(c.seqs("ph")) >= 2)
        node.stuck = True
        node.slow = 0.3
        n = len(c.readings)
        await c.wait_for(lambda c: len(c.seqs("ph")) >= 12)
        stuck = [r.value for r in c.readings[n:] if r.quantity == "conductivity"][2:]
        assert len(set(stuck)) == 1  # the node repeats itself; flagging that is the models' job
        assert c.ctx.counters.frames_bad == 0 and _unique(c, "ph")


async def test_a_gateway_that_missed_the_hello_asks_for_one() -> None:
    async with SerialNode(seed=9, **FAST) as node:
        async with collecting(f"serial:{node.path}") as c:
            await c.wait_for(lambda c: "firmware" in c.ctx.device_info)
        # a new source (a restarted gateway) while the node is still online: no hello is due
        async with collecting(f"serial:{node.path}") as c2:
            await c2.wait_for(lambda c: "firmware" in c.ctx.device_info and len(c.readings) > 0)
            assert c2.ctx.device_info["sensors"]["ph"]["unit"] == "C62"
