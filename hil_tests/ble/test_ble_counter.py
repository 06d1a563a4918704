"""Pedestrian counters in BLE adverts: emulated broadcasters -> bleak -> ``ble-adv`` -> Readings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from gateway.profiles import load_profile
from gateway.readings import Quality, Reading
from gateway.sources import Source, SourceContext, open_source
from gateway.sources.ble_adv import ScannerHub
from hil_tests.ble.conftest import Hardware
from hil_tests.ble.helpers import collect
from hil_tests.emulators.ble import BleRadio, EmulatedCounter

PROFILE = load_profile("counter-ble-adv")
UNITS = {"count_in": "IE", "count_out": "IE", "battery": "P1", "rssi": "2N"}


def ctx_for(options: dict[str, object], asset: str) -> SourceContext:
    return SourceContext(asset=asset, profile=PROFILE, options=dict(options))


def counts(readings: list[Reading], quantity: str = "count_in") -> list[float]:
    return [r.value for r in readings if r.quantity == quantity]


def n_counts(n: int, quantity: str = "count_in"):  # type: ignore[no-untyped-def]
    return lambda rs: len(counts(rs, quantity)) >= n


def people_in(counter: EmulatedCounter, seq0: int, seq1: int, boot: int = 1) -> int:
    """People the emulated device counted in between two of its adverts (same boot)."""
    return (counter.totals[(boot, seq1)][0] - counter.totals[(boot, seq0)][0]) & 0xFFFF


@asynccontextmanager
async def counter_source(
    radio: BleRadio, counter: EmulatedCounter
) -> AsyncIterator[tuple[Source, SourceContext, int]]:
    """An open ble-adv source for ``counter`` and the sequence number of the first advert heard
    (the baseline: it carries battery and rssi, and counts are reported from there on)."""
    ctx = ctx_for(radio.options, counter.name)
    async with open_source(f"ble-adv:{counter.name}", ctx) as src:
        first = await collect(src, lambda rs: True)
        assert first[0].quantity in ("battery", "rssi")
        yield src, ctx, first[0].seq


async def test_counters_share_one_scanner_and_strangers_are_ignored(
    radio: BleRadio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="twinedge")
    phone = await radio.add_phone()
    stranger = await radio.add_counter(99, period=0.1)  # another site's counter
    c7 = await radio.add_counter(7, period=0.1, busyness=3000)
    c8 = await radio.add_counter(8, period=0.1, busyness=3000)
    async with AsyncExitStack() as stack:
        s7, ctx7, _ = await stack.enter_async_context(counter_source(radio, c7))
        s8, _, _ = await stack.enter_async_context(counter_source(radio, c8))
        hub = ScannerHub._hubs[(radio.scanner_backend, 0xFFFF)]
        assert hub.users == 2 and radio.central._scan_users == 1  # one scan serves both
        got7 = await collect(s7, n_counts(5))
        got8 = await collect(s8, n_counts(5))
    assert {r.asset for r in got7} == {"counter-0007"} and {r.asset for r in got8} == {
        "counter-0008"
    }
    for r in got7 + got8:
        assert r.unit == UNITS[r.quantity] and r.device.startswith("counter-000")
    assert ctx7.device_info["battery"] == c7.battery and ctx7.device_info["rssi"] == -50
    assert counts(got7, "rssi")[0] == -50
    assert hub.ignored > 0 and not ScannerHub._hubs  # hub gone with its last source
    assert radio.central._scan_users == 0
    for addr in (str(phone.random_address).split("/")[0], stranger.address):
        assert not [r for r in caplog.records if addr in r.getMessage()]
        assert addr not in hub.known and addr not in str(ctx7.device_info)


async def test_counts_are_conserved_across_gaps_and_duplicates(radio: BleRadio) -> None:
    counter = await radio.add_counter(7, period=0.1, busyness=3000)
    async with counter_source(radio, counter) as (src, ctx, base):
        got = await collect(src, n_counts(3))
        counter.skip = 3
        got += await collect(src, lambda rs: ctx.counters.gaps >= 3 and len(counts(rs)) >= 3)
        got += await collect(src, n_counts(2))
    assert ctx.counters.gaps == 3
    assert ctx.counters.duplicates > 0  # every advert arrives as ADV and SCAN_RSP, repeated
    last = [r.seq for r in got if r.quantity == "count_in"][-1]
    # every person the device counted after the baseline reached a reading, gaps or not
    assert sum(counts(got)) == people_in(counter, base, last) > 0


async def test_garbage_and_short_adverts_are_counted(radio: BleRadio) -> None:
    counter = await radio.add_counter(7, period=0.1)
    async with counter_source(radio, counter) as (src, ctx, _):
        counter.garbage = 2
        await collect(src, lambda rs: ctx.counters.frames_bad >= 2)
        counter.short = 2
        await collect(src, lambda rs: ctx.counters.frames_bad >= 4)
        ok = ctx.counters.frames_ok
        await collect(src, lambda rs: ctx.counters.frames_ok > ok + 2)  # and it carries on


async def test_implausible_count_is_suspect(radio: BleRadio) -> None:
    counter = await radio.add_counter(7, period=0.1)
    async with counter_source(radio, counter) as (src, ctx, _):
        counter.bad_values = 1
        got = await collect(src, lambda rs: any(r.quality is Quality.SUSPECT for r in rs))
    bad = [r for r in got if r.quality is Quality.SUSPECT]
    assert len(bad) == 1 and bad[0].quantity == "count_in" and bad[0].value >= 5000
    assert ctx.counters.out_of_range == 1


async def test_stuck_counter_repeats_are_duplicates(radio: BleRadio) -> None:
    counter = await radio.add_counter(7, period=0.1)
    async with counter_source(radio, counter) as (src, ctx, _):
        await collect(src, n_counts(1))
        counter.stuck = True
        stuck_at, dups = counter.seq, ctx.counters.duplicates
        await counter.wait_updates(5)
        assert counter.seq == stuck_at and ctx.counters.duplicates >= dups + 5
        counter.stuck = False
        await collect(src, lambda rs: ctx.device_info["advert"]["seq"] > stuck_at)


async def test_reboot_and_vanish(radio: BleRadio) -> None:
    counter = await radio.add_counter(7, period=0.1, busyness=3000)
    async with counter_source(radio, counter) as (src, ctx, _):
        await collect(src, n_counts(2))
        gaps, dups = ctx.counters.gaps, ctx.counters.duplicates
        counter.reboot()
        await collect(src, lambda rs: ctx.device_info["advert"]["boot"] == 2)
        await collect(src, n_counts(3))
        # the restarted sequence is neither a huge gap nor a run of "old" duplicates
        assert ctx.counters.gaps == gaps and ctx.counters.duplicates < dups + 20
        counter.vanish()
        gone_at = counter.seq
        await counter.wait_updates(3)
        counter.reappear()
        await collect(src, lambda rs: ctx.device_info["advert"]["seq"] > gone_at + 3)
    assert ctx.counters.gaps >= 3  # adverts sent while out of range


@pytest.mark.hardware
async def test_real_counter(hardware: Hardware) -> None:
    if not hardware.counter:
        pytest.skip("no --ble-counter given")
    ctx = ctx_for(hardware.options, hardware.counter)
    async with open_source(f"ble-adv:{hardware.counter}", ctx) as src:
        got = await collect(src, n_counts(2), within=60)
    assert {r.unit for r in got} <= set(UNITS.values())
