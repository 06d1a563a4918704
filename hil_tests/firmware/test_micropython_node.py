"""The water-quality firmware on the real MicroPython unix port (64 KB heap) against the gateway's
serial source: announce, readings, gateway away and back (briefly, and for longer than the heap
can buffer), commands, line noise, idle CPU."""

from __future__ import annotations

import asyncio

import pytest

from gateway.readings import Quality
from gateway.sources import SourceContext
from hil_tests.firmware.collect import Collector, collecting
from hil_tests.firmware.mpnode import MICROPYTHON, MicroPythonNode, adc_raw

pytestmark = pytest.mark.skipif(not MICROPYTHON.exists(), reason="micropython not installed")

FAST = {"node_id": "wq-hil", "period_s": 0.2, "resend_s": 0.5, "link_timeout_s": 1.5}
FAST["hello_s"] = 0.3
#: probe values the "hardware" shows, and the ADC/I2C counts that produce them
VALUES = {"ph": 7.0, "conductivity": 450.0, "dissolved_oxygen": 8.5, "turbidity": 12.0}
VALUES["orp"] = 250.0
HW = {
    "adc": {
        "34": adc_raw(7.0, -5.70, 21.34),
        "35": adc_raw(450.0, 1000.0, 0.0),
        "32": adc_raw(8.5, 6.06, 0.0),
        "33": adc_raw(12.0, 303.0, 0.0),
        "36": adc_raw(250.0, 606.0, -1000.0),
    },
    "i2c": {"72:0": 2240},  # 2240 * 7.8125 m°C = 17.5 °C
}
# one ADC count is 3.3 V / 65535 times the probe's scale
TOLERANCE = {"ph": 0.01, "conductivity": 0.1, "dissolved_oxygen": 0.01, "turbidity": 0.05}
TOLERANCE["orp"] = 0.1


def contiguous(c: Collector, quantity: str) -> bool:
    seqs = sorted(c.seqs(quantity))
    return seqs == list(range(seqs[0], seqs[-1] + 1))


async def test_announce_then_readings_from_the_adc_and_i2c_probes() -> None:
    async with MicroPythonNode(config=FAST, hw=HW) as node:
        async with collecting(f"serial:{node.path}") as c:
            await c.wait_for(lambda c: len(c.seqs("orp")) >= 5)
            info = c.ctx.device_info
            assert info["node"] == "wq-hil" and info["firmware"] == "water-quality/0.1.0"
            assert set(info["sensors"]) == {"temperature", *VALUES}
            latest = {r.quantity: r for r in c.readings}
            assert latest["temperature"].value == pytest.approx(17.5, abs=1e-4)
            for q, v in VALUES.items():
                assert latest[q].value == pytest.approx(v, abs=TOLERANCE[q]), q
                assert latest[q].quality is Quality.GOOD
            assert latest["ph"].observed_at is not None  # the HIL board has a clock
            assert c.ctx.counters.frames_bad == 0 and c.ctx.counters.duplicates == 0
        assert node.proc is not None and node.proc.returncode is None
        await asyncio.wait_for(_heap_reported(node), 10)
        assert 0 < max(node.heap_live) < 64 * 1024


async def _heap_reported(node: MicroPythonNode) -> None:
    while len(node.heap_live) < 2:
        node.changed.clear()
        await node.changed.wait()


async def test_gateway_away_node_buffers_then_resends_without_loss_or_double_count() -> None:
    ctx = SourceContext("wq-asset", None)
    async with MicroPythonNode(config=FAST, hw=HW) as node:
        async with collecting(f"serial:{node.path}", ctx) as c:
            await c.wait_for(lambda c: len(c.seqs("ph")) >= 3)
            first = list(c.readings)
        node.cut = True  # the gateway is gone: nobody acks, the node must notice and buffer
        async with collecting(f"serial:{node.path}", ctx) as c2:
            await asyncio.sleep(0)  # the source is open but hears nothing while the line is cut
            assert c2.readings == []
        # node keeps sampling for a while with nobody listening
        mark = max(r.seq for r in first)
        node.cut = False
        async with collecting(f"serial:{node.path}", ctx) as c3:
            await c3.wait_for(lambda c: max(c.seqs("ph"), default=0) >= mark + 15, timeout=20)
            await c3.wait_for(lambda c: contiguous_all(first + c.readings, "ph"), timeout=10)
            seqs = [r.seq for r in first + c3.readings if r.quantity == "ph"]
            assert len(seqs) == len(set(seqs))  # never the same reading twice
        assert ctx.counters.gaps == 0


async def test_long_outage_fills_the_heap_budget_and_the_node_keeps_running() -> None:
    """The gateway away for longer than the 64 KB heap can buffer: the node drops its oldest
    frames instead of running out of memory, keeps the newest and carries on."""
    ctx = SourceContext("wq-asset", None)
    async with MicroPythonNode(config=FAST, hw=HW) as node:
        async with collecting(f"serial:{node.path}", ctx) as c:
            await c.wait_for(lambda c: len(c.seqs("ph")) >= 3)
            mark = max(c.seqs("ph"))
        node.cut = True
        reports = len(node.heap_live)
        await asyncio.wait_for(_heap_reports(node, reports + 8), 30)  # ~8 s: 40 frames
        node.cut = False
        async with collecting(f"serial:{node.path}", ctx) as c2:
            await c2.wait_for(lambda c: max(c.seqs("ph"), default=0) >= mark + 60, timeout=30)
        assert node.proc is not None and node.proc.returncode is None, node.output[-5:]
        seqs = set(c2.seqs("ph"))
        missing = set(range(mark + 1, mark + 60)) - seqs
        assert missing, "a 64 KB heap cannot hold 40 frames on this port: some must be dropped"
        assert max(missing) < max(seqs)
        print(f"outage: {len(missing)} of 40+ frames dropped, heap live max {max(node.heap_live)}")
        assert len(missing) < 40  # it kept what fitted, and resent it
        assert max(node.heap_live) < 64 * 1024


async def _heap_reports(node: MicroPythonNode, n: int) -> None:
    while len(node.heap_live) < n:
        node.changed.clear()
        await node.changed.wait()


def contiguous_all(readings: list, quantity: str) -> bool:  # type: ignore[type-arg]
    seqs = sorted(r.seq for r in readings if r.quantity == quantity)
    return seqs == list(range(seqs[0], seqs[-1] + 1))


async def test_set_period_command_takes_effect_and_is_stored_on_flash() -> None:
    async with MicroPythonNode(config=FAST, hw=HW) as node, collecting(str(node)) as c:
        await c.wait_for(lambda c: "sensors" in c.ctx.device_info)
        await c.source.command("set-period", {"period": "3s", "sensor": "orp"})
        await c.wait_for(lambda c: c.ctx.device_info["sensors"]["orp"]["period_s"] == 3.0)
        assert node.stored_config()["period.orp"] == 3.0
        orp, ph = len(c.seqs("orp")), len(c.seqs("ph"))
        await c.wait_for(lambda c: len(c.seqs("ph")) >= ph + 10)  # about 2 s at 0.2 s
        assert len(c.seqs("orp")) <= orp + 1
        await c.source.command("identify", {"seconds": 1})
        await asyncio.wait_for(_event(node, "pin 2 1"), 5)


async def _event(node: MicroPythonNode, text: str) -> None:
    while text not in node.events():  # noqa: ASYNC110 - the shim appends to a file: poll it
        await asyncio.sleep(0.05)


async def test_line_noise_is_survived_and_corrupted_frames_come_back() -> None:
    async with MicroPythonNode(config=FAST, hw=HW) as node, collecting(str(node)) as c:
        await c.wait_for(lambda c: len(c.seqs("ph")) >= 3)
        for seed in range(5):
            node.noise(40, seed)
            n = len(c.seqs("ph"))
            await c.wait_for(lambda c, n=n: len(c.seqs("ph")) > n)
        await c.wait_for(lambda c: c.ctx.counters.frames_bad >= 3)
        await c.wait_for(lambda c: contiguous(c, "ph") and len(c.seqs("ph")) >= 15)
        assert c.error is None and c.ctx.counters.gaps == 0


async def test_idle_node_cpu_is_low_because_the_uart_reader_polls_its_fd() -> None:
    config = dict(FAST, period_s=1.0)
    async with MicroPythonNode(config=config, hw=HW) as node, collecting(str(node)) as c:
        await c.wait_for(lambda c: len(c.seqs("ph")) >= 1)
        cpu0, t0 = node.cpu_seconds(), asyncio.get_running_loop().time()
        await c.wait_for(lambda c: len(c.seqs("ph")) >= 4)
        cpu = (node.cpu_seconds() - cpu0) / (asyncio.get_running_loop().time() - t0)
        assert cpu < 0.10, f"idle node used {cpu:.0%} of a core"
