"""The projection chosen in the site file, delivered by a running gateway: NGSI-LD entities on
MQTT beside the native feed, and NGSI-LD by HTTP batch upsert to a context broker that fails
for a while (the outbox holds everything until it answers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.broker import MosquittoProcess
from gateway.config import load_site
from gateway.errors import ConfigError
from gateway.sync.schemas import sdm_validator
from gateway.testing import FeedRecorder, Received, context_broker

ASSETS = """
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
"""
HEAD = """
[gateway]
id = "gw-proj"
site = "lab"
store = "store.db"
delta_interval = "0.2s"
[api]
enabled = false
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(HEAD + text + ASSETS, encoding="utf-8")
    return path


async def test_ngsi_ld_on_mqtt_beside_the_native_feed(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    site = load_site(write(tmp_path, f"""
[broker]
url = "{broker.url}"
[projection]
kind = "ngsi-ld"
form = "keyValues"
"""))  # fmt: skip

    def types(got: list[Received]) -> set[str]:
        return {r.doc.get("type", "") for r in got}

    async with (
        FeedRecorder(broker.url, "twinedge/ngsi-ld/v1/#") as ngsi,
        FeedRecorder(broker.url, "twinedge/v1/#") as native,
        Gateway(site),
    ):
        await ngsi.wait_for(lambda got: {"WaterQualityObserved", "Streetlight"} <= types(got))
        await native.wait_for(lambda got: any(r.doc["kind"] == "readings" for r in got))
    for r in ngsi.received:
        if r.doc["type"] in ("WaterQualityObserved", "Streetlight"):
            sdm_validator(r.doc["type"]).validate(r.doc)  # the official Smart Data Models schema
            assert r.doc["id"].startswith(f"urn:ngsi-ld:{r.doc['type']}:lab:")
            assert r.topic.startswith("twinedge/ngsi-ld/v1/lab/")


async def test_ngsi_ld_by_http_upsert_survives_a_failing_context_broker(tmp_path: Path) -> None:
    async with context_broker() as (cb, url):
        cb.script = ["503", "hang", "500"]  # down for a while, then fine
        site = load_site(write(tmp_path, f"""
[projection]
kind = "ngsi-ld"
form = "keyValues"
delivery = "http"
url = "{url}"
timeout = 1
"""))  # fmt: skip
        async with Gateway(site) as gw:
            await cb.until(
                lambda: (
                    any(e.get("type") == "WaterQualityObserved" for e in cb.entities.values())
                    and any(e.get("type") == "Streetlight" for e in cb.entities.values())
                ),
                within=30,
            )
            assert gw.http is not None
            await cb.until(lambda: gw.outbox.rows < 50, within=30)  # the backlog drains
        assert len(cb.requests) >= 4  # three refused, then accepted
    water = next(e for e in cb.entities.values() if e["type"] == "WaterQualityObserved")
    sdm_validator("WaterQualityObserved").validate(water)


def test_http_delivery_with_a_broker_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, """
[broker]
url = "mqtt://127.0.0.1:1883"
[projection]
kind = "ngsi-ld"
delivery = "http"
url = "http://127.0.0.1:9"
""")  # fmt: skip
    with pytest.raises(ConfigError) as err:
        load_site(path)
    assert err.value.key == "projection.delivery"
    bad = write(tmp_path, '[projection]\nkind = "ngsi-ld"\nfrom = "keyValues"\n')
    with pytest.raises(ConfigError, match=r"projection\.from"):
        load_site(bad)
