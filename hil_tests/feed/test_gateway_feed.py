"""Every message a running gateway publishes validates against the feed's JSON Schemas, the
reference sink materialises the same twins the gateway holds, and the gateway's twins project
onto NGSI-LD entities that validate against the Smart Data Models schemas."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

from gateway.app import Gateway
from gateway.broker import MosquittoProcess
from gateway.config import load_site
from gateway.feed import TwinStore, decode
from gateway.feed.consumer import run_sink
from gateway.sync.ngsi_ld import NgsiProjection
from gateway.sync.schemas import UPLINK_KINDS, sdm_validator
from gateway.testing import FeedRecorder, Received

SITE = """
[gateway]
id = "gw-feed"
site = "lab"
store = "store.db"
delta_interval = "0.2s"
stale_after = "5s"
[broker]
url = "{url}"
[api]
enabled = false
[[assets]]
id = "wq-1"
category = "water-quality"
location = [4.9, 52.37]
source = "demo:water-quality?period=0.1s&seed=1"
[[assets]]
id = "light-1"
category = "streetlight"
location = [4.91, 52.37]
source = "demo:streetlight?period=0.1s&seed=2"
[[assets]]
id = "ped-1"
category = "pedestrian-counter"
location = [4.92, 52.37]
source = "demo:pedestrian-counter?period=0.1s&seed=3"
"""
BASE = "twinedge/v1/lab/gw-feed"
ASSETS = ("wq-1", "light-1", "ped-1")


def kinds(got: list[Received], kind: str) -> list[Received]:
    return [r for r in got if r.doc.get("kind") == kind]


async def test_every_published_message_validates_and_the_sink_agrees(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    (tmp_path / "site.toml").write_text(SITE.format(url=broker.url), encoding="utf-8")
    site = load_site(tmp_path / "site.toml")
    ready = asyncio.Event()
    sink_db = tmp_path / "sink.db"
    target: dict[str, int] = {}
    caught_up = asyncio.Event()

    def on_batch(store: TwinStore) -> None:
        if target and all((store.twin("gw-feed", x) or (-1,))[0] >= target[x] for x in ASSETS):
            caught_up.set()

    sink = asyncio.create_task(run_sink(broker.url, sink_db, ready=ready, on_batch=on_batch))
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        async with FeedRecorder(broker.url, f"{BASE}/#") as rec:
            async with Gateway(site) as gw:
                await rec.wait_for(
                    lambda got: (
                        {r.doc.get("asset") for r in kinds(got, "delta")} >= set(ASSETS)
                        and len(kinds(got, "readings")) >= 3
                    )
                )
                desired = {"v": 1, "id": "d-1", "period": "0.2s", "thresholds": {}}
                await rec.publish(f"{BASE}/desired/wq-1", json.dumps(desired))
                await rec.wait_for(lambda got: bool(kinds(got, "applied")))
                # the sink catches up with the revisions the gateway holds now
                target.update({x: gw.twins[x].revision for x in ASSETS})
                async with asyncio.timeout(20):
                    await caught_up.wait()
            await rec.wait_for(lambda got: bool(kinds(got, "death")))
    finally:
        sink.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sink
    seen = set()
    for r in rec.received:
        msg = decode(r.topic, r.raw, "full")  # raises FrameError naming the topic and field
        seen.add(msg.kind)
    assert seen >= {"birth", "twin", "delta", "readings", "applied", "death", "desired"}
    assert seen - {"desired"} <= set(UPLINK_KINDS)

    # NGSI-LD: the twins the sink materialised from the gateway's births and deltas project onto
    # entities that validate against the Smart Data Models schemas
    proj = NgsiProjection("lab", "keyValues")
    types = set()
    with TwinStore(sink_db) as store:
        twins = [twin for _gw, _asset, _rev, twin in store.twins()]
    assert {t["id"] for t in twins} == set(ASSETS)
    for twin in twins:
        proj.remember(twin)
        for ent in proj.twin_entities(twin):
            errors = [e.message for e in sdm_validator(ent["type"]).iter_errors(ent)]
            assert errors == [], (ent, errors)
            types.add(ent["type"])
    assert types == {"WaterQualityObserved", "Streetlight", "CrowdFlowObserved", "Device"}
    for r in kinds(rec.received, "delta") + kinds(rec.received, "readings"):
        for ent in proj.entities(r.doc):
            assert ent["id"].startswith(f"urn:ngsi-ld:{ent['type']}:lab:")
    anomalies = [ent for r in kinds(rec.received, "event") for ent in proj.entities(r.doc)]
    for ent in anomalies:
        assert ent["type"] == "Anomaly"
        assert [e.message for e in sdm_validator("Anomaly").iter_errors(ent)] == []
    active = [r for r in kinds(rec.received, "event") if r.doc["event"].get("mode") == "active"]
    assert len(anomalies) == len(active)
