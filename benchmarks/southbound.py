"""Southbound benchmark: many devices into one gateway process; prints JSON figures.

    .venv/bin/python benchmarks/southbound.py --duration 30          # the issue's mix
    .venv/bin/python benchmarks/southbound.py --counters 0 --lights 0 --nodes 0 --sondes 20

The mix of issue 3: 200 BLE advertising pedestrian counters at 1 Hz, 10 BLE streetlights
notifying all six values at 1 Hz, and 20 serial/Modbus water-quality probes at 1 Hz (by
default 10 twinedge serial nodes and 10 Modbus sondes). Every device runs as
the gateway runs it: its driver (``open_source``) under :func:`gateway.supervise.supervise`,
feeding one bounded queue that a consumer drains.

Where the emulators run, and how gateway CPU is measured:

- The Modbus sondes run in a child process (``hil_tests.emulators.modbus_sonde --control``)
  behind real ptys, so their cost is not in this process.
- The serial nodes (the edge_node framework itself, on ptys) and the BLE peripherals run in
  this process; see the baseline below.
- bumble's LocalLink cannot cross processes, so the process CPU is measured twice: first
  with only the emulators running (baseline), then with the gateway's sources added;
  ``cpu_pct_of_one_core.gateway`` is the difference. The emulated central's HCI work (BlueZ
  and the kernel on a real gateway) is counted as gateway work.

Readings lost: Modbus — readings of failed polls, plus polls that fell behind schedule;
serial nodes — frames missing by sequence number after the node's resends (``gaps``);
streetlights — notifications sent minus readings received; counters — adverts missed by
sequence number (counts are cumulative, so people are not lost with a missed advert).
Reconnect: after each family's device vanishes and the gateway has noticed, the time from its
reappearance to its next reading.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.profiles import load_profile
from gateway.readings import Reading
from gateway.sources import SourceContext, parse_spec
from gateway.supervise import Backoff, supervise


@dataclass
class Device:
    family: str  # modbus, serial, light, counter
    asset: str
    spec: str
    ctx: SourceContext
    emulator: Any = None  # the emulated node or peripheral, or the sonde's index (Modbus)


@dataclass
class Tally:
    """Readings per asset, and a wake-up for whoever waits for an asset's next reading."""

    readings: Counter[str] = field(default_factory=Counter)
    by_family: Counter[str] = field(default_factory=Counter)
    last: dict[str, float] = field(default_factory=dict)
    waiters: dict[str, asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))
    family_of: dict[str, str] = field(default_factory=dict)

    def add(self, r: Reading) -> None:
        self.readings[r.asset] += 1
        self.by_family[self.family_of[r.asset]] += 1
        self.last[r.asset] = r.received_at
        self.waiters[r.asset].set()

    async def next_reading(self, asset: str, after: float) -> float:
        while self.last.get(asset, 0.0) < after:
            event = self.waiters[asset]
            event.clear()
            await event.wait()
        return self.last[asset]


class ModbusLine:
    """The child process serving the sondes, driven through its stdin."""

    def __init__(self, proc: asyncio.subprocess.Process, ports: list[str]) -> None:
        self.proc, self.ports = proc, ports

    async def command(self, verb: str, index: int) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{verb} {index}\n".encode())
        await self.proc.stdin.drain()
        reply = json.loads(await self.proc.stdout.readline())
        if reply.get("done") != verb:
            raise RuntimeError(f"sonde emulator: {reply}")


@contextlib.asynccontextmanager
async def modbus_line(count: int) -> AsyncIterator[ModbusLine]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hil_tests.emulators.modbus_sonde",
        "--count",
        str(count),
        "--control",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        async with asyncio.timeout(60):
            ports = json.loads(await proc.stdout.readline())["ports"]
        yield ModbusLine(proc, ports)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # EOF: the emulator stops and removes its links
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def ble_radio(args: argparse.Namespace) -> AsyncIterator[Any]:
    if not (args.counters or args.lights):
        yield None
        return
    from hil_tests.emulators.ble import BleRadio

    async with BleRadio(adv_interval_ms=args.adv_interval_ms, seed=1) as radio:
        for n in range(1, args.lights + 1):
            await radio.add_streetlight(f"light-{n:02d}", period=1.0)
        for n in range(1, args.counters + 1):
            await radio.add_counter(n, period=1.0)
        yield radio


@contextlib.asynccontextmanager
async def serial_nodes(count: int) -> AsyncIterator[list[Any]]:
    """twinedge water-quality nodes (the edge_node framework under CPython) on ptys."""
    if not count:
        yield []
        return
    from hil_tests.emulators.serial_node import SerialNode

    async with contextlib.AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                SerialNode("water-quality", f"wq-{n:04d}", seed=n, period=1.0)
            )
            for n in range(1, count + 1)
        ]
        yield nodes


def devices(line: ModbusLine | None, nodes: list[Any], radio: Any) -> list[Device]:
    out = []
    if nodes:
        profile = load_profile("twinedge-water-node")
        for n, node in enumerate(nodes, start=1):
            asset = f"wq-{n:04d}"  # the node's id, as serial_nodes() named it
            ctx = SourceContext(asset, profile)
            out.append(Device("serial", asset, f"serial:{node.path}", ctx, node))
    if line is not None:
        profile = load_profile("sonde-modbus")
        for i, port in enumerate(line.ports):
            asset = f"sonde-{i + 1:02d}"
            spec = f"modbus:{port}?period=1s&timeout=300ms&retries=1&backoff_max=2s"
            out.append(Device("modbus", asset, spec, SourceContext(asset, profile), i))
    if radio is not None:
        lights, counters = load_profile("streetlight-ble"), load_profile("counter-ble-adv")
        for light in radio.streetlights.values():
            ctx = SourceContext(light.name, lights, options=dict(radio.options))
            out.append(Device("light", light.name, f"ble:{light.address}", ctx, light))
        for c in radio.counters.values():
            ctx = SourceContext(c.name, counters, options=dict(radio.options))
            out.append(Device("counter", c.name, f"ble-adv:{c.name}", ctx, c))
    return out


def cpu() -> tuple[float, float]:
    """(process CPU seconds, all threads; wall seconds)."""
    return time.process_time(), time.monotonic()


def rate(start: tuple[float, float], end: tuple[float, float]) -> float:
    return 100.0 * (end[0] - start[0]) / (end[1] - start[1])


@dataclass
class Snapshot:
    counters: dict[str, dict[str, int]]
    sent: dict[str, int]  # light notifications / counter adverts made by the emulators
    aired: dict[str, int]  # counter adverts whose data went on the air at least once
    readings: dict[str, int]
    at: float

    @classmethod
    def take(cls, devs: list[Device], tally: Tally) -> Snapshot:
        sent, aired = {}, {}
        for d in devs:
            if d.family == "light":
                sent[d.asset] = d.emulator.notifications
            elif d.family == "counter":
                sent[d.asset] = len(d.emulator.sent)
                aired[d.asset] = d.emulator.controller.distinct_adverts
        return cls(
            {d.asset: d.ctx.counters.as_dict() for d in devs},
            sent,
            aired,
            dict(tally.readings),
            time.monotonic(),
        )


def losses(devs: list[Device], a: Snapshot, b: Snapshot, period: float) -> dict[str, Any]:
    """Per family: what was sent or due in the window, what arrived, what was lost."""
    out: dict[str, Any] = {}
    window = b.at - a.at
    for family in ("modbus", "serial", "light", "counter"):
        fam = [d for d in devs if d.family == family]
        if not fam:
            continue

        def delta(key: str, fam: list[Device] = fam) -> int:
            return sum(b.counters[d.asset][key] - a.counters[d.asset][key] for d in fam)

        got = sum(b.readings.get(d.asset, 0) - a.readings.get(d.asset, 0) for d in fam)
        if family == "modbus":
            per_poll = len(fam[0].ctx.profile.quantities) if fam[0].ctx.profile else 0
            polls = delta("frames_ok") + delta("frames_bad")
            due = int(window / period) * len(fam)
            behind = max(0, due - polls - len(fam))  # one poll per device of window slack
            out[family] = {
                "devices": len(fam),
                "polls": polls,
                "polls_due": due,
                "failed_polls": delta("frames_bad"),
                "readings": got,
                "readings_lost": per_poll * (delta("frames_bad") + behind),
            }
        elif family == "serial":
            per_frame = len(fam[0].ctx.profile.quantities) if fam[0].ctx.profile else 0
            out[family] = {
                "devices": len(fam),
                "readings": got,
                "frames_ok": delta("frames_ok"),
                "frames_bad": delta("frames_bad"),
                "gaps": delta("gaps"),
                "duplicates": delta("duplicates"),
                "readings_lost": per_frame * delta("gaps"),
            }
        elif family == "light":
            sent = sum(b.sent[d.asset] - a.sent[d.asset] for d in fam)
            out[family] = {
                "devices": len(fam),
                "notifications_sent": sent,
                "readings": got,
                "readings_lost": max(0, sent - got),
            }
        else:
            made = sum(b.sent[d.asset] - a.sent[d.asset] for d in fam)
            aired = sum(b.aired[d.asset] - a.aired[d.asset] for d in fam)
            # an advert whose data was replaced before its next advertising event never aired:
            # the emulator's loss (timers in one busy process), not the gateway's
            never_aired = max(0, made - aired)
            out[family] = {
                "devices": len(fam),
                "adverts_made": made,
                "adverts_on_air": aired,
                "readings": got,
                "missed_by_sequence": delta("gaps"),
                "of_which_never_on_air": min(never_aired, delta("gaps")),
                "frames_bad": delta("frames_bad"),
                "readings_lost": max(0, delta("gaps") - never_aired),
            }
    return out


async def wait_for(cond: Callable[[], bool], deadline: float) -> None:
    async with asyncio.timeout(deadline):
        while not cond():  # noqa: ASYNC110 - device counters carry no event to await
            await asyncio.sleep(0.02)


async def reconnect_times(
    devs: list[Device], tally: Tally, line: ModbusLine | None, flaps: int, adv_s: float
) -> dict[str, Any]:
    """Vanish one device per family, wait until the gateway notices, reappear, time it."""
    out: dict[str, Any] = {}
    for family in ("modbus", "serial", "light", "counter"):
        dev = next((d for d in devs if d.family == family), None)
        if dev is None:
            continue
        times: list[float] = []
        failures: list[str] = []
        for _ in range(flaps):
            try:
                times.append(await flap(dev, tally, line, adv_s))
            except TimeoutError as e:  # a figure, not a crash: report it
                failures.append(str(e) or "timed out")
                await reappear(dev, line)
        out[family] = {"device": dev.asset, "seconds": [round(t, 3) for t in times]}
        if failures:
            out[family]["failures"] = failures
        if times:
            out[family] |= {
                "median_s": round(statistics.median(times), 3),
                "max_s": round(max(times), 3),
            }
            if family in ("light", "counter"):
                out[family]["max_adv_intervals"] = round(max(times) / adv_s, 2)
    return out


async def flap(dev: Device, tally: Tally, line: ModbusLine | None, adv_s: float) -> float:
    """One vanish/reappear cycle; seconds from reappearing to the device's next reading."""
    await vanish(dev, line)
    if dev.family == "counter":  # nothing to notice: its adverts simply stop
        await asyncio.sleep(3 * adv_s)
    else:
        before = dev.ctx.counters.reconnects
        try:
            await wait_for(lambda: dev.ctx.counters.reconnects > before, 30)
        except TimeoutError:
            raise TimeoutError("the gateway did not notice the vanish within 30 s") from None
    back = time.time()
    await reappear(dev, line)
    try:
        async with asyncio.timeout(30):
            got = await tally.next_reading(dev.asset, back)
    except TimeoutError:
        raise TimeoutError("no reading within 30 s of reappearing") from None
    return got - back


async def vanish(dev: Device, line: ModbusLine | None) -> None:
    if dev.family == "modbus":
        assert line is not None
        await line.command("vanish", dev.emulator)
    elif dev.family == "serial":
        await dev.emulator.vanish()
    else:
        dev.emulator.vanish()


async def reappear(dev: Device, line: ModbusLine | None) -> None:
    if dev.family == "modbus":
        assert line is not None
        await line.command("reappear", dev.emulator)
    elif dev.family == "serial":
        await dev.emulator.reappear()
    else:
        dev.emulator.reappear()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tally = Tally()
    queue: asyncio.Queue[Reading] = asyncio.Queue(maxsize=10_000)
    async with contextlib.AsyncExitStack() as stack:
        line = None
        if args.sondes:
            line = await stack.enter_async_context(modbus_line(args.sondes))
        nodes = await stack.enter_async_context(serial_nodes(args.nodes))
        radio = await stack.enter_async_context(ble_radio(args))
        devs = devices(line, nodes, radio)
        tally.family_of = {d.asset: d.family for d in devs}
        t0 = cpu()
        await asyncio.sleep(args.baseline)  # emulators alone: their share of this process
        base = rate(t0, cpu())
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(consume(queue, tally), name="consumer")]
            for d in devs:
                coro = supervise(parse_spec(d.spec), d.ctx, queue, backoff=Backoff(0.2, 2.0))
                tasks.append(tg.create_task(coro, name=f"device {d.asset}"))
            started = time.monotonic()
            try:
                await wait_for(
                    lambda: all(tally.readings[d.asset] for d in devs), args.ready_timeout
                )
            except TimeoutError:
                silent = [d.asset for d in devs if not tally.readings[d.asset]]
                raise SystemExit(
                    f"southbound: {len(silent)} devices never reported within "
                    f"{args.ready_timeout:.0f} s (e.g. {silent[:5]}); process CPU since the "
                    f"start {rate(t0, cpu()):.0f} % of a core, so the machine cannot carry "
                    "this mix with the emulators in one process"
                ) from None
            ready_s = time.monotonic() - started
            await asyncio.sleep(args.warmup)
            a, c0 = Snapshot.take(devs, tally), cpu()
            await asyncio.sleep(args.duration)
            b, c1 = Snapshot.take(devs, tally), cpu()
            total = rate(c0, c1)
            lost = losses(devs, a, b, 1.0)
            reconnect = await reconnect_times(
                devs, tally, line, args.flaps, args.adv_interval_ms / 1000
            )
            for t in tasks:
                t.cancel()
    return {
        "machine": machine(),
        "mix": {
            "counters": args.counters,
            "lights": args.lights,
            "sondes": args.sondes,
            "serial_nodes": args.nodes,
        },
        "adv_interval_ms": args.adv_interval_ms,
        "window_s": round(b.at - a.at, 1),
        "all_devices_reporting_after_s": round(ready_s, 2),
        "cpu_pct_of_one_core": {
            "process_total": round(total, 1),
            "emulators_baseline": round(base, 1),
            "gateway": round(total - base, 1),
        },
        "readings_per_s": round(
            (sum(b.readings.values()) - sum(a.readings.values())) / (b.at - a.at), 1
        ),
        "readings_lost": sum(f["readings_lost"] for f in lost.values()),
        "by_family": lost,
        "reconnect_after_vanish": reconnect,
    }


async def consume(queue: asyncio.Queue[Reading], tally: Tally) -> None:
    while True:
        tally.add(await queue.get())


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--counters", type=int, default=200, help="BLE advertising counters (200)")
    p.add_argument("--lights", type=int, default=10, help="BLE streetlights (10)")
    p.add_argument("--sondes", type=int, default=10, help="Modbus sondes (10)")
    p.add_argument("--nodes", type=int, default=10, help="twinedge serial nodes (10)")
    p.add_argument("--duration", type=float, default=30.0, help="measured window, s (30)")
    p.add_argument("--baseline", type=float, default=10.0, help="emulators-only window, s (10)")
    p.add_argument("--warmup", type=float, default=3.0, help="after all report, before measuring")
    p.add_argument("--ready-timeout", type=float, default=120.0, help="for all to report, s")
    p.add_argument("--flaps", type=int, default=3, help="vanish/reappear cycles per family (3)")
    p.add_argument("--adv-interval-ms", type=float, default=1000.0, help="BLE advert interval")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
