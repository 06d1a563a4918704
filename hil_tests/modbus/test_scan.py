"""``twinedge scan``: emulated devices found and recognised, ports probed, a site file written."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_node import protocol
from gateway.cli import main
from gateway.commands.scan import Found, probe_port, site_toml
from gateway.config import load_site
from hil_tests.emulators.modbus_sonde import ModbusSonde

pytestmark = pytest.mark.hil

HAVE_BLE_SCAN = importlib.util.find_spec("gateway.ble_scan") is not None


@pytest.fixture
def bare_pty(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A tty path with nothing behind it but our hand on the other end (master fd, link)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    link = tmp_path / "ttyTEST0"
    link.symlink_to(os.ttyname(slave))
    os.set_blocking(master, False)
    yield master, str(link)
    os.close(master)
    os.close(slave)


def test_emulated_scan_finds_devices_and_writes_a_valid_site(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.toml"
    argv = ["scan", "--emulated", "--json", "--timeout", "1.5", "--listen", "2"]
    code = main([*argv, "--write-site", str(site), "--location", "4.9,52.37"])
    report = json.loads(capsys.readouterr().out)
    devices = report["devices"]
    sondes = [d for d in devices if d["kind"] == "modbus-sonde"]
    assert len(sondes) == 1
    assert sondes[0]["profile"] == "sonde-modbus"
    assert sondes[0]["spec"] == f"modbus:{sondes[0]['target']}?unit=1"
    assert 0 < sondes[0]["detail"]["values"]["ph"] < 14
    nodes = {d["profile"]: d for d in devices if d["kind"] == "twinedge-node"}
    assert set(nodes) == {"twinedge-water-node", "twinedge-counter-node"}
    assert nodes["twinedge-water-node"]["spec"].startswith("serial:")
    if HAVE_BLE_SCAN:
        assert code == 0, report["errors"]
        ble = [d for d in devices if d["transport"] == "ble"]
        recognised = {d["profile"] for d in ble if d["profile"]}
        assert recognised == {"streetlight-ble", "counter-ble-adv"}
        assert all(isinstance(d["rssi"], int) for d in ble)
        assert any(d["profile"] is None for d in ble)  # the passer-by's phone
    else:
        assert report["errors"] == ["note: BLE scanning is not available in this build"]
        assert code == 0
    loaded = load_site(site)
    schemes = [a.source.scheme for a in loaded.assets]
    assert (schemes.count("modbus"), schemes.count("serial")) == (1, 2)
    assert all(a.location["coordinates"] == [4.9, 52.37] for a in loaded.assets)
    assert main(["config", "check", str(site)]) == 0


def test_write_site_never_overwrites(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text("# mine\n", encoding="utf-8")
    assert main(["scan", "--no-ble", "--no-serial", "--write-site", str(site)]) == 2
    assert site.read_text(encoding="utf-8") == "# mine\n"


def test_site_file_from_ble_and_modbus_finds_passes_config_check(tmp_path: Path) -> None:
    found = [
        Found("ble", "E0:00:00:00:00:01", "light-01", "ble-device", "streetlight-ble",
              "streetlight", "ble:E0:00:00:00:00:01", -60),
        Found("ble", "C1:00:00:00:00:07", "counter-0007", "ble-device", "counter-ble-adv",
              "pedestrian-counter", "ble-adv:counter-0007", -71),
        Found("ble", "F0:00:00:00:00:09", "phone", "ble-device", rssi=-80),
        Found("serial", "/dev/ttyUSB1", "unit 1", "modbus-sonde", "sonde-modbus",
              "water-quality", "modbus:/dev/ttyUSB1?unit=1"),
        Found("serial", "/dev/ttyUSB2", "unit 1", "modbus-sonde", "sonde-modbus",
              "water-quality", "modbus:/dev/ttyUSB2?unit=1"),
    ]  # fmt: skip
    path = tmp_path / "site.toml"
    path.write_text(site_toml(found, site_id="harbour"), encoding="utf-8")
    site = load_site(path)
    assert site.site == "harbour"
    assert [(a.id, a.source.raw) for a in site.assets] == [
        ("light-01", "ble:E0:00:00:00:00:01"),
        ("counter-0007", "ble-adv:counter-0007"),
        ("water-quality-1", "modbus:/dev/ttyUSB1?unit=1"),
        ("water-quality-2", "modbus:/dev/ttyUSB2?unit=1"),
    ]


async def test_probe_hears_a_twinedge_node(bare_pty: tuple[int, str]) -> None:
    master, port = bare_pty
    hello = protocol.encode(
        {
            "type": "hello",
            "node": "wq-node-3",
            "seq": 0,
            "boot": 1234,
            "firmware": "1.4.0",
            "period_ms": 1000,
            "sensors": [["temperature", "CEL", 1000], ["ph", "C62", 1000]],
        }
    )

    async def node() -> None:  # line noise, then a node repeating its hello
        os.write(master, b"\x13\x37garbage")
        while True:
            os.write(master, hello)
            await asyncio.sleep(0.05)

    task = asyncio.create_task(node())
    try:
        found = await probe_port(port, [1], listen=3.0)
    finally:
        task.cancel()
    assert found.kind == "twinedge-node"
    assert found.name == "wq-node-3"
    assert found.detail["firmware"] == "1.4.0"
    assert found.detail["sensors"] == ["ph", "temperature"]


async def test_probe_of_a_silent_or_noisy_port_is_unknown_not_a_crash(
    bare_pty: tuple[int, str],
) -> None:
    master, port = bare_pty
    os.write(master, bytes(range(1, 200)) * 2)  # noise, no frame delimiter
    found = await probe_port(port, [1, 2], listen=0.2)
    assert (found.kind, found.spec, found.profile) == ("port", None, None)


async def test_probe_finds_a_sonde_at_another_device_id() -> None:
    async with ModbusSonde(seed=4, device_id=9) as sonde:
        found = await probe_port(sonde.port_path, [1, 9], listen=0.2)
    assert (found.kind, found.profile) == ("modbus-sonde", "sonde-modbus")
    assert found.spec == f"modbus:{sonde.port_path}?unit=9"


async def test_probe_of_a_missing_port_reports_it() -> None:
    found = await probe_port("/dev/does-not-exist", [1], listen=0.2)
    assert found.kind == "port"
    assert "cannot open" in found.detail["error"]
