"""A Modbus sonde through the whole gateway to a real mosquitto: emulated sonde -> pymodbus client
-> Modbus source -> outbox -> twin -> MQTT feed; then the adapter is unplugged and plugged back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.app import Gateway
from gateway.broker import MosquittoProcess
from gateway.config import load_site
from gateway.testing import FeedRecorder, Received
from hil_tests.emulators.modbus_sonde import ModbusSonde

SITE = """
[gateway]
id = "gw-modbus"
site = "lab"
store = "store.db"
delta_interval = "0.2s"
[broker]
url = "{url}"
[api]
enabled = false
[[assets]]
id = "river-1"
category = "water-quality"
location = [4.90, 52.37]
profile = "sonde-modbus"
source = "modbus:{port}?period=200ms&timeout=300ms&retries=0&backoff_max=1s"
stale_after = "1s"
"""
BASE = "twinedge/v1/lab/gw-modbus"
UNITS = {
    "temperature": "CEL",
    "ph": "C62",
    "conductivity": "G42",
    "dissolved_oxygen": "M1",
    "turbidity": "NTU",
    "orp": "2Z",
}


def rows(got: list[Received], quantity: str) -> list[list[Any]]:
    return [
        row
        for r in got
        if r.doc.get("kind") == "readings"
        for row in r.doc["rows"]
        if row[1] == "river-1" and row[2] == quantity
    ]


def patches(got: list[Received]) -> list[dict[str, Any]]:
    return [r.doc["patch"] for r in got if r.doc.get("kind") == "delta"]


def went(online: bool) -> Any:
    def check(got: list[Received]) -> bool:
        return any(p.get("liveness", {}).get("online") is online for p in patches(got))

    return check


def reconnected(got: list[Received]) -> bool:
    return any(
        p.get("device", {}).get("counters", {}).get("reconnects", 0) >= 1 for p in patches(got)
    )


async def test_sonde_readings_reach_the_feed_and_liveness_follows_the_line(
    broker: MosquittoProcess, sonde: ModbusSonde, tmp_path: Path
) -> None:
    sonde.overrides = {"ph": 14.6}  # out of range: must arrive flagged, not dropped
    path = tmp_path / "site.toml"
    path.write_text(SITE.format(url=broker.url, port=sonde.port_path), encoding="utf-8")
    site = load_site(path)
    async with FeedRecorder(broker.url, f"{BASE}/#") as rec, Gateway(site) as gw:
        got = await rec.wait_for(lambda got: all(rows(got, q) for q in UNITS))
        for quantity, unit in UNITS.items():
            row = rows(got, quantity)[0]
            assert row[4] == unit
            assert row[7] == ("suspect" if quantity == "ph" else "good"), row
        assert rows(got, "ph")[0][3] == 14.6
        assert 0 < rows(got, "conductivity")[0][3] < 100000

        rec.received.clear()
        sonde.vanish()  # the twin goes offline and the reopen attempts show in its counters
        await rec.wait_for(lambda got: went(online=False)(got) and reconnected(got))

        rec.received.clear()
        sonde.reappear()
        await rec.wait_for(lambda got: went(online=True)(got) and bool(rows(got, "temperature")))
        assert gw.contexts["river-1"].counters.frames_ok > 0
