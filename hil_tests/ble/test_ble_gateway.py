"""BLE devices through the whole gateway to a real mosquitto: emulated streetlight and counter ->
bleak -> sources -> outbox -> twins -> MQTT feed; a signed dim command goes back to the lamp."""

from __future__ import annotations

import json
import time
from pathlib import Path

from gateway.app import Gateway
from gateway.broker import MosquittoProcess
from gateway.config import load_site
from gateway.security import load_private_key, new_key_pair, sign
from gateway.testing import FeedRecorder, Received
from hil_tests.emulators.ble import BleRadio

SITE = """
[gateway]
id = "gw-ble"
site = "lab"
store = "store.db"
delta_interval = "0.2s"
[broker]
url = "{url}"
[api]
enabled = false
[security]
trusted_keys = ["ops.pub"]
[[assets]]
id = "light-1"
category = "streetlight"
location = [4.91, 52.37]
profile = "streetlight-ble"
source = "ble:{light}"
[[assets]]
id = "ped-7"
category = "pedestrian-counter"
location = [4.92, 52.37]
profile = "counter-ble-adv"
source = "ble-adv:counter-0007"
"""
BASE = "twinedge/v1/lab/gw-ble"


def rows(got: list[Received], asset: str, quantity: str) -> list[list[object]]:
    return [
        row
        for r in got
        if r.doc.get("kind") == "readings"
        for row in r.doc["rows"]
        if row[1] == asset and row[2] == quantity
    ]


async def test_ble_devices_reach_the_feed_and_take_commands(
    broker: MosquittoProcess, radio: BleRadio, tmp_path: Path
) -> None:
    light = await radio.add_streetlight("light-01", period=0.2)
    await radio.add_counter(7, period=0.2, busyness=3000)
    await radio.add_phone()
    private, public = new_key_pair()
    (tmp_path / "ops.pub").write_bytes(public)
    (tmp_path / "ops.key").write_bytes(private)
    text = SITE.format(url=broker.url, light=light.address)
    (tmp_path / "site.toml").write_text(text, encoding="utf-8")
    site = load_site(tmp_path / "site.toml")
    ops = load_private_key(tmp_path / "ops.key")
    topic = f"{BASE}/command/light-1"
    cmd = {"v": 1, "id": "c-dim", "command": "dim", "args": {"level": 30}}
    async with (
        FeedRecorder(broker.url, f"{BASE}/#") as rec,
        Gateway(site, options=radio.options) as gw,
    ):
        got = await rec.wait_for(
            lambda got: (
                bool(rows(got, "light-1", "voltage")) and bool(rows(got, "ped-7", "count_in"))
            )
        )
        volts = rows(got, "light-1", "voltage")[0]
        assert volts[4] == "VLT" and 200 < float(volts[3]) < 250  # type: ignore[arg-type]
        assert rows(got, "ped-7", "count_in")[0][4] == "IE"
        await rec.publish(topic, json.dumps(sign(cmd, ops, aud=topic, exp=time.time() + 60)))
        got = await rec.wait_for(
            lambda got: any(
                r.doc.get("kind") == "applied" and r.doc.get("desired_id") == "c-dim" for r in got
            )
        )
        applied = next(r.doc for r in got if r.doc.get("desired_id") == "c-dim")
        assert applied["ok"] is True, applied
        assert ("dim_level", 30) in light.writes
        assets = {r.doc.get("asset") for r in got if r.doc.get("kind") == "delta"}
        assert assets <= {"light-1", "ped-7"}  # the phone never became an asset
        assert gw.contexts["ped-7"].counters.frames_ok > 0
