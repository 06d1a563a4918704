"""Data minimisation on the whole BLE counter path: passers-by's phones (one of them sending
junk under the counters' own company id) and another site's counter are on the air next to a
configured counter; the gateway publishes counts only, and no address of anything it does not
serve appears in its readings, twin state, status, logs or the MQTT feed."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bumble.device import AdvertisingType

from edge_node import ble_payload as bp
from gateway.app import Gateway
from gateway.broker import MosquittoProcess
from gateway.config import load_site
from gateway.sources.ble_adv import ScannerHub
from gateway.testing import FeedRecorder, Received
from hil_tests.emulators.ble import BleRadio
from hil_tests.emulators.bleak_bumble import make_device

SITE = """
[gateway]
id = "gw-test"
site = "lab"
store = "store.db"
delta_interval = "0.2s"
[broker]
url = "{url}"
[api]
enabled = false
[[assets]]
id = "ped-1"
category = "pedestrian-counter"
location = [4.9, 52.37]
source = "ble-adv:counter-0007"
profile = "counter-ble-adv"
"""
BASE = "twinedge/v1/lab/gw-test"
SPOOF_ADDRESS = "CF:00:AB:CD:EF:5A"


@pytest.fixture
async def radio() -> AsyncIterator[BleRadio]:
    async with BleRadio(adv_interval_ms=50.0) as r:
        yield r


async def add_spoofing_phone(radio: BleRadio) -> None:
    """A phone app advertising junk under the counters' company id (0xFFFF)."""
    device, _controller = make_device("spoof", SPOOF_ADDRESS, radio.link)
    await device.power_on()
    junk = bp.ad_structure(bp.AD_MANUFACTURER, b"\xff\xff" + b"\x54\x11" + b"\x00" * 14)
    await device.start_advertising(
        advertising_type=AdvertisingType.UNDIRECTED_SCANNABLE,
        advertising_data=bp.ad_structure(bp.AD_FLAGS, b"\x06") + junk,
        advertising_interval_min=50.0,
        advertising_interval_max=50.0,
    )


def count_rows(got: list[Received]) -> list[list[object]]:
    return [row for r in got if r.doc.get("kind") == "readings" for row in r.doc["rows"]]


def forms(address: str) -> list[str]:
    """The ways an address could be written: with and without separators, any case."""
    bare = address.replace(":", "")
    return [address.upper(), address.lower(), bare.upper(), bare.lower()]


async def test_strangers_never_leave_the_gateway(
    radio: BleRadio, broker: MosquittoProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="twinedge")
    phone = await radio.add_phone()
    await add_spoofing_phone(radio)
    other_site = await radio.add_counter(99, period=0.1)
    await radio.add_counter(7, period=0.1, busyness=3000)
    (tmp_path / "site.toml").write_text(SITE.format(url=broker.url), encoding="utf-8")
    site = load_site(tmp_path / "site.toml")
    strangers = [str(phone.random_address).split("/")[0], SPOOF_ADDRESS, other_site.address]
    async with (
        FeedRecorder(broker.url, f"{BASE}/#") as rec,
        Gateway(site, options=radio.options) as gw,
    ):
        key = (radio.scanner_backend, 0xFFFF)

        def heard_everyone(got: list[Received]) -> bool:
            hub = ScannerHub._hubs.get(key)  # created when the source opens
            return (
                hub is not None
                and sum(1 for row in count_rows(got) if row[2] == "count_in") >= 3
                and hub.unattributed_bad >= 1  # the spoofing phone's junk
                and hub.ignored >= 2  # the phone and the other site's counter
            )

        got = await rec.wait_for(heard_everyone)
        hub = ScannerHub._hubs[key]
        status = json.dumps(gw.status(), default=str)
        twin = json.dumps(gw.twins["ped-1"].snapshot(), default=str)
    rows = count_rows(got)
    assert {row[1] for row in rows} == {"ped-1"}  # no stranger became an asset
    assert {row[2] for row in rows} <= {"count_in", "count_out", "battery", "rssi"}  # counts only
    assert all(isinstance(row[3], int | float) for row in rows)
    logs = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("twinedge") and not r.name.startswith("twinedge.emulators")
    ]  # the gateway's own logs (the emulated radio logs its peers' addresses, as a radio does)
    assert logs
    texts = [status, twin, *logs, *(r.raw.decode() for r in rec.received)]
    for address in strangers:
        for form in forms(address):
            for text in texts:
                assert form not in text, f"{address} leaked"
    assert not hub.known.keys() & set(strangers)  # not even kept in memory
