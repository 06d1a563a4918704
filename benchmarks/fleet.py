"""Fleet benchmark: N simulated gateways publish through a real mosquitto to the feed sink.

Each simulated gateway has one MQTT connection, publishes its birth and full twins (retained),
then every second one readings batch (one row per asset) and one delta per asset, built with the
gateway's own builders (gateway/sync/messages.py). Three measurements, printed as one JSON object:

- ``live``: N gateways at 1 Hz for ``--duration`` s against one ``twinedge feed sink``
  (its own process), or with ``--partitions P`` spread over P sites with one sink per site;
  reports what the sinks received, how far behind they were when the publishers stopped, and
  their CPU seconds, from which the rate one core could sustain follows;
- ``capacity``: the sink's decode + validate + SQLite cost on one core without a broker
  (pre-built messages of ``--capacity-gateways`` gateways), for full and light validation;
- ``shared``: K sinks in one MQTT v5 shared subscription ($share/...) draining a backlog of
  readings as fast as they can, for K = 1..``--max-consumers``.

Run: ``python benchmarks/fleet.py [--gateways 100] [--duration 10]``. Needs mosquitto.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing as mp
import os
import platform
import random
import sys
import tempfile
import time
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

from gateway.broker import mosquitto
from gateway.feed.consumer import UPLINK_LEAVES, Broker, run_sink
from gateway.feed.decode import decode
from gateway.feed.store import TwinStore
from gateway.sync import messages as m

QUANTITIES = (("temperature", "CEL"), ("ph", "C62"), ("turbidity", "NTU"), ("orp", "2Z"))
SITE = "bench"


class SimGateway:
    """The messages one gateway with ``assets`` assets publishes, second by second."""

    def __init__(self, gw: str, assets: int, site: str = SITE) -> None:
        self.gw, self.session, self.site = gw, f"s-{gw}", site
        self.topics = m.Topics("twinedge/v1", site, gw)
        self.assets = [f"a{i:03d}" for i in range(assets)]
        self.seq = 0
        self.rev = dict.fromkeys(self.assets, 1)

    def birth(self, now: float) -> list[tuple[str, bytes, bool]]:
        out = [
            (
                self.topics.status,
                m.dumps(m.birth(self.gw, self.session, 1, self.site, now, self.rev, {"sim": True})),
                True,
            )
        ]
        for a in self.assets:
            twin = {
                "id": a,
                "category": "water-quality",
                "revision": 1,
                "liveness": {"online": True, "last_seen": now, "stale_after_s": 30.0},
                "state": {},
            }
            doc = m.twin(self.gw, self.session, now, a, 1, twin)
            out.append((self.topics.twin(a), m.dumps(doc), True))
        return out

    def second(self, now: float) -> list[tuple[str, bytes, bool]]:
        rows = []
        out = []
        for i, a in enumerate(self.assets):
            self.seq += 1
            q, unit = QUANTITIES[i % len(QUANTITIES)]
            v = round(random.uniform(1, 20), 3)
            rows.append((self.seq, a, q, v, unit, round(now, 3), round(now, 3), "good", None))
            self.rev[a] += 1
            patch = {
                "revision": self.rev[a],
                "state": {q: {"value": v, "observed_at": now}},
                "liveness": {"last_seen": now},
            }
            doc = m.delta(self.gw, self.session, now, a, self.rev[a], patch)
            out.append((self.topics.delta(a), m.dumps(doc), False))
        batch = m.readings_batch(self.gw, self.session, now, rows, False)
        return [(self.topics.readings, m.dumps(batch), False), *out]


# -- publisher process ---------------------------------------------------------------------------


def publisher(
    url: str,
    names: list[str],
    assets: int,
    seconds: int,
    paced: bool,
    readings_only: bool,
    partitions: int,
    out: Any,
) -> None:
    out.put(asyncio.run(_publish(url, names, assets, seconds, paced, readings_only, partitions)))


def _site(name: str, partitions: int) -> str:
    """Gateways spread over ``partitions`` sites (one site when not partitioned)."""
    return SITE if partitions <= 1 else f"{SITE}{int(name[2:]) % partitions}"


async def _publish(
    url: str,
    names: list[str],
    assets: int,
    seconds: int,
    paced: bool,
    readings_only: bool,
    partitions: int = 1,
) -> dict[str, int]:
    import aiomqtt

    b = Broker.parse(url)
    quiet = logging.getLogger("fleet.mqtt")  # aiomqtt warns about every pending publish
    quiet.setLevel(logging.ERROR)
    sims = [SimGateway(n, assets, _site(n, partitions)) for n in names]
    sent = {"messages": 0, "readings": 0}
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                aiomqtt.Client(
                    b.host,
                    b.port,
                    identifier=f"sim-{s.gw}",
                    protocol=aiomqtt.ProtocolVersion.V5,
                    max_inflight_messages=1000,
                )
            )
            for s in sims
        ]
        start = time.time()
        for k in range(seconds + 1):
            if paced:
                await asyncio.sleep(max(0.0, start + k - time.time()))  # the 1 Hz schedule
            now = time.time()
            pubs = []
            for s, c in zip(sims, clients, strict=True):
                msgs = s.birth(now) if k == 0 else s.second(now)
                if readings_only:
                    msgs = msgs[:1] if k else []
                for t, p, r in msgs:
                    pubs.append(c.publish(t, p, qos=1, retain=r))
                    sent["messages"] += 1
                    sent["readings"] += len(s.assets) if t.endswith("/readings") else 0
            await asyncio.gather(*pubs)
    return sent


# -- sink process --------------------------------------------------------------------------------


def sink_worker(
    url: str,
    db: str,
    share: str | None,
    sites: list[str],
    readings_only: bool,
    counts: Any,
    cpu: Synchronized[float],
    ready: Any,
    stop: Any,
) -> None:
    asyncio.run(_sink(url, db, share, sites, readings_only, counts, cpu, ready, stop))


async def _sink(
    url: str,
    db: str,
    share: str | None,
    sites: list[str],
    readings_only: bool,
    counts: Any,
    cpu: Synchronized[float],
    ready: Any,
    stop: Any,
) -> None:
    idx = counts["slot"]
    msgs, rows = counts["messages"], counts["readings"]
    t0 = time.process_time()

    def on_batch(store: TwinStore) -> None:
        msgs[idx] = store.counters.messages
        rows[idx] = store.counters.readings
        cpu.value = time.process_time() - t0

    started = asyncio.Event()
    prefix = "twinedge/v1"
    task = asyncio.create_task(
        run_sink(
            url,
            Path(db),
            prefix=prefix,
            validation="light",
            share=share,
            sites=sites,
            on_batch=on_batch,
            ready=started,
            leaves=("readings",) if readings_only else UPLINK_LEAVES,
        )
    )
    await started.wait()
    ready.set()
    await asyncio.to_thread(stop.wait)  # the coordinator says when (a multiprocessing event)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# -- measurements --------------------------------------------------------------------------------


def _split(names: list[str], parts: int) -> list[list[str]]:
    return [names[i::parts] for i in range(parts) if names[i::parts]]


def _run_publishers(
    ctx: Any,
    url: str,
    names: list[str],
    args: argparse.Namespace,
    seconds: int,
    paced: bool,
    readings_only: bool,
) -> dict[str, int]:
    q = ctx.Queue()
    procs = [
        ctx.Process(
            target=publisher,
            args=(url, part, args.assets, seconds, paced, readings_only, args.partitions, q),
        )
        for part in _split(names, args.publishers)
    ]
    for p in procs:
        p.start()
    results = [q.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    return {k: sum(r[k] for r in results) for k in ("messages", "readings")}


def _start_sinks(
    ctx: Any,
    url: str,
    tmp: Path,
    k: int,
    share: str | None,
    readings_only: bool,
    sites: list[list[str]] | None = None,
) -> tuple[list[Any], Any, Any, list[Any], Any]:
    msgs = ctx.Array("q", k)
    rows = ctx.Array("q", k)
    cpus = [ctx.Value("d", 0.0) for _ in range(k)]
    stop = ctx.Event()
    procs = []
    for i in range(k):
        ready = ctx.Event()
        counts = {"slot": i, "messages": msgs, "readings": rows}
        p = ctx.Process(
            target=sink_worker,
            args=(
                url,
                str(tmp / f"sink{i}.db"),
                share,
                sites[i] if sites else [],
                readings_only,
                counts,
                cpus[i],
                ready,
                stop,
            ),
        )
        p.start()
        if not ready.wait(30):
            raise RuntimeError("sink did not subscribe within 30 s")
        procs.append(p)
    return procs, msgs, rows, cpus, stop


def _wait_drained(msgs: Any, expected: int, within: float) -> float:
    """Seconds until the sinks together processed ``expected`` messages (a deadline, polled:
    the counters live in shared memory written by other processes)."""
    t0 = time.monotonic()
    while sum(msgs[:]) < expected and time.monotonic() - t0 < within:
        time.sleep(0.02)
    return time.monotonic() - t0


def _stop(procs: list[Any], stop: Any) -> None:
    stop.set()
    for p in procs:
        p.join(30)


def live(ctx: Any, url: str, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    names = [f"gw{i:04d}" for i in range(args.gateways)]
    k = max(1, args.partitions)
    sites = [[f"{SITE}{i}"] for i in range(k)] if k > 1 else None
    procs, msgs, rows, cpus, stop = _start_sinks(ctx, url, tmp, k, None, False, sites)
    t0 = time.monotonic()
    sent = _run_publishers(ctx, url, names, args, args.duration, True, False)
    publish_s = time.monotonic() - t0
    lag = _wait_drained(msgs, sent["messages"], 120)
    wall = time.monotonic() - t0
    _stop(procs, stop)
    cpu = sum(c.value for c in cpus)
    got = sum(msgs[:])
    return {
        "sinks": k,
        "per_sink_messages": list(msgs[:]),
        "per_sink_cpu_s": [round(c.value, 2) for c in cpus],
        "gateways": args.gateways,
        "assets_per_gateway": args.assets,
        "hz": 1,
        "seconds": args.duration,
        "published_messages": sent["messages"],
        "published_readings": sent["readings"],
        "sink_messages": got,
        "sink_readings": sum(rows[:]),
        "publish_wall_s": round(publish_s, 2),
        "drain_after_publishers_s": round(lag, 2),
        "offered_messages_per_s": round(sent["messages"] / publish_s),
        "offered_readings_per_s": round(sent["readings"] / publish_s),
        "sink_cpu_s": round(cpu, 2),
        "sink_cpu_share": round(cpu / wall, 3),
        "one_core_messages_per_s": round(got / cpu) if cpu else None,
        "one_core_readings_per_s": round(sum(rows[:]) / cpu) if cpu else None,
    }


def capacity(tmp: Path, gateways: int, assets: int, seconds: int) -> dict[str, Any]:
    """Decode + validate + apply on one core, no broker: the sink's own ceiling."""
    sims = [SimGateway(f"gw{i:04d}", assets) for i in range(gateways)]
    t = time.time()
    wire = [x for s in sims for x in s.birth(t)]
    for k in range(1, seconds + 1):
        wire += [x for s in sims for x in s.second(t + k)]
    out: dict[str, Any] = {
        "gateways": gateways,
        "assets_per_gateway": assets,
        "simulated_seconds": seconds,
        "messages": len(wire),
    }
    for validation in ("full", "light"):
        db = tmp / f"capacity-{validation}.db"
        with TwinStore(db) as store:
            t0 = time.process_time()
            batch = []
            for topic, payload, _r in wire:
                batch.append(decode(topic, payload, validation))  # type: ignore[arg-type]
                if len(batch) == 2000:
                    store.apply(batch)
                    batch = []
            store.apply(batch)
            cpu = time.process_time() - t0
        n = store.counters.messages
        out[validation] = {
            "cpu_s": round(cpu, 2),
            "messages_per_s": round(n / cpu),
            "readings_per_s": round(store.counters.readings / cpu),
            "gateways_at_1hz_per_core": round(n / cpu / (assets + 1)),
        }
    return out


def shared(ctx: Any, url: str, tmp: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    names = [f"gw{i:04d}" for i in range(args.gateways)]
    results = []
    for k in range(1, args.max_consumers + 1):
        procs, msgs, rows, cpus, stop = _start_sinks(ctx, url, tmp / f"k{k}", k, "bench", True)
        t0 = time.monotonic()
        sent = _run_publishers(ctx, url, names, args, args.backlog, False, True)
        took = time.monotonic() - t0 + _wait_drained(msgs, sent["messages"], 120)
        _stop(procs, stop)
        results.append(
            {
                "consumers": k,
                "messages": sum(msgs[:]),
                "readings": sum(rows[:]),
                "per_consumer_messages": list(msgs[:]),
                "wall_s": round(took, 2),
                "readings_per_s": round(sum(rows[:]) / took),
                "sink_cpu_s": [round(c.value, 2) for c in cpus],
            }
        )
    return results


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    with tempfile.TemporaryDirectory(prefix="twinedge-fleet-") as d:
        tmp = Path(d)
        async with mosquitto() as broker:
            if "live" in args.only:
                out["live"] = await asyncio.to_thread(live, ctx, broker.url, tmp, args)
            if "shared" in args.only:
                out["shared"] = await asyncio.to_thread(shared, ctx, broker.url, tmp, args)
        if "capacity" in args.only:
            out["capacity"] = capacity(tmp, args.capacity_gateways, args.assets, 5)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gateways", type=int, default=100)
    p.add_argument("--assets", type=int, default=20)
    p.add_argument("--duration", type=int, default=10, help="seconds of live publishing")
    p.add_argument("--publishers", type=int, default=2, help="publisher processes")
    p.add_argument("--capacity-gateways", type=int, default=200)
    p.add_argument("--backlog", type=int, default=5, help="seconds of readings per shared run")
    p.add_argument("--max-consumers", type=int, default=2)
    p.add_argument(
        "--partitions",
        type=int,
        default=1,
        help="live: spread gateways over N sites, one sink each",
    )
    p.add_argument(
        "--only",
        nargs="+",
        default=["live", "capacity", "shared"],
        choices=("live", "capacity", "shared"),
    )
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(_main(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
