"""The spine against a real mosquitto: birth, deltas and death; resend after a broker restart
with nothing lost and duplicates removable by key; the downlink applied and reported; bad
downlink refused while the gateway keeps running; the last will after kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.broker import MosquittoProcess, free_port, mosquitto
from gateway.config import Site, load_site
from gateway.testing import FeedRecorder, Received

SITE = """
[gateway]
id = "gw-test"
site = "lab"
store = "store.db"
delta_interval = "0.2s"
stale_after = "5s"
[broker]
url = "{url}"
protocol = "{protocol}"
[api]
enabled = false
[[assets]]
id = "wq-1"
category = "water-quality"
location = [4.9, 52.37]
source = "demo:water-quality?period={period}&seed=1"
[[assets]]
id = "light-1"
category = "streetlight"
location = [4.91, 52.37]
source = "demo:streetlight?period={period}&seed=2"
"""
BASE = "twinedge/v1/lab/gw-test"


def make_site(tmp_path: Path, url: str, protocol: str = "5", period: str = "0.1s") -> Site:
    path = tmp_path / "site.toml"
    path.write_text(SITE.format(url=url, protocol=protocol, period=period), encoding="utf-8")
    return load_site(path)


async def until(cond: Callable[[], bool], within: float = 20.0) -> None:
    """Wait for a condition on the gateway's own state (checked every 20 ms), with a timeout."""
    async with asyncio.timeout(within):
        while not cond():  # noqa: ASYNC110 - polls in-memory gateway state, bounded by the timeout
            await asyncio.sleep(0.02)


def kinds(received: list[Received], kind: str, topic: str | None = None) -> list[Received]:
    return [r for r in received if r.doc.get("kind") == kind and topic in (None, r.topic)]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_birth_deltas_readings_death(
    broker: MosquittoProcess, tmp_path: Path, protocol: str
) -> None:
    site = make_site(tmp_path, broker.url, protocol)
    async with FeedRecorder(broker.url, f"{BASE}/#", protocol=protocol) as rec:
        async with Gateway(site) as gw:
            await rec.wait_for(
                lambda got: (
                    len({r.doc["asset"] for r in kinds(got, "delta")}) == 2
                    and len(kinds(got, "readings")) >= 2
                )
            )
            session = gw.outbox.session
            # a consumer that subscribes late gets the retained birth and full twins at once
            async with FeedRecorder(broker.url, f"{BASE}/#", protocol=protocol) as late:
                await late.wait_for(lambda got: len(kinds(got, "twin")) == 2)
                assert late.received[0].doc["kind"] == "birth" and late.received[0].retain
                assert all(t.retain for t in kinds(late.received, "twin"))
        await rec.wait_for(lambda got: bool(kinds(got, "death")))
    got = rec.received
    assert got[0].doc["kind"] == "birth" and got[0].topic == f"{BASE}/status"
    assert got[0].doc["assets"] == {"wq-1": 0, "light-1": 0}
    twins = kinds(got, "twin")
    assert {t.topic for t in twins} == {f"{BASE}/twin/wq-1", f"{BASE}/twin/light-1"}
    for asset in ("wq-1", "light-1"):
        revs = [d.doc["revision"] for d in kinds(got, "delta", f"{BASE}/delta/{asset}")]
        assert revs == list(range(1, len(revs) + 1))  # every revision, in order, no gap
    rows = [row for r in kinds(got, "readings") for row in r.doc["rows"]]
    assert {row[1] for row in rows} == {"wq-1", "light-1"}
    assert {row[4] for row in rows if row[2] == "temperature"} == {"CEL"}
    assert all(r.doc["session"] == session and r.doc["key"] for r in got)
    # the model scoring each asset, with its recent score distribution, is in the twin
    model = twins[0].doc["twin"].get("model") or {}
    assert model.get("model", "").split("@")[0] in ("water-quality", "streetlight")
    death = kinds(got, "death")[-1]
    assert death.doc["reason"] == "stopped" and death.topic == f"{BASE}/status"


@asynccontextmanager
async def persistent_broker(tmp_path: Path) -> AsyncIterator[MosquittoProcess]:
    (tmp_path / "mq").mkdir()
    extra = f"persistence true\npersistence_location {tmp_path / 'mq'}/\n"
    async with mosquitto(free_port(), extra=extra) as proc:
        yield proc


async def test_broker_restart_resends_without_loss(tmp_path: Path) -> None:
    async with persistent_broker(tmp_path) as broker:
        site = make_site(tmp_path, broker.url, period="0.05s")
        ledger = dict(identifier="ledger", persistent=True)
        feed = f"{BASE}/#"
        async with Gateway(site) as gw:
            async with FeedRecorder(broker.url, feed, **ledger) as rec1:
                await rec1.wait_for(lambda _g: len(rec1.reading_seqs()) >= 50)
                await broker.stop()
                await until(lambda: rec1.disconnected)
            backlog_from = gw.outbox.rows
            await until(lambda: gw.outbox.rows >= backlog_from + 100)  # buffering while down
            assert gw.status()["uplink"]["state"] != "connected"
            target = gw.outbox.next_seq - 1  # every reading and event committed so far
            await broker.start()
            committed = set(range(1, target + 1))
            async with FeedRecorder(broker.url, feed, **ledger) as rec2:
                # nothing committed is lost: every seq arrives, before or after the outage
                # (the uplink reconnects with exponential backoff: allow for a few steps of it)
                await rec2.wait_for(
                    lambda _g: committed <= set(rec1.seqs() + rec2.seqs()), within=40
                )
    by_seq: dict[int, list[object]] = {}
    for r in rec1.of("readings") + rec2.of("readings"):
        for row in r.doc["rows"]:
            assert by_seq.setdefault(row[0], row) == row  # a resend carries the same content
    assert gw.uplink is not None and gw.uplink.reconnects >= 1


async def test_downlink_desired_applied_and_reported(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    site = make_site(tmp_path, broker.url)
    async with FeedRecorder(broker.url, f"{BASE}/#") as rec, Gateway(site) as gw:
        await rec.wait_for(lambda got: bool(kinds(got, "delta")))
        desired = {"v": 1, "id": "d-1", "period": "0.5s", "thresholds": {"water-quality": 0.9}}
        await rec.publish(f"{BASE}/desired/wq-1", json.dumps(desired))
        got = await rec.wait_for(lambda got: bool(kinds(got, "applied")))
        applied = kinds(got, "applied")[0]
        assert applied.topic == f"{BASE}/applied/wq-1"
        assert applied.doc["ok"] is True and applied.doc["desired_id"] == "d-1"
        assert applied.doc["config"]["period"] == 0.5
        assert applied.doc["config"]["thresholds"] == {"water-quality": 0.9}
        await rec.wait_for(
            lambda got: any(
                d.doc["patch"].get("config", {}).get("period") == 0.5
                for d in kinds(got, "delta", f"{BASE}/delta/wq-1")
            )
        )
        source = gw.sources["wq-1"]
        assert getattr(source, "period", None) == 0.5  # the device samples at the new period


async def test_bad_downlink_refused_gateway_keeps_running(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    site = make_site(tmp_path, broker.url)
    async with FeedRecorder(broker.url, f"{BASE}/#") as rec, Gateway(site) as gw:
        await rec.wait_for(lambda got: bool(kinds(got, "readings")))
        await rec.publish(f"{BASE}/desired/wq-1", b"\xff\xfe not json")
        await rec.publish(f"{BASE}/desired/wq-1", "[1, 2]")
        await rec.publish(f"{BASE}/desired/wq-1", json.dumps({"v": 1, "period": "1s"}))  # no id
        await rec.publish(f"{BASE}/desired/nope", json.dumps({"v": 1, "id": "x"}))
        await rec.publish(f"{BASE}/desired/wq-1", b"{" + b" " * 70_000 + b"}")  # oversized
        bad = {"v": 1, "id": "d-bad", "period": "fast", "thresholds": {"x": "high"}}
        await rec.publish(f"{BASE}/desired/wq-1", json.dumps(bad))
        got = await rec.wait_for(lambda got: bool(kinds(got, "applied")))
        applied = kinds(got, "applied")[0].doc
        assert applied["ok"] is False and applied["desired_id"] == "d-bad"
        assert any("period" in e for e in applied["errors"])
        assert any("thresholds.x" in e for e in applied["errors"])
        assert gw.status()["downlink"]["refused"] == 5
        seen = len(kinds(rec.received, "readings"))
        await rec.wait_for(lambda got: len(kinds(got, "readings")) > seen + 2)  # still flowing
        assert gw.twins["wq-1"].config["period"] == 0.1  # nothing bad was applied


async def test_kill9_leaves_death_by_will_and_restart_continues(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    site = make_site(tmp_path, broker.url)
    cmd = [sys.executable, "-m", "gateway.cli", "run", str(site.file)]
    async with FeedRecorder(broker.url, f"{BASE}/#") as rec:
        proc = await asyncio.create_subprocess_exec(*cmd)
        try:
            got = await rec.wait_for(lambda got: len(kinds(got, "delta")) >= 6)
            revs_before = max(d.doc["revision"] for d in kinds(got, "delta"))
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
            await rec.wait_for(lambda got: bool(kinds(got, "death")))
            assert kinds(rec.received, "death")[0].doc["reason"] == "lost"
            proc = await asyncio.create_subprocess_exec(*cmd)
            n = len(kinds(rec.received, "birth"))
            got = await rec.wait_for(lambda got: len(kinds(got, "birth")) > n)
            births = kinds(got, "birth")
            assert births[-1].doc["boot"] == births[0].doc["boot"] + 1
            assert births[-1].doc["session"] == births[0].doc["session"]  # same store
            assert max(births[-1].doc["assets"].values()) >= revs_before - 1
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                async with asyncio.timeout(20):
                    await proc.wait()
    assert proc.returncode == 0  # SIGTERM is a clean stop
