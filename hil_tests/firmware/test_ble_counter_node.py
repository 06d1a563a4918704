"""The pedestrian-counter firmware on the real MicroPython unix port, its radio bridged to bumble:
the gateway's real ``ble-adv`` source hears through bleak what the firmware broadcasts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from edge_node import ble_payload as bp
from gateway.profiles import load_profile
from gateway.readings import Quality
from gateway.sources import SourceContext
from hil_tests.emulators.ble import BleRadio
from hil_tests.firmware.blenode import Advert, MicroPythonBleNode
from hil_tests.firmware.collect import Collector, collecting
from hil_tests.firmware.mpnode import MICROPYTHON, adc_raw

pytestmark = pytest.mark.skipif(not MICROPYTHON.exists(), reason="micropython not installed")

NODE = "counter-0042"
FAST = {"node_id": NODE, "period_s": 0.2}
BEAM_A, BEAM_B = 18, 19  # the HIL board's beam pins (shim/run_ble_app.py)
HW = {"adc": {"34": adc_raw(80.7, 166.7, -250.0)}}  # the gauge reads 80.7 %: 81 on air (rounded)


@pytest.fixture
async def radio() -> AsyncIterator[BleRadio]:
    async with BleRadio() as r:
        yield r


def decoded(adv: Advert) -> tuple[int, int, int, int, int, int | None, int]:
    return bp.decode_counter(bp.manufacturer_data(adv.data)[bp.COMPANY_ID])


def total(c: Collector, quantity: str) -> float:
    return sum(r.value for r in c.readings if r.quantity == quantity)


def ctx(radio: BleRadio) -> SourceContext:
    return SourceContext(NODE, load_profile("counter-ble-adv"), options=dict(radio.options))


async def test_firmware_adverts_reach_the_gateway_as_readings(radio: BleRadio) -> None:
    async with MicroPythonBleNode(radio, config=FAST, hw=HW) as node:
        async with collecting(f"ble-adv:{NODE}", ctx(radio)) as c:
            await c.wait_for(lambda c: len(c.seqs("count_in")) >= 3)
        first = decoded(node.adverts[0])
        assert first[0] == 42 and first[1:5] == (first[1], 0, 0, 0)  # announced: seq 0, no one yet
        latest = {r.quantity: r for r in c.readings}
        assert latest["battery"].value == 81 and latest["battery"].unit == "P1"
        assert latest["count_in"].unit == "IE" and latest["count_in"].quality is Quality.GOOD
        assert total(c, "count_in") == 0 and total(c, "count_out") == 0
        assert {r.device for r in c.readings} == {NODE}
        assert c.ctx.device_info["battery"] == 81 and not c.ctx.device_info["tamper"]
        assert c.ctx.counters.frames_bad == 0
        # every advert the gateway heard is one the firmware made, at the firmware's interval
        heard = {r.seq for r in c.readings}
        made = {decoded(a)[2]: a for a in node.adverts}
        assert heard <= set(made)
        assert {a.interval_us for a in node.adverts} == {1_000_000}
        assert not any(a.connectable for a in node.adverts)  # no GATT service to connect to
        await node.wait_heap(2)
        boot = int(next(o for o in node.output if o.startswith("heap boot")).split("=")[1])
        print(f"counter node heap: boot {boot}, live {max(node.heap_live)}, peak {node.heap_peak}")
        assert max(node.heap_live) < 64 * 1024  # it runs in a 64 KB heap, shims included


async def test_beam_interrupts_change_the_counts_the_gateway_reports(radio: BleRadio) -> None:
    async with MicroPythonBleNode(radio, config=FAST, hw=HW) as node:
        async with collecting(f"ble-adv:{NODE}", ctx(radio)) as c:
            await c.wait_for(lambda c: len(c.seqs("count_in")) >= 1)  # baseline heard
            for _ in range(3):  # three people walk in: beam A, then beam B
                await node.pulse(BEAM_A)
                await node.pulse(BEAM_B)
            for _ in range(2):  # two walk out: B then A
                await node.pulse(BEAM_B)
                await node.pulse(BEAM_A)
            await c.wait_for(lambda c: total(c, "count_in") >= 3 and total(c, "count_out") >= 2)
            await node.pulse(BEAM_A)  # someone steps into beam A and turns back: nobody crossed
            await node.pulse(BEAM_A)
            seq = decoded(node.adverts[-1])[2]
            adv = await node.wait_advert(lambda a: decoded(a)[2] > seq)  # sampled since
            await c.wait_for(lambda c: max(c.seqs("count_in")) >= decoded(adv)[2])
        assert (total(c, "count_in"), total(c, "count_out")) == (3, 2)
        assert decoded(node.adverts[-1])[3:5] == (3, 2)  # cumulative totals in the firmware
        assert c.ctx.counters.frames_bad == 0


async def test_every_firmware_advert_fits_the_legacy_limit(radio: BleRadio) -> None:
    async with MicroPythonBleNode(radio, config=FAST, hw=HW) as node:
        await node.wait_advert(lambda a: decoded(a)[2] >= 5)
        for _ in range(20):
            await node.pulse(BEAM_A)
            await node.pulse(BEAM_B)
        await node.wait_advert(lambda a: decoded(a)[3] == 20)
    assert node.adverts and all(len(a.data) <= bp.LEGACY_ADV_MAX for a in node.adverts)
    assert {len(a.data) for a in node.adverts} == {23}
    assert all(bp.parse_ad(a.data)[0] == (bp.AD_FLAGS, b"\x06") for a in node.adverts)


async def test_idle_counter_node_cpu_is_low(radio: BleRadio) -> None:
    async with MicroPythonBleNode(radio, config={"node_id": NODE}, hw=HW) as node:
        await node.wait_advert(lambda a: decoded(a)[2] >= 1)
        loop = asyncio.get_running_loop()
        cpu0, t0 = node.cpu_seconds(), loop.time()
        seq0 = decoded(node.adverts[-1])[2]
        await node.wait_advert(lambda a: decoded(a)[2] >= seq0 + 5, timeout=15)
        used, window = node.cpu_seconds() - cpu0, loop.time() - t0
        cpu = used / window
        print(f"idle MicroPython counter node: {used:.2f} s CPU in {window:.1f} s ({cpu:.2%})")
        assert cpu < 0.05, f"idle counter node used {cpu:.0%} of a core"
