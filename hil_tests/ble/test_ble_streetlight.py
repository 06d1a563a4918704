"""Streetlight on BLE GATT: emulated peripheral -> bleak's API -> ``ble`` source -> Readings."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.errors import FrameError, SourceError
from gateway.profiles import load_profile
from gateway.readings import Quality, Reading
from gateway.sources import SourceContext, open_source, parse_spec
from gateway.supervise import Backoff, supervise
from hil_tests.ble.conftest import Hardware
from hil_tests.ble.helpers import collect
from hil_tests.emulators.ble import BleRadio

PROFILE = load_profile("streetlight-ble")
UNITS = {"power_state": "C62", "dim_level": "P1", "power": "WTT", "voltage": "VLT",
         "current": "AMP", "lamp_fault": "C62"}  # fmt: skip


def ctx_for(options: dict[str, object], asset: str = "light-01") -> SourceContext:
    return SourceContext(asset=asset, profile=PROFILE, options=dict(options))


def all_quantities(readings: list[Reading]) -> bool:
    return {r.quantity for r in readings} >= set(UNITS)


def dimmed_power_seen(readings: list[Reading]) -> bool:
    """A power reading after the first dim_level reading of 40 (the same notified sample)."""
    dim_at = [i for i, r in enumerate(readings) if r.quantity == "dim_level" and r.value == 40]
    return bool(dim_at) and any(r.quantity == "power" for r in readings[dim_at[0] :])


async def test_readings_with_units_and_commands(radio: BleRadio) -> None:
    light = await radio.add_streetlight("light-01", period=0.2)
    ctx = ctx_for(radio.options)
    async with open_source(f"ble:{light.address}", ctx) as src:
        got = await collect(src, all_quantities)
        for r in got:
            assert r.unit == UNITS[r.quantity] and r.asset == "light-01"
            assert r.quality is Quality.GOOD, r
        volts = [r.value for r in got if r.quantity == "voltage"]
        assert all(200 < v < 250 for v in volts)
        assert ctx.counters.frames_ok >= 6 and ctx.counters.frames_bad == 0
        assert ctx.device_info["address"] == light.address

        await src.command("power", {"on": True})
        await src.command("dim", {"level": 40})
        assert light.writes == [("power_state", 1), ("dim_level", 40)]
        later = await collect(src, dimmed_power_seen)
        power = [r.value for r in later if r.quantity == "power"][-1]
        assert 15 < power < 40  # a 60 W lamp at 40 % draws about 25 W
        with pytest.raises(FrameError, match="level"):
            await src.command("dim", {"level": 140})
        with pytest.raises(FrameError, match="unknown command"):
            await src.command("reboot", {})
        assert light.writes[-1] == ("dim_level", 40)  # bad commands never reach the device


async def test_connect_by_name(radio: BleRadio) -> None:
    await radio.add_streetlight("light-07", period=0.2)
    await radio.add_streetlight("light-08", period=0.2)
    ctx = ctx_for(radio.options, "light-08")
    async with open_source("ble:name=light-08?timeout=3s", ctx) as src:
        await collect(src, all_quantities)
    assert ctx.device_info["address"] == radio.streetlights["light-08"].address


async def test_absent_device_is_a_source_error(radio: BleRadio) -> None:
    ctx = ctx_for(radio.options)
    with pytest.raises(SourceError, match="connect failed"):
        async with open_source("ble:C1:00:00:00:00:99?timeout=0.3s", ctx):
            pass
    with pytest.raises(SourceError, match="not advertising"):
        async with open_source("ble:name=nobody?timeout=0.3s", ctx):
            pass


async def test_vanish_and_reappear_reconnects_within_two_intervals() -> None:
    async with BleRadio(adv_interval_ms=200.0) as radio:  # room for a loaded test machine
        await _vanish_and_reappear(radio)


async def _vanish_and_reappear(radio: BleRadio) -> None:
    light = await radio.add_streetlight("light-01", period=0.1)
    ctx = ctx_for(radio.options)
    queue: asyncio.Queue[Reading] = asyncio.Queue()
    spec = parse_spec(f"ble:{light.address}?timeout=30s")
    closed = asyncio.Event()

    def on_open(source: object) -> None:
        if source is None:
            closed.set()

    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(
            supervise(spec, ctx, queue, on_open=on_open, backoff=Backoff(0.01, 0.05))
        )
        await asyncio.wait_for(queue.get(), 5)
        light.vanish()
        await asyncio.wait_for(closed.wait(), 5)  # the source saw the vanish and closed
        while not queue.empty():
            queue.get_nowait()
        t0 = time.monotonic()
        light.reappear()
        await asyncio.wait_for(queue.get(), 5)
        took = time.monotonic() - t0
        task.cancel()
    assert ctx.counters.reconnects == 1
    interval = radio.adv_interval_ms / 1000
    assert took < 2 * interval, f"reconnect took {took * 1000:.0f} ms"


async def test_peripheral_disconnect_raises_and_reopens(radio: BleRadio) -> None:
    light = await radio.add_streetlight("light-01", period=0.1)
    ctx = ctx_for(radio.options)
    with pytest.raises(SourceError, match="disconnected"):
        async with open_source(f"ble:{light.address}", ctx) as src:
            await collect(src, all_quantities)
            light.disconnect()
            await collect(src, lambda rs: False, within=5)
    async with open_source(f"ble:{light.address}", ctx) as src:
        await collect(src, all_quantities)


async def test_garbage_values_are_counted_not_fatal(radio: BleRadio) -> None:
    light = await radio.add_streetlight("light-01", period=0.1)
    ctx = ctx_for(radio.options)
    async with open_source(f"ble:{light.address}", ctx) as src:
        await collect(src, all_quantities)
        light.garbage = 5
        await collect(src, lambda rs: ctx.counters.frames_bad == 5 and len(rs) > 6)
        after = await collect(src, all_quantities)
    assert all(r.quality is Quality.GOOD for r in after)


async def test_out_of_range_value_is_suspect_not_dropped(radio: BleRadio) -> None:
    light = await radio.add_streetlight("light-01", period=0.1)
    ctx = ctx_for(radio.options)
    async with open_source(f"ble:{light.address}", ctx) as src:
        await collect(src, all_quantities)
        light.bad_values = 1
        got = await collect(src, lambda rs: any(r.quality is Quality.SUSPECT for r in rs))
    bad = [r for r in got if r.quality is Quality.SUSPECT]
    assert [(r.quantity, r.value) for r in bad] == [("voltage", pytest.approx(655.35))]
    assert ctx.counters.out_of_range == 1


async def test_stuck_values_keep_flowing_unchanged(radio: BleRadio) -> None:
    light = await radio.add_streetlight("light-01", period=0.1)
    ctx = ctx_for(radio.options)
    async with open_source(f"ble:{light.address}", ctx) as src:
        await collect(src, all_quantities)
        light.stuck = True
        await collect(src, lambda rs: len(rs) >= 6)  # drain values sampled before the knob
        got = await collect(src, lambda rs: len(rs) >= 18)
    volts = {r.value for r in got if r.quantity == "voltage"}
    assert len(volts) == 1  # the device repeats itself; the twin's stuck check sees it as is


async def test_slow_gatt_answers(radio: BleRadio) -> None:
    light = await radio.add_streetlight("light-01", period=0.2)
    ctx = ctx_for(radio.options)
    spec = f"ble:{light.address}?gatt_timeout=0.5s"
    async with open_source(spec, ctx) as src:
        light.slow = 0.1
        await src.command("dim", {"level": 70})  # slow but in time
        assert light.writes[-1] == ("dim_level", 70)
        light.slow = 2.0
        with pytest.raises(SourceError, match="no answer"):
            await src.command("dim", {"level": 30})
    with pytest.raises(SourceError, match="no answer"):
        async with open_source(spec, ctx):  # the initial reads time out too
            pass
    light.slow = 0.0
    async with open_source(spec, ctx) as src:
        await collect(src, all_quantities)


@pytest.mark.hardware
async def test_real_streetlight(hardware: Hardware) -> None:
    if not hardware.streetlight:
        pytest.skip("no --ble-streetlight given")
    ctx = ctx_for(hardware.options)
    async with open_source(f"ble:{hardware.streetlight}?timeout=20s", ctx) as src:
        got = await collect(src, all_quantities, within=30)
        assert {r.unit for r in got} <= set(UNITS.values())
