"""A real twinedge water-quality node on a serial port (``--node-port``): the same checks the
emulated tests make, minus the fault knobs a real board does not have."""

from __future__ import annotations

import pytest

from gateway.readings import Quality
from gateway.sources import SourceContext
from hil_tests.firmware.collect import collecting

pytestmark = pytest.mark.hardware


async def test_real_node_announces_and_reports(node_port: str) -> None:
    ctx = SourceContext("wq-real", None)
    async with collecting(node_port, ctx) as c:
        await c.wait_for(lambda c: "firmware" in c.ctx.device_info, timeout=15)
        sensors = c.ctx.device_info["sensors"]
        assert sensors and all(s["unit"] for s in sensors.values())
        first = next(iter(sensors))
        await c.wait_for(lambda c: len(c.seqs(first)) >= 3, timeout=30)
        assert all(r.quality is not Quality.INVALID for r in c.readings)
        seqs = c.seqs(first)
        assert len(seqs) == len(set(seqs)) and ctx.counters.frames_bad == 0


async def test_real_node_takes_a_period_change(node_port: str) -> None:
    async with collecting(node_port) as c:
        await c.wait_for(lambda c: "sensors" in c.ctx.device_info, timeout=15)
        period = c.ctx.device_info["period_s"]
        await c.source.command("set-period", {"period": period * 2})
        await c.wait_for(lambda c: c.ctx.device_info["period_s"] == period * 2, timeout=15)
        await c.source.command("set-period", {"period": period})  # leave it as found
