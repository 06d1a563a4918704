"""BLE source logic without a radio: advert dedupe, gaps and wrap-around; config errors."""

from __future__ import annotations

import pytest
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from edge_node import ble_payload as bp
from gateway.errors import ConfigError, FrameError
from gateway.profiles import load_profile, parse_profile
from gateway.readings import Quality, Reading
from gateway.sources import SourceContext, open_source
from gateway.sources.ble_adv import BleAdvSource, ScannerHub
from gateway.sources.ble_gatt import BleGattSource, _command_value

COUNTER = load_profile("counter-ble-adv")
LIGHT = load_profile("streetlight-ble")


def advert(payload: bytes, company: int = bp.COMPANY_ID, rssi: int = -60) -> AdvertisementData:
    return AdvertisementData(None, {company: payload}, {}, [], None, rssi, ())


class Feed:
    """A ble-adv source wired to a hub that is fed adverts by hand (no scanner started)."""

    def __init__(self, node_id: int = 7) -> None:
        self.ctx = SourceContext(asset="c7", profile=COUNTER)
        self.src = open_source(f"ble-adv:{bp.device_id(node_id)}", self.ctx)
        assert isinstance(self.src, BleAdvSource)
        self.hub = ScannerHub(None, bp.COMPANY_ID)
        self.hub.subscribe(node_id, self.src._on_payload)
        self.dev = BLEDevice("C0:FF:EE:00:00:07", None, None)

    def send(self, boot: int, seq: int, cin: int, cout: int, battery: int = 80) -> None:
        payload = bp.encode_counter(7, boot, seq, cin, cout, battery, 0)
        self.hub._on_advert(self.dev, advert(payload))

    def readings(self) -> list[Reading]:
        out = []
        while not self.src.queue.empty():
            out.append(self.src.queue.get_nowait())
        return out


def by_quantity(readings: list[Reading], q: str) -> list[float]:
    return [r.value for r in readings if r.quantity == q]


def test_dedupe_gaps_and_wraparound() -> None:
    f = Feed()
    f.send(1, 65533, 65530, 10)
    first = f.readings()
    assert by_quantity(first, "count_in") == [] and by_quantity(first, "battery") == [80]
    f.send(1, 65533, 65530, 10)  # the SCAN_RSP copy
    f.send(1, 65534, 65535, 12)
    f.send(1, 1, 4, 15)  # 65535 and 0 missed; counts wrapped
    f.send(1, 65534, 65535, 12)  # a late, old advert
    got = f.readings()
    assert by_quantity(got, "count_in") == [5, 5] and by_quantity(got, "count_out") == [2, 3]
    assert by_quantity(got, "rssi") == [-60, -60]
    c = f.ctx.counters
    assert (c.duplicates, c.gaps, c.frames_ok, c.frames_bad) == (2, 2, 3, 0)


def test_reboot_reports_counts_since_boot() -> None:
    f = Feed()
    f.send(1, 500, 1000, 900)
    f.send(2, 1, 3, 4)
    assert by_quantity(f.readings(), "count_in") == [3]
    assert f.ctx.counters.gaps == 0 and f.ctx.device_info["advert"]["boot"] == 2


def test_state_survives_a_reopen() -> None:
    f = Feed()
    f.send(1, 10, 100, 100)
    again = BleAdvSource(f.src.spec, f.ctx)  # the supervisor reopens with the same context
    hub = ScannerHub(None, bp.COMPANY_ID)
    hub.subscribe(7, again._on_payload)
    hub._on_advert(f.dev, advert(bp.encode_counter(7, 1, 12, 104, 101, 80, 0)))
    got = [again.queue.get_nowait() for _ in range(again.queue.qsize())]
    assert by_quantity(got, "count_in") == [4] and f.ctx.counters.gaps == 1


def test_strangers_and_garbage() -> None:
    f = Feed()
    phone = BLEDevice("AA:BB:CC:11:22:33", "phone", None)
    f.hub._on_advert(phone, advert(b"\x10\x05\x01", company=0x004C))
    f.hub._on_advert(phone, advert(b"junk"))  # our company id, not our payload, unknown sender
    f.hub._on_advert(phone, advert(bp.encode_counter(8, 1, 1, 0, 0, 80, 0)))  # not configured
    assert f.readings() == [] and f.ctx.counters.frames_bad == 0
    assert (f.hub.ignored, f.hub.unattributed_bad) == (2, 1) and not f.hub.known
    f.send(1, 1, 0, 0)
    f.hub._on_advert(f.dev, advert(b"junk"))  # from our counter's address: counted against it
    assert f.ctx.counters.frames_bad == 1


def test_implausible_counts_are_suspect() -> None:
    f = Feed()
    f.send(1, 1, 0, 0)
    f.send(1, 2, 5000, 0)
    got = {r.quantity: r for r in f.readings() if r.seq == 2}
    assert got["count_in"].quality is Quality.SUSPECT and got["count_out"].quality is Quality.GOOD
    assert f.ctx.counters.out_of_range == 1


def test_spec_and_profile_errors() -> None:
    ctx = SourceContext(asset="x", profile=None)
    with pytest.raises(ConfigError, match="counter-NNNN"):
        open_source("ble-adv:lamp-7", ctx)
    with pytest.raises(ConfigError, match="AA:BB"):
        open_source("ble:AA:BB", ctx)
    with pytest.raises(ConfigError, match="ble-gatt"):
        open_source("ble:AA:BB:CC:DD:EE:FF", SourceContext(asset="x", profile=COUNTER))
    bad = parse_profile(
        {"name": "x", "transport": "ble-gatt", "category": "streetlight",
         "quantities": {"power": {"unit": "WTT", "char": "1234", "format": "f32"}}},
        "x.toml",
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"x.toml: quantities.power.format"):
        open_source("ble:AA:BB:CC:DD:EE:FF", SourceContext(asset="x", profile=bad))
    src = open_source("ble:aa:bb:cc:dd:ee:ff", SourceContext(asset="x", profile=None))
    assert isinstance(src, BleGattSource) and src.address == "AA:BB:CC:DD:EE:FF"
    assert src.profile.name == "streetlight-ble" and set(src.commands) == {"dim", "power"}


def test_command_arguments() -> None:
    assert _command_value("dim", {"level": 40}, "d") == 40.0
    assert _command_value("power", {"on": False}, "d") == 0.0
    for name, args in [("dim", {"level": 101}), ("dim", {"level": True}), ("power", {"on": 1})]:
        with pytest.raises(FrameError, match=name):
            _command_value(name, args, "d")
