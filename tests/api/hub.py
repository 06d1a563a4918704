"""A real in-process event hub and snapshot for exercising the API without the whole gateway.

The hub behaves as the gateway's event fan-out does: each subscriber gets a bounded queue, a full
queue drops (and counts) instead of blocking the publisher, and closing the hub ends every
subscription.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any


class Hub:
    def __init__(self, maxsize: int = 1000) -> None:
        self.maxsize = maxsize
        self.queues: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.dropped = 0
        self.changed = asyncio.Condition()

    def publish(self, event: dict[str, Any]) -> None:
        for q in self.queues:
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                self.dropped += 1

    def close(self) -> None:
        for q in self.queues:
            while q.full():
                q.get_nowait()
            q.put_nowait(None)

    async def wait_subscribers(self, n: int, within: float = 5.0) -> None:
        async with asyncio.timeout(within), self.changed:
            await self.changed.wait_for(lambda: len(self.queues) >= n)

    @asynccontextmanager
    async def events(self) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(self.maxsize)

        async def gen() -> AsyncIterator[dict[str, Any]]:
            while (item := await q.get()) is not None:
                yield item

        async with self.changed:
            self.queues.add(q)
            self.changed.notify_all()
        try:
            yield gen()
        finally:
            self.queues.discard(q)


def twin(
    asset: str, category: str, state: dict[str, tuple[float, str]], **extra: Any
) -> dict[str, Any]:
    t = time.time()
    doc: dict[str, Any] = {
        "id": asset,
        "category": category,
        "name": asset.upper(),
        "location": {"type": "Point", "coordinates": [4.35, 50.85]},
        "attributes": {},
        "revision": 3,
        "liveness": {"online": True, "last_seen": t, "stale_after_s": 30.0},
        "state": {
            q: {
                "value": v,
                "unit": u,
                "quality": "good",
                "observed_at": t,
                "received_at": t,
                "score": None,
            }
            for q, (v, u) in state.items()
        },
        "device": {
            "source": "serial:/dev/ttyUSB0",
            "profile": "twinedge-water-node",
            "counters": {
                "frames_ok": 120,
                "frames_bad": 2,
                "gaps": 1,
                "duplicates": 0,
                "reconnects": 3,
                "out_of_range": 0,
            },
            "info": {"firmware": "1.2.0"},
        },
        "anomalies": {},
        "buffer": {"dropped": 0},
        "config": {"period": 1.0, "thresholds": {}},
    }
    doc.update(extra)
    return doc


def snapshot() -> dict[str, Any]:
    return {
        "gateway": {
            "id": "gw-test",
            "site": "harbour",
            "version": "0.1.0",
            "session": "s1",
            "boot": 1,
            "started_at": time.time() - 65,
            "uptime_s": 65.0,
        },
        "uplink": {
            "state": "connected",
            "broker": "mqtt://127.0.0.1:1883",
            "backlog_rows": 7,
            "published_rows": 123,
            "last_ack_at": time.time(),
            "publish_latency_ms": {"p50": 3.1, "p99": 12.0},
            "reconnects": 1,
        },
        "buffer": {
            "rows": 42,
            "bytes": 81920,
            "max_rows": 1_000_000,
            "max_bytes": 1 << 30,
            "dropped": {"total": 5, "by_asset": {"wq-1": 5}},
        },
        "assets": {
            "wq-1": twin(
                "wq-1",
                "water-quality",
                {"temperature": (12.3, "CEL"), "ph": (7.1, "C62")},
                anomalies={
                    "turbidity": {
                        "score": 0.93,
                        "threshold": 0.8,
                        "model": "water-quality@1.0.0",
                        "detected_at": time.time(),
                    }
                },
            ),
            "sl-1": twin("sl-1", "streetlight", {"power": (41.5, "WTT"), "dim_level": (80, "P1")}),
        },
        "models": {
            "water-quality": {  # as gateway.detect's Detector.stats() reports a model
                "model": "water-quality@1.0.0",
                "version": "1.0.0",
                "sha256": "ab" * 32,
                "mode": "active",
                "category": "water-quality",
                "threshold": 0.3,
                "rows_scored": 1234,
                "rows_flagged": 17,
                "events": 2,
                "scores": {"n": 100, "mean": 0.05, "p50": 0.03, "p95": 0.2, "p99": 0.4},
                "us_per_row": 6.3,
                "load_ms": 4.1,
            }
        },
        "warnings": [
            {"ts": time.time(), "level": "warning", "msg": "frame CRC mismatch", "device": "wq-1"}
        ],
        "readings": {"in": 1234, "out": 1200},
    }


async def wait_until(cond: Callable[[], bool], within: float = 5.0) -> None:
    """Wait for a condition the code under test makes true, checking at each loop turn."""
    async with asyncio.timeout(within):
        while not cond():  # noqa: ASYNC110 - the server's counters have no event to await
            await asyncio.sleep(0.01)
