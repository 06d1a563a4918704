"""The water-quality firmware on the MicroPython unix port through the whole gateway (serial
source, outbox, twin, uplink) to a real mosquitto; a desired period change from the downlink
reaches the node and is stored on its flash."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.app import Gateway
from gateway.broker import MosquittoProcess
from gateway.config import load_site
from gateway.testing import FeedRecorder, Received
from hil_tests.firmware.mpnode import MicroPythonNode
from hil_tests.firmware.test_micropython_node import FAST, HW

SITE = """
[gateway]
id = "gw-fw"
site = "lab"
store = "store.db"
delta_interval = "0.2s"
stale_after = "5s"
[broker]
url = "{url}"
[api]
enabled = false
[[assets]]
id = "wq-7"
category = "water-quality"
location = [4.9, 52.37]
profile = "twinedge-water-node"
source = "serial:{port}"
"""
BASE = "twinedge/v1/lab/gw-fw"


def kinds(got: list[Received], kind: str) -> list[Received]:
    return [r for r in got if r.doc.get("kind") == kind]


def rows(got: list[Received]) -> list[list[object]]:
    return [row for r in kinds(got, "readings") for row in r.doc["rows"]]


async def test_firmware_readings_reach_the_feed_and_downlink_reaches_the_node(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    async with MicroPythonNode(config=FAST, hw=HW) as node:
        path = tmp_path / "site.toml"
        path.write_text(SITE.format(url=broker.url, port=node.path), encoding="utf-8")
        site = load_site(path)
        async with FeedRecorder(broker.url, f"{BASE}/#") as rec, Gateway(site):
            await rec.wait_for(lambda got: len({r[2] for r in rows(got)}) == 6)
            units = {r[2]: r[4] for r in rows(rec.received)}
            assert units == {
                "temperature": "CEL",
                "ph": "C62",
                "conductivity": "G42",
                "dissolved_oxygen": "M1",
                "turbidity": "NTU",
                "orp": "2Z",
            }
            ph = [r[3] for r in rows(rec.received) if r[2] == "ph"]
            assert all(abs(v - 7.0) < 0.01 for v in ph)  # type: ignore[operator]
            desired = {"v": 1, "id": "d-1", "period": "2s"}
            await rec.publish(f"{BASE}/desired/wq-7", json.dumps(desired))
            got = await rec.wait_for(lambda got: bool(kinds(got, "applied")))
            applied = kinds(got, "applied")[0].doc
            assert applied["ok"] is True, applied
            assert node.stored_config()["period_s"] == 2.0
