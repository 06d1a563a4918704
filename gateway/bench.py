"""``twinedge bench pipeline``: readings through every stage of the gateway, measured.

Stages, all the real code: wire frames (edge_node.protocol, as a serial node sends them) are
split and decoded into Readings, scored (``--score model`` runs the shipped ONNX models through
:class:`gateway.detect.Detector`; ``--score none`` skips the stage and says so), committed to the
SQLite outbox, published as QoS 1 batches by the uplink to a real mosquitto and deleted after the
PUBACK. Two phases: throughput (as fast as the pipeline drains, backlog bounded) and latency (a
paced load, reading-to-PUBACK p50/p99). The process is pinned to one core, the broker to another
where there is one. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import os
import platform
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from gateway.config import BrokerConfig
from gateway.outbox import Outbox
from gateway.readings import Reading
from gateway.sync.messages import Topics
from gateway.sync.uplink import Uplink

__all__ = ["run_pipeline"]

QUANTITIES = (
    ("temperature", "CEL", 12.5),
    ("ph", "C62", 7.2),
    ("conductivity", "G42", 512.0),
    ("dissolved_oxygen", "M1", 8.4),
    ("turbidity", "NTU", 3.2),
    ("orp", "2Z", 210.0),
)
UNIT = {q: u for q, u, _v in QUANTITIES}
NODES = 20


def make_frames(n_frames: int, t0: float) -> list[bytes]:
    """Readings frames of 20 water-quality nodes, each with 6 values, as bytes on the wire."""
    from edge_node import protocol

    frames = []
    for i in range(n_frames):
        values = [(q, v + (i % 97) * 0.01) for q, _u, v in QUANTITIES]
        msg = {
            "type": "readings",
            "node": f"wq-{i % NODES:02d}",
            "seq": i // NODES + 1,
            "time": t0 + i * 0.001,
            "values": values,
        }
        frames.append(protocol.encode(msg))
    return frames


class Pipeline:
    """decode → score → outbox → uplink, with per-stage CPU accounting."""

    def __init__(self, outbox: Outbox, uplink: Uplink, detector: Any) -> None:
        from edge_node import protocol

        self.protocol = protocol
        self.splitter = protocol.FrameSplitter()
        self.outbox, self.uplink, self.detector = outbox, uplink, detector
        self.cpu = {"decode": 0.0, "score": 0.0, "store": 0.0}
        self.readings = 0

    def decode(self, data: bytes) -> list[Reading]:
        now = time.time()
        out = []
        for frame in self.splitter.feed(data):
            msg = self.protocol.decode(frame)
            node, seq, t = msg["node"], msg["seq"], msg.get("time")
            for name, value in msg["values"]:
                out.append(Reading(node, name, value, UNIT[name], now, t, device=node, seq=seq))
        return out

    async def push(self, data: bytes) -> None:
        c0 = time.thread_time()
        batch = self.decode(data)
        c1 = time.thread_time()
        if self.detector is not None:
            self.detector.score(batch)
        c2 = time.thread_time()
        await self.outbox.append(batch)
        self.cpu["decode"] += c1 - c0
        self.cpu["score"] += c2 - c1
        self.readings += len(batch)
        self.uplink.notify()


def _pin(pid: int, core: int) -> bool:
    try:
        os.sched_setaffinity(pid, {core})
    except (AttributeError, OSError):
        return False
    return True


@asynccontextmanager
async def _stack(broker_url: str | None, sync: str, score: str) -> AsyncIterator[Pipeline]:
    from gateway import broker as brokers

    async with AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="twinedge-bench-")))
        if broker_url is None:
            proc = await stack.enter_async_context(brokers.mosquitto())
            if (os.cpu_count() or 1) > 1:
                _pin(proc.proc.pid, 1)
            broker_url = proc.url
        host, _, port = broker_url.removeprefix("mqtt://").partition(":")
        cfg = BrokerConfig(
            url=broker_url,
            host=host,
            port=int(port or 1883),
            tls=False,
            client_id=f"bench-{os.getpid()}",
            batch_max=1000,
            inflight=16,
        )
        outbox = await stack.enter_async_context(Outbox(tmp / "bench.db", synchronous=sync))
        uplink = await stack.enter_async_context(
            Uplink(
                cfg,
                Topics("twinedge-bench/v1", "bench", "gw"),
                outbox,
                gateway="gw",
                birth=list,
                death=lambda _r: b"{}",
                downlink=_ignore,
            )
        )
        await uplink.wait_connected()
        detector = None
        if score == "model":
            from gateway.detect import Detector
            from gateway.shipped import shipped_models

            models = shipped_models()
            assert models is not None, "no shipped models found"
            detector = Detector.load(models, {f"wq-{i:02d}": "water-quality" for i in range(NODES)})
        yield Pipeline(outbox, uplink, detector)


async def _ignore(_kind: str, _asset: str, _payload: bytes) -> None:
    return None


async def _drain(p: Pipeline, target: int) -> None:
    while p.uplink.published_rows < target or p.outbox.rows:  # noqa: ASYNC110
        await asyncio.sleep(0.001)  # a benchmark loop, not a test: poll the counters


async def throughput(
    p: Pipeline, frames: list[bytes], chunk: int, max_backlog: int
) -> dict[str, Any]:
    blobs = [b"".join(frames[i : i + chunk]) for i in range(0, len(frames), chunk)]
    total = len(frames) * len(QUANTITIES)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for blob in blobs:
        await p.push(blob)
        while p.outbox.rows > max_backlog:  # noqa: ASYNC110 - bounded backlog
            await asyncio.sleep(0.0005)
    await _drain(p, total)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    stats = p.uplink.stats()
    return {
        "readings": total,
        "seconds": round(wall, 3),
        "readings_per_s": round(total / wall),
        "cpu_us_per_reading": round(cpu / total * 1e6, 2),
        "cpu_cores_used": round(cpu / wall, 2),
        "stage_cpu_us_per_reading": {
            k: round(v / total * 1e6, 2) for k, v in p.cpu.items() if k != "store"
        },
        "bytes_per_reading": round(stats["published_bytes"] / total, 1),
        "messages": stats["published_messages"],
    }


async def paced(p: Pipeline, frames: list[bytes], rate: float, seconds: float) -> dict[str, Any]:
    """``rate`` readings/s in ticks of 10 ms for ``seconds``; reading-to-PUBACK latency."""
    p.uplink._latency_ms.clear()
    frames_per_s = rate / len(QUANTITIES)
    start = p.uplink.published_rows
    sent, i, owed, t0 = 0, 0, 0.0, time.perf_counter()
    loop = asyncio.get_running_loop()
    next_tick = loop.time()
    while time.perf_counter() - t0 < seconds:
        owed += frames_per_s * 0.01
        n, owed = int(owed), owed - int(owed)
        if n:
            await p.push(b"".join(frames[i : i + n]))
            i = (i + n) % (len(frames) - n)
            sent += n * len(QUANTITIES)
        next_tick += 0.01
        await asyncio.sleep(max(0.0, next_tick - loop.time()))
    await _drain(p, start + sent)
    lat = p.uplink.stats()["publish_latency_ms"]
    return {
        "rate_per_s": round(sent / seconds),
        "p50_latency_ms": lat["p50"],
        "p99_latency_ms": lat["p99"],
    }


async def run_pipeline(
    *, readings: int, sync: str, score: str, broker: str | None, rate: float, seconds: float
) -> dict[str, Any]:
    pinned = _pin(0, 0)
    frames = make_frames(max(1, readings // len(QUANTITIES)), time.time())
    async with _stack(broker, sync, score) as p:
        result = await throughput(p, frames, chunk=170, max_backlog=200_000)
        result.update(await paced(p, frames, rate, seconds))
    result.update(
        sync=sync,
        encoding="json",
        score=score,
        batch_max=1000,
        inflight=16,
        machine={
            "cpus": os.cpu_count(),
            "pinned_to_one_core": pinned,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    )
    return result
