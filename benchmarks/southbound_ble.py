"""Benchmark (not a test): BLE southbound load on the gateway side. Prints one JSON object.

    .venv/bin/python benchmarks/southbound_ble.py [--counters 200] [--lights 10] [--duration 30]

N advertising counters (1 Hz) and M streetlights notifying their six values (1 Hz) run on an
emulated bumble radio in a CHILD process; the gateway's controller is served to this process over
HCI on a loopback TCP socket, so this process is only the gateway side: bumble's host stack (the
part BlueZ and the kernel do on a real gateway), bleak, and the ``ble`` / ``ble-adv`` sources
under the real supervisor, feeding a queue that a consumer drains. Its CPU time (process_time
over the window) is the gateway figure; the emulator's CPU is reported beside it.

Figures: gateway CPU % of one core; readings lost (counter sequence gaps + light notifications
sent but not received); reconnect time of one light after a vanish, measured from the moment
it is back in range to its first reading, against its advertising interval.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.profiles import load_profile
from gateway.readings import Reading
from gateway.sources import SourceContext, parse_spec
from gateway.supervise import supervise


# ----------------------------------------------------------------------- emulator (child process)
async def emulator(args: argparse.Namespace) -> None:
    import psutil

    from hil_tests.emulators.ble import BleRadio

    radio = BleRadio(adv_interval_ms=args.interval_ms, hci_server=f"127.0.0.1:{args.port}")
    async with radio:
        for n in range(1, args.lights + 1):
            await radio.add_streetlight(f"light-{n:02d}", period=1.0)
        for n in range(1, args.counters + 1):
            await radio.add_counter(n, period=1.0, busyness=5.0)
        lights = {name: light.address for name, light in radio.streetlights.items()}
        say({"ready": True, "lights": lights, "counters": sorted(radio.counters)})
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        me = psutil.Process()
        while line := await reader.readline():
            cmd = json.loads(line)
            op = cmd["op"]
            if op == "mark":
                for light in radio.streetlights.values():
                    light.notifications = 0
                seqs = {n: c.seq for n, c in radio.counters.items()}
                on_air = {n: c.controller.distinct_adverts for n, c in radio.counters.items()}
                cpu0 = sum(me.cpu_times()[:2])
                say({"marked": time.time()})
            elif op == "vanish":
                for name in cmd["names"]:
                    radio.streetlights[name].vanish()
                say({"vanished": time.time()})
            elif op == "reappear":
                for name in cmd["names"]:
                    radio.streetlights[name].reappear()
                say({"reappeared": time.time()})
            elif op == "stop":
                for p in [*radio.streetlights.values(), *radio.counters.values()]:
                    p.paused = True
                # data set just before the pause goes on air at the next advertising event
                await asyncio.sleep(2 * args.interval_ms / 1000)
                sent = {n: light.notifications for n, light in radio.streetlights.items()}
                advanced = {n: (c.seq - seqs[n]) & 0xFFFF for n, c in radio.counters.items()}
                aired = sum(
                    c.controller.distinct_adverts - on_air[n] for n, c in radio.counters.items()
                )
                cpu = sum(me.cpu_times()[:2]) - cpu0
                say(
                    {"notifications": sent, "counter_seqs": advanced, "on_air": aired, "cpu_s": cpu}
                )
        # stdin closed: the gateway has shut its sources down first; now the radio goes


def say(doc: dict[str, Any]) -> None:
    print(json.dumps(doc), flush=True)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------- gateway (this process)
class Gateway:
    """The BLE sources of a gateway under supervision, with a consumer that tallies readings."""

    def __init__(self, options: dict[str, Any], lights: dict[str, str], counters: list[int]):
        self.queue: asyncio.Queue[Reading] = asyncio.Queue(10000)
        light_profile, counter_profile = (
            load_profile("streetlight-ble"),
            load_profile("counter-ble-adv"),
        )
        self.ctxs: dict[str, SourceContext] = {}
        self.specs = {}
        for name, address in lights.items():
            self.ctxs[name] = SourceContext(name, light_profile, options=options)
            self.specs[name] = parse_spec(f"ble:{address}?timeout=20s&gatt_timeout=5s")
        for n in counters:
            name = f"counter-{n:04d}"
            self.ctxs[name] = SourceContext(name, counter_profile, options=options)
            self.specs[name] = parse_spec(f"ble-adv:{name}")
        self.received: dict[str, int] = dict.fromkeys(self.ctxs, 0)
        self.open: set[str] = set()
        self.first_after: dict[str, float] = {}
        self.watch: tuple[list[str], float] | None = None
        self.changed = asyncio.Condition()

    async def consume(self) -> None:
        while True:
            r = await self.queue.get()
            self.received[r.asset] += 1
            if self.watch and r.asset in self.watch[0] and r.received_at >= self.watch[1]:
                self.first_after.setdefault(r.asset, r.received_at)
            async with self.changed:
                self.changed.notify_all()

    async def until(self, predicate: Any, within: float) -> bool:
        """Wait (at most ``within`` s) until ``predicate()`` holds after some reading."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within), self.changed:
                await self.changed.wait_for(predicate)
        return bool(predicate())

    def ready(self) -> bool:
        """Every light connected and every counter heard."""
        return all(
            (n in self.open) if n.startswith("light") else ("advert" in c.device_info)
            for n, c in self.ctxs.items()
        )

    def counter_frames(self, since: int = 0) -> int:
        """Counter adverts heard (new sequence numbers, not duplicates)."""
        counters = (c for n, c in self.ctxs.items() if n.startswith("counter"))
        return sum(c.counters.frames_ok for c in counters) - since

    def tracker(self, name: str) -> Any:
        def on_open(source: object) -> None:
            (self.open.add if source is not None else self.open.discard)(name)
            log(f"{time.time():.3f} {name} {'open' if source is not None else 'closed'}")

        return on_open


async def gateway(args: argparse.Namespace) -> dict[str, Any]:
    from hil_tests.emulators.bleak_bumble import central_over_hci

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--emulator", "--port", str(port),
        "--counters", str(args.counters), "--lights", str(args.lights),
        "--interval-ms", str(args.interval_ms),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None

    async def ask(doc: dict[str, Any]) -> dict[str, Any]:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(json.dumps(doc).encode() + b"\n")
        await child.stdin.drain()
        reply: dict[str, Any] = json.loads(await child.stdout.readline())
        return reply

    try:
        hello = json.loads(await asyncio.wait_for(child.stdout.readline(), 120))
        central = await central_over_hci(f"tcp-client:127.0.0.1:{port}")
        await central.start()
        scanner, client = central.backends()
        gw = Gateway(
            {"ble_scanner_backend": scanner, "ble_client_backend": client},
            hello["lights"], hello["counters"],
        )  # fmt: skip
        return await run_window(args, gw, ask)
    finally:
        child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), 10)
        except TimeoutError:
            child.kill()
            await child.wait()


async def run_window(args: argparse.Namespace, gw: Gateway, ask: Any) -> dict[str, Any]:
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(gw.consume())]
        for name, spec in gw.specs.items():
            run = supervise(spec, gw.ctxs[name], gw.queue, on_open=gw.tracker(name))
            tasks.append(tg.create_task(run, name=name))
        setup = time.monotonic()
        if not await gw.until(gw.ready, 120):
            raise RuntimeError("not every device was heard within 120 s")
        setup = time.monotonic() - setup
        await ask({"op": "mark"})
        before = {k: v for k, v in gw.received.items()}
        gaps0 = sum(c.counters.gaps for c in gw.ctxs.values())
        heard0 = gw.counter_frames()
        log(f"{time.time():.3f} window starts")
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(args.vanish_at)
        vanish = [f"light-{n:02d}" for n in range(1, min(args.vanish, args.lights) + 1)]
        await ask({"op": "vanish", "names": vanish})
        await asyncio.sleep(args.vanish_for)
        back = await ask({"op": "reappear", "names": vanish})
        log(f"{back['reappeared']:.3f} reappeared {vanish}")
        gw.watch = (vanish, back["reappeared"])
        await asyncio.sleep(max(0.0, args.duration - args.vanish_at - args.vanish_for))
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        stats = await ask({"op": "stop"})
        heard = partial(gw.counter_frames, heard0)
        await gw.until(  # let what is in flight arrive
            lambda: _lights_lost(gw, before, stats) == 0 and heard() >= stats["on_air"], 2.0
        )
        stats["heard"] = heard()
        for t in tasks:
            t.cancel()
    return report(args, gw, before, stats, gaps0, cpu, wall, setup, back["reappeared"])


def _lights_lost(gw: Gateway, before: dict[str, int], stats: dict[str, Any]) -> int:
    return sum(
        max(0, sent - (gw.received[n] - before[n])) for n, sent in stats["notifications"].items()
    )


def report(
    args: argparse.Namespace, gw: Gateway, before: dict[str, int], stats: dict[str, Any],
    gaps0: int, cpu: float, wall: float, setup: float, back_at: float,
) -> dict[str, Any]:  # fmt: skip
    counters = [c for n, c in gw.ctxs.items() if n.startswith("counter")]
    readings = sum(gw.received.values()) - sum(before.values())
    back = [gw.first_after.get(n) for n in gw.watch[0]] if gw.watch else []
    reconnect = [None if t is None else round(1000 * (t - back_at), 1) for t in back]
    worst = None if None in reconnect or not reconnect else max(reconnect)  # type: ignore[type-var]
    return {
        "benchmark": "southbound_ble",
        "counters": args.counters,
        "streetlights": args.lights,
        "advertising_interval_ms": args.interval_ms,
        "window_s": round(wall, 2),
        "setup_s": round(setup, 2),
        "gateway_cpu_percent_of_one_core": round(100 * cpu / wall, 1),
        "emulator_cpu_percent_of_one_core": round(100 * stats["cpu_s"] / wall, 1),
        "readings": readings,
        "readings_per_s": round(readings / wall, 1),
        "counter_readings_made": sum(stats["counter_seqs"].values()),
        "counter_readings_on_air": stats["on_air"],
        "counter_readings_heard": stats["heard"],
        "counter_readings_lost": max(0, stats["on_air"] - stats["heard"]),
        "counter_gaps": sum(c.counters.gaps for c in counters) - gaps0,
        "counter_bad_frames": sum(c.counters.frames_bad for c in counters),
        "light_notifications_sent": sum(stats["notifications"].values()),
        "light_notifications_lost": _lights_lost(gw, before, stats),
        "reconnect_ms": reconnect,
        "worst_reconnect_in_intervals": None
        if worst is None
        else round(worst / args.interval_ms, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counters", type=int, default=200)
    p.add_argument("--lights", type=int, default=10)
    p.add_argument("--duration", type=float, default=30.0, help="measurement window, seconds")
    p.add_argument("--interval-ms", type=float, default=500.0, help="advertising interval")
    p.add_argument("--vanish-at", type=float, default=10.0)
    p.add_argument("--vanish-for", type=float, default=3.0)
    p.add_argument("--vanish", type=int, default=1, help="how many lights vanish and return")
    p.add_argument("--profile", action="store_true", help="also split gateway CPU by package")
    p.add_argument("--emulator", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.emulator:
        asyncio.run(emulator(args))
        return
    if not args.profile:
        print(json.dumps(asyncio.run(gateway(args)), indent=2))
        return
    import cProfile

    prof = cProfile.Profile(time.process_time)  # CPU time, not wall (idle epoll waits)
    result = prof.runcall(asyncio.run, gateway(args))
    result["gateway_cpu_share_by_package"] = cpu_shares(prof)
    print(json.dumps(result, indent=2))


def cpu_shares(prof: Any) -> dict[str, float]:
    """Own CPU time per package (bumble host stack, bleak, twinedge, asyncio, other), in %."""
    import pstats

    totals: dict[str, float] = {}
    for (filename, _line, _fn), (_cc, _nc, tottime, _ct, _callers) in (
        pstats.Stats(prof).stats.items()  # type: ignore[attr-defined]
    ):
        key = "builtins (C functions, called by all)" if filename == "~" else "other"
        for pkg in ("bumble", "bleak", "gateway", "edge_node", "hil_tests", "asyncio"):
            if f"/{pkg}/" in filename:
                key = pkg
                break
        else:
            if "/lib/python3" in filename and "site-packages" not in filename:
                key = "stdlib"
        totals[key] = totals.get(key, 0.0) + tottime
    whole = sum(totals.values()) or 1.0
    return {k: round(100 * v / whole, 1) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


if __name__ == "__main__":
    main()
