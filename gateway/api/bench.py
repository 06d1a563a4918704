"""Benchmark of the local API: ``python -m gateway.api.bench [--assets 200] [--clients 5]``.

Serves a synthetic site of N assets (six quantities each) on a free loopback port and measures,
from a client in the same process: ``/api/status`` and ``/metrics`` latency and size, and how
many events per second the SSE stream delivers to several clients while readings are published
as fast as the publisher can go. Prints one JSON object. Run it on purpose; it is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from gateway.api import serve_api

QUANTITIES = (
    ("temperature", "CEL"),
    ("ph", "C62"),
    ("conductivity", "G42"),
    ("dissolved_oxygen", "M1"),
    ("turbidity", "NTU"),
    ("orp", "2Z"),
)


class Fanout:
    """Bounded per-subscriber queues that drop when full, as the gateway's hub does."""

    def __init__(self, maxsize: int = 1000) -> None:
        self.queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self.maxsize = maxsize
        self.dropped = 0
        self.changed = asyncio.Condition()

    def publish(self, event: dict[str, Any]) -> None:
        for q in self.queues:
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                self.dropped += 1

    @asynccontextmanager
    async def events(self) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self.maxsize)
        async with self.changed:
            self.queues.add(q)
            self.changed.notify_all()

        async def gen() -> AsyncIterator[dict[str, Any]]:
            while True:
                yield await q.get()

        try:
            yield gen()
        finally:
            self.queues.discard(q)


def site_snapshot(n: int) -> dict[str, Any]:
    now = time.time()
    state = {
        q: {
            "value": 1.5,
            "unit": u,
            "quality": "good",
            "observed_at": now,
            "received_at": now,
            "score": 0.1,
        }
        for q, u in QUANTITIES
    }
    counters = {
        "frames_ok": 1000,
        "frames_bad": 1,
        "gaps": 0,
        "duplicates": 0,
        "reconnects": 0,
        "out_of_range": 0,
    }
    assets = {
        f"wq-{i:03d}": {
            "id": f"wq-{i:03d}",
            "category": "water-quality",
            "name": f"Probe {i}",
            "location": {"type": "Point", "coordinates": [4.9, 52.37]},
            "attributes": {},
            "revision": 10,
            "liveness": {"online": True, "last_seen": now, "stale_after_s": 30},
            "state": state,
            "anomalies": {},
            "buffer": {"dropped": 0},
            "device": {
                "source": f"serial:/dev/ttyUSB{i}",
                "profile": "p",
                "counters": counters,
                "info": {},
            },
            "config": {"period": 1.0, "thresholds": {}},
        }
        for i in range(n)
    }
    return {
        "gateway": {"id": "gw-bench", "site": "bench", "version": "0", "uptime_s": 1.0},
        "uplink": {
            "state": "connected",
            "broker": "mqtt://127.0.0.1:1883",
            "backlog_rows": 0,
            "publish_latency_ms": {"p50": 1.0, "p99": 2.0},
        },
        "buffer": {
            "rows": 0,
            "bytes": 0,
            "max_rows": 1,
            "max_bytes": 1,
            "dropped": {"total": 0, "by_asset": {}},
        },
        "assets": assets,
        "models": {},
        "warnings": [],
        "readings": {"in": 0, "out": 0},
    }


async def _timed_get(http: aiohttp.ClientSession, url: str, n: int) -> dict[str, float]:
    times, size = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        async with http.get(url) as resp:
            size = len(await resp.read())
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(times[int(len(times) * 0.99) - 1], 2),
        "bytes": size,
    }


async def _sse_client(http: aiohttp.ClientSession, url: str, counts: list[int], i: int) -> None:
    async with http.get(url) as resp:
        async for line in resp.content:
            if line.startswith(b"data:"):
                counts[i] += 1


async def _sse_rate(url: str, fan: Fanout, clients: int, seconds: float) -> dict[str, float]:
    counts = [0] * clients
    async with aiohttp.ClientSession() as http:
        tasks = [asyncio.create_task(_sse_client(http, url, counts, i)) for i in range(clients)]
        async with fan.changed:  # the clients and the server's history recorder subscribed
            await fan.changed.wait_for(lambda: len(fan.queues) >= clients + 1)
        event = {
            "type": "reading",
            "asset": "wq-000",
            "quantity": "ph",
            "value": 7.0,
            "unit": "C62",
            "quality": "good",
            "ts": time.time(),
        }
        published, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(100):
                fan.publish(event)
            published += 100
            await asyncio.sleep(0)  # let the server and the clients run
        elapsed = time.perf_counter() - t0
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "clients": clients,
        "published_per_s": round(published / elapsed),
        "delivered_per_client_per_s": round(statistics.mean(counts) / elapsed),
    }


async def bench(assets: int, clients: int, requests: int, seconds: float) -> dict[str, Any]:
    fan = Fanout()
    snap = site_snapshot(assets)
    async with (
        serve_api(status=lambda: snap, events=fan.events, port=0) as server,
        aiohttp.ClientSession() as http,
    ):
        status = await _timed_get(http, f"{server.url}api/status", requests)
        metrics = await _timed_get(http, f"{server.url}metrics", requests)
        sse = await _sse_rate(f"{server.url}api/events", fan, clients, seconds)
        sse["server_dropped"] = server.stats.sse_dropped
    return {"assets": assets, "api_status": status, "metrics": metrics, "sse": sse}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--assets", type=int, default=200)
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--seconds", type=float, default=3.0)
    a = p.parse_args()
    print(json.dumps(asyncio.run(bench(a.assets, a.clients, a.requests, a.seconds)), indent=2))


if __name__ == "__main__":
    main()
