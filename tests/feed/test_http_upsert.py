"""HTTP batch upsert to a local aiohttp server that behaves like an NGSI-LD context broker
(accepts, answers 207, rejects with 4xx, fails with 5xx, hangs past the timeout), fed by the
real SQLite outbox."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.outbox import Outbox
from gateway.readings import Quality, Reading
from gateway.sync import messages as m
from gateway.sync.http_upsert import HttpUpsert
from gateway.sync.ngsi_ld import NgsiProjection
from gateway.sync.schemas import sdm_validator
from gateway.testing import ContextBroker, context_broker

from .conftest import T0


@pytest.fixture
async def ngsi() -> AsyncIterator[tuple[ContextBroker, str]]:
    async with context_broker() as served:
        yield served


def readings(asset: str, n: int, t0: float = T0) -> list[Reading]:
    out = []
    for i in range(n):
        for q, v, u in (("temperature", 12.0 + i, "CEL"), ("ph", 7.0, "C62")):
            out.append(Reading(asset, q, v, u, t0 + i + 0.1, t0 + i, Quality.GOOD))
    return out


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    async with Outbox(tmp_path / "outbox.db") as box:
        yield box


def projection(twins: dict[str, dict[str, Any]], form: Any = "normalized") -> NgsiProjection:
    proj = NgsiProjection("dublin", form)
    for twin in twins.values():
        proj.remember(twin)
    return proj


async def test_delivers_rows_and_twins_then_acks(
    ngsi: tuple[ContextBroker, str], outbox: Outbox, twins: dict[str, dict[str, Any]]
) -> None:
    broker, url = ngsi
    anomaly = {
        "type": "anomaly",
        "asset": "wq-1",
        "quantities": ["turbidity"],
        "score": 0.9,
        "threshold": 0.8,
        "model": "water-quality@1.0.0",
        "detected_at": T0,
        "observed_at": T0,
        "state": "start",
    }
    await outbox.append(readings("wq-1", 3, T0 - 10), [("wq-1", anomaly)])
    wq_id = "urn:ngsi-ld:WaterQualityObserved:dublin:wq-1"
    async with HttpUpsert(outbox, projection(twins), url) as up:
        up.submit(m.twin("gw-1", "s-1", T0, "wq-1", 12, twins["water-quality"]))
        await broker.until(lambda: len(broker.entities) == 3)
        async with asyncio.timeout(10):
            await up.drained()
    assert await outbox.peek(0, 1000) == []
    assert up.counters.acked_batches == 2  # one batch of 6 readings, one event
    assert up.counters.dead_letters == 0
    # three observation times of one asset: never twice in one request, sent in order, and the
    # twin's newer state last
    posted = [
        e["temperature"]["value"] for _, body in broker.requests for e in body if e["id"] == wq_id
    ]
    assert posted in ([12.0, 13.0, 14.0, 12.3], [12.3, 12.0, 13.0, 14.0, 12.3])
    assert broker.entities[wq_id]["temperature"]["observedAt"] == "2025-11-21T04:40:00.000Z"
    assert {ct for ct, _ in broker.requests} == {"application/ld+json"}
    assert set(broker.entities) == {
        wq_id,
        "urn:ngsi-ld:Device:dublin:wq-1",
        "urn:ngsi-ld:Anomaly:dublin:wq-1:1763700000000",
    }
    assert broker.entities[wq_id]["pH"]["unitCode"] == "C62"


async def test_nothing_is_lost_while_the_broker_fails(
    ngsi: tuple[ContextBroker, str], outbox: Outbox, twins: dict[str, dict[str, Any]]
) -> None:
    broker, url = ngsi
    broker.script = ["500", "hang", "503", "429"]
    await outbox.append(readings("pc-3", 1) + readings("wq-1", 1))
    async with HttpUpsert(
        outbox, projection(twins, "keyValues"), url, timeout=0.3, backoff=0.01
    ) as up:
        await broker.until(lambda: len(broker.entities) == 1)
        async with asyncio.timeout(10):
            await up.drained()
    assert await outbox.peek(0, 1000) == []
    assert up.counters.retries == 4
    # the same rows were kept and sent again after every failure
    bodies = [body for _, body in broker.requests]
    assert len(bodies) == 5 and all(b == bodies[0] for b in bodies)
    assert up.counters.dead_letters == 0
    (ent,) = broker.entities.values()
    assert ent["temperature"] == 12.0 and ent["pH"] == 7.0
    assert sdm_validator("WaterQualityObserved").is_valid(
        {**ent, "location": {"type": "Point", "coordinates": [0, 0]}}
    )
    assert all(ct == "application/json" for ct, _ in broker.requests)


async def test_refused_entities_are_dead_lettered_and_counted(
    ngsi: tuple[ContextBroker, str],
    outbox: Outbox,
    twins: dict[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    broker, url = ngsi
    broker.script = ["400"]  # the first observation is refused, the second accepted
    dead = tmp_path / "dead.jsonl"
    await outbox.append(readings("wq-1", 2))
    async with HttpUpsert(outbox, projection(twins), url, dead_letter_file=dead) as up:
        async with asyncio.timeout(10):
            await up.drained()
        broker.script = ["207"]  # the Streetlight entity refused, its Device accepted
        up.submit(m.twin("gw-1", "s-1", T0, "sl-7", 12, twins["streetlight"]))
        await broker.until(lambda: len(broker.entities) == 2)
        async with asyncio.timeout(10):
            await up.drained()
    assert up.counters.dead_letters == 2
    assert up.counters.acked_batches == 1
    assert await outbox.peek(0, 1000) == []
    lines = [json.loads(x) for x in dead.read_text().splitlines()]
    assert [(d["status"], d["entity"]["type"]) for d in lines] == [
        (400, "WaterQualityObserved"),
        (207, "Streetlight"),
    ]
    assert lines[0]["entity"]["temperature"]["value"] == 12.0
    wq = broker.entities["urn:ngsi-ld:WaterQualityObserved:dublin:wq-1"]
    assert wq["temperature"]["value"] == 13.0
    assert "urn:ngsi-ld:Device:dublin:sl-7" in broker.entities


async def test_config_keys_are_checked(outbox: Outbox, twins: dict[str, dict[str, Any]]) -> None:
    proj = projection(twins)
    up = HttpUpsert.from_config(outbox, proj, {"url": "http://orion:1026/", "tenant": "lab"})
    assert up.endpoint == "http://orion:1026/ngsi-ld/v1/entityOperations/upsert?options=update"
    assert up.headers == {"NGSILD-Tenant": "lab"}
    for table, key in [
        ({}, "projection.url"),
        ({"url": "orion:1026"}, "projection.url"),
        ({"url": "http://o", "timeout": 0}, "projection.timeout"),
        ({"url": "http://o", "batch": "many"}, "projection.batch"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(f"site.toml: {key}")):
            HttpUpsert.from_config(outbox, proj, table)
