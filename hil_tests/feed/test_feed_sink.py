"""The reference consumer against a real mosquitto: publish what the gateway's builders build,
materialise it, answer a gap with a rebirth request, rebuild from retained messages, tail it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.broker import MosquittoProcess
from gateway.feed import TwinStore
from gateway.feed.consumer import Broker, run_sink
from gateway.sync import messages as m

T0 = 1763700000.0
TOPICS = m.Topics("twinedge/v1", "dublin", "gw-1")


def twin_state(rev: int, ph: float) -> dict[str, Any]:
    return {
        "id": "wq-1",
        "category": "water-quality",
        "revision": rev,
        "liveness": {"online": True, "last_seen": T0, "stale_after_s": 30.0},
        "state": {
            "ph": {
                "value": ph,
                "unit": "C62",
                "quality": "good",
                "observed_at": T0,
                "received_at": T0,
                "score": None,
            }
        },
    }


def rows(first: int, n: int) -> list[tuple[Any, ...]]:
    return [
        (s, "wq-1", "ph", 7.0, "C62", T0 + s, T0 + s, "good", None) for s in range(first, first + n)
    ]


@contextlib.asynccontextmanager
async def client(url: str) -> AsyncIterator[aiomqtt.Client]:
    b = Broker.parse(url)
    async with aiomqtt.Client(b.host, b.port, protocol=aiomqtt.ProtocolVersion.V5) as c:
        yield c


async def publish(c: aiomqtt.Client, topic: str, doc: dict[str, Any], retain: bool = False) -> None:
    await c.publish(topic, m.dumps(doc), qos=1, retain=retain)


@contextlib.asynccontextmanager
async def sink(
    url: str, db: Path, **kw: Any
) -> AsyncIterator[Callable[[Callable[[TwinStore], bool]], asyncio.Future[None]]]:
    """Run the sink; yields ``until(cond)``: a future done when ``cond(store)`` holds."""
    waits: list[tuple[Callable[[TwinStore], bool], asyncio.Future[None]]] = []

    def on_batch(store: TwinStore) -> None:
        for cond, fut in list(waits):
            if not fut.done() and cond(store):
                fut.set_result(None)

    def until(cond: Callable[[TwinStore], bool]) -> asyncio.Future[None]:
        fut = asyncio.get_running_loop().create_future()
        waits.append((cond, fut))
        return fut

    ready = asyncio.Event()
    task = asyncio.create_task(run_sink(url, db, on_batch=on_batch, ready=ready, **kw))
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        yield until
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_sink_materialises_dedupes_and_asks_for_rebirth(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    db = tmp_path / "feed.db"
    async with client(broker.url) as gw, sink(broker.url, db) as until:
        await gw.subscribe(TOPICS.rebirth, qos=1)
        await publish(
            gw,
            TOPICS.status,
            m.birth("gw-1", "s-1", 1, "dublin", T0, {"wq-1": 5}, {"v": "0.1"}),
            True,
        )
        await publish(
            gw, TOPICS.twin("wq-1"), m.twin("gw-1", "s-1", T0, "wq-1", 5, twin_state(5, 7.0)), True
        )
        batch = m.readings_batch("gw-1", "s-1", T0, rows(1, 50), False)
        await publish(gw, TOPICS.readings, batch)
        await publish(gw, TOPICS.readings, batch)  # a resend after a lost PUBACK
        await publish(gw, TOPICS.readings, m.readings_batch("gw-1", "s-1", T0, rows(40, 20), True))
        await publish(
            gw,
            TOPICS.delta("wq-1"),
            m.delta("gw-1", "s-1", T0, "wq-1", 6, {"state": {"ph": {"value": 7.1}}}),
        )
        await publish(
            gw,
            TOPICS.delta("wq-1"),
            m.delta("gw-1", "s-1", T0, "wq-1", 8, {"state": {"ph": {"value": 7.3}}}),
        )
        async with asyncio.timeout(10):
            await until(lambda s: s.counters.readings == 59 and s.counters.gaps == 1)
            request = await anext(gw.messages)
        assert request.topic.value == TOPICS.rebirth
        assert json.loads(request.payload) == {  # type: ignore[arg-type]
            "v": 1,
            "reason": "gap",
            "asset": "wq-1",
            "consumer": "twinedge-feed-sink",
            "got": 8,
            "have": 6,
        }
        # the gateway answers the rebirth with its full twin at revision 7; 8 then applies
        await publish(
            gw, TOPICS.twin("wq-1"), m.twin("gw-1", "s-1", T0, "wq-1", 7, twin_state(7, 7.2)), True
        )
        async with asyncio.timeout(10):
            await until(lambda s: (s.twin("gw-1", "wq-1") or (0,))[0] == 8)
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*), sum(backfill) FROM readings").fetchone() == (59, 9)
    rev, twin = con.execute("SELECT revision, twin FROM twins").fetchone()
    assert rev == 8 and json.loads(twin)["state"]["ph"]["value"] == 7.3


async def test_a_new_sink_rebuilds_from_retained_messages(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    async with client(broker.url) as gw:
        await publish(
            gw, TOPICS.status, m.birth("gw-1", "s-1", 3, "dublin", T0, {"wq-1": 9}, {}), True
        )
        await publish(
            gw, TOPICS.twin("wq-1"), m.twin("gw-1", "s-1", T0, "wq-1", 9, twin_state(9, 6.8)), True
        )
    async with sink(broker.url, tmp_path / "fresh.db") as until, asyncio.timeout(10):
        await until(lambda s: s.twin("gw-1", "wq-1") is not None)
    con = sqlite3.connect(tmp_path / "fresh.db")
    assert con.execute("SELECT revision FROM twins").fetchone() == (9,)
    assert con.execute("SELECT session, boot, online FROM gateways").fetchone() == ("s-1", 3, 1)


async def test_bad_messages_are_counted_not_fatal(broker: MosquittoProcess, tmp_path: Path) -> None:
    async with client(broker.url) as gw, sink(broker.url, tmp_path / "s.db") as until:
        await gw.publish(TOPICS.readings, b"\xff garbage", qos=1)
        await gw.publish(TOPICS.delta("wq-1"), b'{"v": 1, "kind": "delta"}', qos=1)
        await publish(gw, TOPICS.readings, m.readings_batch("gw-1", "s-1", T0, rows(1, 3), False))
        async with asyncio.timeout(10):
            await until(lambda s: s.counters.readings == 3)


@pytest.mark.slow
async def test_feed_tail_command_prints_the_feed(broker: MosquittoProcess) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "feed",
        "tail",
        "--broker",
        broker.url,
        "--count",
        "2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with client(broker.url) as gw, asyncio.timeout(20):
            # retained, so the tail sees it whenever it subscribes
            await publish(
                gw, TOPICS.status, m.birth("gw-1", "s-1", 1, "dublin", T0, {"wq-1": 1}, {}), True
            )
            await publish(
                gw,
                TOPICS.twin("wq-1"),
                m.twin("gw-1", "s-1", T0, "wq-1", 1, twin_state(1, 7.0)),
                True,
            )
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert len(lines) == 2
    assert any("dublin/gw-1 birth" in line and "boot 1, 1 assets" in line for line in lines)
    assert any("twin" in line and "wq-1 r1 ph=7" in line for line in lines)


async def test_sink_reconnects_after_a_broker_restart(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    async with sink(broker.url, tmp_path / "s.db") as until:
        async with client(broker.url) as gw:
            await publish(
                gw, TOPICS.readings, m.readings_batch("gw-1", "s-1", T0, rows(1, 5), False)
            )
            async with asyncio.timeout(10):
                await until(lambda s: s.counters.readings == 5)
        await broker.stop()
        await broker.start()
        # the sink resubscribes by itself; publish until a batch sent after the restart lands
        async with client(broker.url) as gw, asyncio.timeout(20):
            landed = until(lambda s: s.counters.readings >= 10)
            first = 6
            while not landed.done():
                batch = m.readings_batch("gw-1", "s-1", T0, rows(first, 5), False)
                await publish(gw, TOPICS.readings, batch)
                first += 5
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):  # republish if it was not subscribed yet
                        await asyncio.shield(landed)


async def test_feed_sink_command_materialises_and_stops_cleanly(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    db = tmp_path / "cli.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "-v",
        "feed",
        "sink",
        "--broker",
        broker.url,
        "--db",
        str(db),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(20):
            while b"subscribed to" not in await proc.stderr.readline():
                pass
        async with client(broker.url) as gw, asyncio.timeout(20):
            await gw.subscribe(TOPICS.rebirth, qos=1)
            await publish(
                gw, TOPICS.readings, m.readings_batch("gw-1", "s-1", T0, rows(1, 7), False)
            )
            # a delta for an asset it has no twin for: the sink asks for a rebirth, which it
            # does only after committing everything before it
            await publish(gw, TOPICS.delta("wq-1"), m.delta("gw-1", "s-1", T0, "wq-1", 4, {}))
            request = await anext(gw.messages)
        assert json.loads(request.payload)["reason"] == "unknown-asset"  # type: ignore[arg-type]
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            assert await proc.wait() == 130
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM readings").fetchone() == (7,)


async def test_feed_sink_command_refuses_a_bad_broker_url(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "feed",
        "sink",
        "--broker",
        "http://x",
        "--db",
        str(tmp_path / "x.db"),
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await proc.communicate()
    assert proc.returncode == 2
    assert "--broker: expected a URL such as mqtt://127.0.0.1:1883" in err.decode()


async def test_a_sink_per_group_of_sites(broker: MosquittoProcess, tmp_path: Path) -> None:
    cork = m.Topics("twinedge/v1", "cork", "gw-9")
    db = tmp_path / "dublin.db"
    async with client(broker.url) as gw, sink(broker.url, db, sites=["dublin"]) as until:
        await publish(gw, cork.readings, m.readings_batch("gw-9", "s-9", T0, rows(1, 4), False))
        await publish(gw, TOPICS.readings, m.readings_batch("gw-1", "s-1", T0, rows(1, 3), False))
        async with asyncio.timeout(10):
            await until(lambda s: s.counters.readings == 3)
    con = sqlite3.connect(db)
    assert con.execute("SELECT DISTINCT gateway FROM readings").fetchall() == [("gw-1",)]
