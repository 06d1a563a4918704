"""From a Modbus RTU sonde on a serial line, through open_source, to Readings; and every fault.

The sonde is pymodbus's own server behind a pty (hil_tests/emulators/modbus_sonde.py); the
gateway side is the real driver with pymodbus's async serial client on the tty path.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest

from gateway.errors import SourceError
from gateway.profiles import load_profile
from gateway.readings import Quality, Reading
from gateway.sources import Commandable, SourceContext, open_source, parse_spec
from gateway.sources.modbus import ModbusSource
from gateway.supervise import Backoff, supervise
from hil_tests.emulators.modbus_sonde import ModbusSonde

if TYPE_CHECKING:
    from hil_tests.modbus.conftest import Line

pytestmark = pytest.mark.hil

FAST = "period=50ms&timeout=150ms&retries=0&backoff_max=200ms"


async def wait_until(cond: Callable[[], bool], deadline: float = 5.0) -> None:
    """Wait for a condition on the device counters, failing after ``deadline`` seconds.

    Counters are plain integers the driver bumps without notifying anyone, so they are checked
    every 10 ms; the wait ends as soon as the condition holds.
    """
    async with asyncio.timeout(deadline):
        while not cond():  # noqa: ASYNC110 - nothing to await: counters carry no event
            await asyncio.sleep(0.01)


async def next_poll(
    queue: asyncio.Queue[Reading], size: int, deadline: float = 5.0
) -> list[Reading]:
    """The readings of one whole poll (``size`` quantities), skipping the rest of a partial one."""
    async with asyncio.timeout(deadline):
        first = await queue.get()
        batch = [first]
        while len(batch) < size:
            r = await queue.get()
            if r.seq != batch[0].seq:
                batch = [r]
            else:
                batch.append(r)
        return batch


@asynccontextmanager
async def consuming(spec: str, ctx: SourceContext) -> AsyncIterator[asyncio.Queue[Reading]]:
    """Open the source and pump its readings into a queue from a task, as the gateway does."""
    queue: asyncio.Queue[Reading] = asyncio.Queue()

    async def pump() -> None:
        async with open_source(spec, ctx) as src:
            async for reading in src:
                queue.put_nowait(reading)

    task = asyncio.create_task(pump(), name="modbus-test-pump")
    try:
        yield queue
        assert not task.done(), task.exception() if task.done() else None  # never crashed
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def drain(queue: asyncio.Queue[Reading]) -> None:
    while not queue.empty():
        queue.get_nowait()


def context(profile: str = "sonde-modbus") -> SourceContext:
    return SourceContext("river-1", load_profile(profile))


def expected_close(sonde: ModbusSonde, readings: list[Reading]) -> None:
    """Every reading is what the sonde served, within the resolution of its register."""
    regs = {r.quantity.name: r for r in sonde.registers}
    served = sonde.current() if sonde.stuck else sonde.values
    for r in readings:
        reg = regs[r.quantity]
        if reg.type == "float32":
            assert r.value == pytest.approx(served[r.quantity], rel=1e-6), r.quantity
        else:
            assert r.value == pytest.approx(served[r.quantity], abs=reg.quantity.scale / 2 + 1e-9)


async def test_readings_carry_values_units_and_quality(line: Line) -> None:
    ctx = context(line.profile)
    assert ctx.profile is not None
    quantities = ctx.profile.quantities
    async with open_source(line.spec("period=100ms&timeout=1s"), ctx) as src:
        assert isinstance(src, ModbusSource)
        polls: list[list[Reading]] = []
        async with asyncio.timeout(10):
            batch: list[Reading] = []
            async for r in src:
                batch.append(r)
                if len(batch) == len(quantities):
                    if line.sonde is not None:
                        expected_close(line.sonde, batch)  # before the next request is sent
                    polls.append(batch)
                    batch = []
                    if len(polls) == 3:
                        break
    for batch in polls:
        assert sorted(r.quantity for r in batch) == sorted(quantities)
        assert len({r.seq for r in batch}) == 1
        for r in batch:
            assert r.unit == quantities[r.quantity].unit
            assert r.asset == "river-1"
            assert r.device == f"modbus:{line.port}#{line.unit}"
            assert r.observed_at is None and r.received_at > 0  # a sonde has no clock
            assert r.quality in (Quality.GOOD, Quality.SUSPECT)
            if line.sonde is not None:
                assert r.quality is Quality.GOOD
    assert [b[0].seq for b in polls] == sorted({b[0].seq for b in polls})
    assert ctx.counters.frames_ok == 3 and ctx.counters.frames_bad == 0
    assert ctx.device_info["device_id"] == line.unit


async def test_out_of_range_values_are_suspect_and_counted(sonde: ModbusSonde) -> None:
    sonde.overrides = {"ph": 14.6, "turbidity": -3.0}
    ctx = context()
    async with consuming(f"modbus:{sonde.port_path}?{FAST}", ctx) as queue:
        batch = {r.quantity: r for r in await next_poll(queue, 6)}
    assert batch["ph"].quality is Quality.SUSPECT and batch["ph"].value == pytest.approx(14.6)
    assert batch["turbidity"].quality is Quality.SUSPECT and batch["turbidity"].value == -3.0
    assert batch["temperature"].quality is Quality.GOOD
    assert ctx.counters.out_of_range >= 2 and ctx.counters.out_of_range % 2 == 0


@pytest.mark.parametrize("knob", ["garbage", "bad_crc", "delay"])
async def test_line_faults_are_counted_and_never_give_wrong_values(
    sonde: ModbusSonde, knob: str
) -> None:
    sonde.stuck = True  # known values: whatever arrives must be exactly these
    sonde.current()
    ctx = context()
    async with consuming(f"modbus:{sonde.port_path}?{FAST}", ctx) as queue:
        expected_close(sonde, await next_poll(queue, 6))
        setattr(sonde, knob, {"garbage": 7, "bad_crc": True, "delay": 0.4}[knob])
        bad_before = ctx.counters.frames_bad
        await wait_until(lambda: ctx.counters.frames_bad >= bad_before + 3)
        during = [queue.get_nowait() for _ in range(queue.qsize())]
        expected_close(sonde, during)  # late or partial replies never turn into wrong numbers
        setattr(sonde, knob, {"garbage": 0, "bad_crc": False, "delay": 0.0}[knob])
        ok_before = ctx.counters.frames_ok
        await wait_until(lambda: ctx.counters.frames_ok >= ok_before + 2)
        drain(queue)
        expected_close(sonde, await next_poll(queue, 6))


async def test_stuck_values_pass_through_unchanged(sonde: ModbusSonde) -> None:
    ctx = context()
    async with consuming(f"modbus:{sonde.port_path}?{FAST}", ctx) as queue:
        await next_poll(queue, 6)
        sonde.stuck = True
        drain(queue)
        polls = [await next_poll(queue, 6) for _ in range(3)]
        values = [[(r.quantity, r.value) for r in p] for p in polls]
        assert values[0] == values[1] == values[2]
        sonde.stuck = False
        drain(queue)
        await next_poll(queue, 6)
        moving = [(r.quantity, r.value) for r in await next_poll(queue, 6)]
        assert moving != values[0]


async def test_a_silent_sonde_is_polled_less_often(sonde: ModbusSonde) -> None:
    sonde.bad_crc = True  # every reply is thrown away: to the gateway the sonde is silent
    ctx = context()
    spec = f"modbus:{sonde.port_path}?period=50ms&timeout=100ms&retries=0&backoff_max=800ms"
    async with consuming(spec, ctx):
        await wait_until(lambda: ctx.counters.frames_bad >= 5, deadline=10)
    gaps = [b - a for a, b in itertools.pairwise(sonde.request_times)]
    # first retry after about a period and the timeout; once backed off, a whole backoff_max
    assert gaps[0] < 0.5
    assert gaps[-1] >= 0.75


async def test_vanish_raises_source_error_and_reopen_fails_while_gone(sonde: ModbusSonde) -> None:
    ctx = context()
    spec = f"modbus:{sonde.port_path}?{FAST}"
    async with open_source(spec, ctx) as src:
        it = aiter(src)
        await anext(it)
        sonde.vanish()
        with pytest.raises(SourceError, match="serial line lost"):
            async with asyncio.timeout(5):
                while True:
                    await anext(it)
    with pytest.raises(SourceError, match="serial port not found"):
        async with open_source(spec, ctx):
            pass


async def test_hot_plug_under_the_supervisor(sonde: ModbusSonde) -> None:
    ctx = context()
    queue: asyncio.Queue[Reading] = asyncio.Queue()
    spec = parse_spec(f"modbus:{sonde.port_path}?{FAST}")
    task = asyncio.create_task(supervise(spec, ctx, queue, backoff=Backoff(0.05, 0.2)))
    try:
        await next_poll(queue, 6)
        sonde.vanish()
        await wait_until(lambda: ctx.counters.reconnects >= 2)  # tried again while unplugged
        drain(queue)
        plugged_at = time.time()
        sonde.reappear()
        batch = await next_poll(queue, 6)
        assert batch[0].received_at >= plugged_at
        expected_close(sonde, batch)
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_line_settings_the_port_refuses_are_a_source_error(sonde: ModbusSonde) -> None:
    """A pty cannot carry parity, as some USB adapters cannot: a SourceError, not a crash."""
    with pytest.raises(SourceError, match="cannot open serial port"):
        async with open_source(f"modbus:{sonde.port_path}?parity=E", context()):
            pass


async def test_a_stalled_consumer_does_not_cause_a_burst_of_polls(sonde: ModbusSonde) -> None:
    ctx = context()
    async with open_source(f"modbus:{sonde.port_path}?period=50ms&timeout=500ms", ctx) as src:
        it = aiter(src)
        for _ in range(6):
            await anext(it)
        await asyncio.sleep(0.5)  # the stimulus: the gateway is busy for ten periods
        stalled_at = time.monotonic()
        async with asyncio.timeout(5):
            for _ in range(3 * 6):
                await anext(it)
    after = [t for t in sonde.request_times if t >= stalled_at]
    assert len(after) >= 2
    # one catch-up poll at once, then the period again rather than ten polls back to back
    assert min(b - a for a, b in itertools.pairwise(after[1:])) >= 0.04


async def test_set_period_from_the_downlink_changes_the_poll_rate(sonde: ModbusSonde) -> None:
    ctx = context()
    async with open_source(f"modbus:{sonde.port_path}?period=50ms&timeout=500ms", ctx) as src:
        assert isinstance(src, Commandable)
        it = aiter(src)
        for _ in range(6):
            await anext(it)
        await src.command("set_period", {"period": "400ms"})
        with pytest.raises(ValueError, match="unknown command 'dim'"):
            await src.command("dim", {"level": 3})
        with pytest.raises(ValueError, match="period"):
            await src.command("set_period", {"period": "never"})
        changed_at = time.monotonic()
        async with asyncio.timeout(5):
            for _ in range(3 * 6):
                await anext(it)
    after = [t for t in sonde.request_times if t >= changed_at]
    assert min(b - a for a, b in itertools.pairwise(after)) >= 0.35
