"""``twinedge scan``: find devices on serial ports and BLE, recognise their profiles, start a site.

Serial ports come from pyserial's port list, the pty links emulators leave in
:func:`pty_link_dir`, and any ``--port``. Each port is probed (unless ``--no-probe``): first it is
listened to for twinedge node frames (a node sends ``hello`` at start and readings every period;
listening writes nothing), then asked for the registers of every shipped Modbus profile at the
device ids of ``--modbus-units``. BLE devices come from :mod:`gateway.ble_scan` with their signal
strength and the profile their adverts match. ``--emulated`` starts the demo's emulated devices
(twinedge serial nodes, a Modbus sonde, BLE streetlights and counters) and scans those instead
of the real ports and radio.
``--write-site FILE`` writes a starting site file with one asset per recognised device, which
``twinedge config check`` accepts; set real locations and names before deploying it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import re
import socket
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Found", "add_parser", "probe_port", "pty_link_dir", "scan", "site_toml"]

_ID_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


def pty_link_dir() -> Path:
    """Where emulators put symlinks to their ttys, so a scan on the same machine lists them."""
    return Path(tempfile.gettempdir()) / f"twinedge-{os.getuid()}"


@dataclass
class Found:
    """One device or port the scan saw. ``spec`` and ``profile`` are set when it is recognised."""

    transport: str  # "serial" or "ble"
    target: str  # port path or BLE address
    name: str = ""
    kind: str = "unknown"  # twinedge-node, modbus-sonde, modbus-device, ble-device, port
    profile: str | None = None
    category: str | None = None
    spec: str | None = None
    rssi: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


_DESCRIPTION = """\
Lists serial ports (and the pty links of emulated devices) and BLE devices, and says which
profile each device speaks. Each serial port is listened to for twinedge node frames (nothing
is written), then asked for the registers of every shipped Modbus profile at the device ids
of --modbus-units. BLE devices are shown with their signal strength. --emulated starts the
demo's emulated devices (twinedge serial nodes, a Modbus sonde, BLE streetlights and counters)
and scans those. --write-site writes a starting site file with one asset per recognised
device; set real ids, names and locations and add the [broker] table before deploying it."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "scan",
        help="list serial ports and BLE devices with their profiles; write a starting site file",
        description=_DESCRIPTION,
    )
    p.add_argument("--timeout", type=float, default=5.0, help="BLE scan time in seconds (5)")
    p.add_argument("--listen", type=float, default=1.5, help="seconds to listen on each port (1.5)")
    p.add_argument("--port", action="append", default=[], help="also probe this serial port")
    p.add_argument("--no-probe", action="store_true", help="list serial ports without opening")
    p.add_argument("--no-ble", action="store_true", help="skip BLE")
    p.add_argument("--no-serial", action="store_true", help="skip serial ports")
    p.add_argument(
        "--modbus-units", default="1", help="Modbus device ids to ask, e.g. '1,2,10' (1)"
    )
    p.add_argument("--node-baud", type=int, default=115200, help="baud of twinedge nodes")
    p.add_argument("--emulated", action="store_true", help="scan the demo's emulated devices")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--write-site", metavar="FILE", help="write a starting site file (TOML)")
    p.add_argument("--site-id", default="my-site", help="site id for --write-site")
    p.add_argument(
        "--location",
        metavar="LON,LAT",
        help="position written for every asset (default 0,0: edit the file)",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from gateway.errors import ConfigError

    units = _units(args.modbus_units)
    location = _location(args.location)
    if args.write_site and Path(args.write_site).exists():
        raise ConfigError(args.write_site, "", "a file that does not exist yet (not overwritten)")
    found, errors = asyncio.run(scan(args, units))
    if args.json:
        print(json.dumps({"devices": [asdict(f) for f in found], "errors": errors}, indent=2))
    else:
        _print_table(found, errors)
    if args.write_site:
        text = site_toml(found, site_id=args.site_id, location=location)
        Path(args.write_site).write_text(text, encoding="utf-8")
        print(f"wrote {args.write_site}; check it with: twinedge config check", file=sys.stderr)
    # a failed scan is an error; a part this build lacks is only a note
    return 1 if any(not e.startswith("note:") for e in errors) else 0


def _units(text: str) -> list[int]:
    from gateway.errors import ConfigError

    try:
        units = [int(u) for u in text.split(",") if u.strip()]
    except ValueError:
        units = []
    if not units or not all(1 <= u <= 247 for u in units):
        raise ConfigError("--modbus-units", "", "device ids 1..247 separated by commas", text)
    return units


def _location(text: str | None) -> tuple[float, float] | None:
    from gateway.errors import ConfigError

    if text is None:
        return None
    try:
        lon, lat = (float(x) for x in text.split(","))
    except ValueError:
        raise ConfigError("--location", "", "LON,LAT in degrees such as 2.35,48.85", text) from None
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise ConfigError("--location", "", "longitude -180..180 and latitude -90..90", text)
    return lon, lat


async def scan(args: argparse.Namespace, units: list[int]) -> tuple[list[Found], list[str]]:
    """Probe serial ports and scan BLE concurrently; returns what was found and what failed."""
    async with AsyncExitStack() as stack:
        ports: list[str] = list(args.port)
        backend = None
        if args.emulated:
            emulated_ports, backend = await _start_emulators(stack)
            ports += emulated_ports
        elif not args.no_serial:
            ports += _list_ports()
        errors: list[str] = []
        tasks = []
        async with asyncio.TaskGroup() as tg:
            if not args.no_serial:
                for port in dict.fromkeys(ports):  # unique, in order
                    coro = probe_port(port, units, args.node_baud, args.listen, not args.no_probe)
                    tasks.append(tg.create_task(coro, name=f"probe {port}"))
            ble = None
            if not args.no_ble:
                ble = tg.create_task(_scan_ble(args.timeout, backend, errors), name="ble scan")
        found = [t.result() for t in tasks]
        if ble is not None:
            found += ble.result()
        return found, errors


async def _start_emulators(stack: AsyncExitStack) -> tuple[list[str], Any]:
    """The demo's emulated devices: two twinedge serial nodes, a Modbus sonde, and a BLE radio
    with streetlights, counters and a passer-by's phone."""
    # the emulators are test tooling, not gateway code: imported by name, not type-checked here
    ble: Any = importlib.import_module("hil_tests.emulators.ble")
    modbus: Any = importlib.import_module("hil_tests.emulators.modbus_sonde")
    serial_node: Any = importlib.import_module("hil_tests.emulators.serial_node")
    link_dir = pty_link_dir()
    link_dir.mkdir(parents=True, exist_ok=True)
    ports = []
    for kind, node_id in (("water-quality", "wq-0001"), ("pedestrian-counter", "pc-0001")):
        node = serial_node.SerialNode(kind, f"{node_id}-{os.getpid()}", directory=link_dir)
        ports.append(str((await stack.enter_async_context(node)).path))
    sonde = await stack.enter_async_context(modbus.ModbusSonde(seed=1))
    radio = await stack.enter_async_context(ble.BleRadio(seed=1))
    for n in (1, 2):
        await radio.add_streetlight(f"light-{n:02d}")
    for n in (1, 2, 3):
        await radio.add_counter(n)
    await radio.add_phone()  # something a scan must show as not recognised
    return [*ports, sonde.port_path], radio.scanner_backend


def _list_ports() -> list[str]:
    from serial.tools import list_ports

    ports = [p.device for p in list_ports.comports()]
    link_dir = pty_link_dir()
    if link_dir.is_dir():
        ports += sorted(str(p) for p in link_dir.iterdir() if p.is_symlink() and p.exists())
    return ports


async def probe_port(
    port: str, units: list[int], node_baud: int = 115200, listen: float = 1.5, probe: bool = True
) -> Found:
    """What is on ``port``: a twinedge node (heard), a Modbus device (asked), or unknown."""
    found = Found("serial", port, name=Path(port).name, kind="port")
    if not probe:
        return found
    msg = await _listen_for_node(port, node_baud, listen, found)
    if msg is not None:
        _recognise_node(found, msg, node_baud)
        return found
    if "error" not in found.detail:
        await _ask_modbus(found, units)
    return found


async def _listen_for_node(port: str, baud: int, seconds: float, found: Found) -> Any:
    import serial

    from edge_node import protocol

    try:
        ser = serial.Serial(port, baud, timeout=0)
    except (serial.SerialException, OSError) as e:
        found.detail["error"] = f"cannot open: {e}"
        return None
    loop = asyncio.get_running_loop()
    heard: asyncio.Future[Any] = loop.create_future()
    splitter = protocol.FrameSplitter()
    frames_bad = 0

    def readable() -> None:
        nonlocal frames_bad
        try:
            data = ser.read(4096)
        except (serial.SerialException, OSError):
            data = b""
        for frame in splitter.feed(data):
            try:
                msg = protocol.decode(frame)
            except protocol.ProtocolError:
                frames_bad += 1
                continue
            if not heard.done() and msg.get("type") in ("hello", "readings"):
                heard.set_result(msg)

    loop.add_reader(ser.fileno(), readable)
    try:
        async with asyncio.timeout(seconds):
            return await heard
    except TimeoutError:
        return None
    finally:
        loop.remove_reader(ser.fileno())
        ser.close()
        if frames_bad:
            found.detail["frames_bad"] = frames_bad


def _recognise_node(found: Found, msg: dict[str, Any], baud: int) -> None:
    from gateway.profiles import list_profiles, load_profile

    if msg["type"] == "hello":
        names = {s[0] for s in msg.get("sensors", [])}
        found.detail.update(firmware=msg.get("firmware", ""), period_ms=msg.get("period_ms"))
    else:
        names = {v[0] for v in msg.get("values", [])}
    found.kind, found.name = "twinedge-node", str(msg.get("node", ""))
    found.detail["sensors"] = sorted(names)
    best, best_score = None, 0
    for name in list_profiles():
        profile = load_profile(name)
        if profile.transport != "serial":
            continue
        fields = {str(q.fields.get("field", q.name)) for q in profile.quantities.values()}
        score = len(names & fields) if names <= fields else 0
        if score > best_score:
            best, best_score = profile, score
    if best is not None:
        found.profile, found.category = best.name, best.category
        found.spec = f"serial:{found.target}?baud={baud}"


async def _ask_modbus(found: Found, units: list[int]) -> None:
    """Ask each device id for the first register block of every shipped Modbus profile."""
    from pymodbus.client import AsyncModbusSerialClient

    from gateway.profiles import list_profiles, load_profile
    from gateway.sources.modbus import decode, plan_reads, register_map

    profiles = [p for p in map(load_profile, list_profiles()) if p.transport == "modbus"]
    for profile in profiles:
        blocks = plan_reads(register_map(profile), profile.settings.get("max_gap", 0))
        client = AsyncModbusSerialClient(
            found.target,
            baudrate=int(profile.settings.get("baud", 9600)),
            parity=str(profile.settings.get("parity", "N")),
            timeout=0.3,
            retries=0,
            reconnect_delay=0,
        )
        if not await client.connect():
            found.detail["error"] = "cannot open for Modbus"
            return
        try:
            for unit in units:
                block = blocks[0]
                read = client.read_holding_registers
                if block.function == "input":
                    read = client.read_input_registers
                try:
                    rr = await read(block.start, count=block.count, device_id=unit)
                except Exception:  # any failure means "not this device"
                    continue
                if rr.isError() or len(rr.registers) != block.count:
                    continue
                values = {
                    r.quantity.name: r.quantity.convert(
                        decode(rr.registers[r.address - block.start :], r.type, r.order)
                    )
                    for r in block.registers
                }
                plausible = all(
                    profile.quantities[q].low <= v <= profile.quantities[q].high
                    for q, v in values.items()
                )
                found.name = f"unit {unit}"
                found.kind = "modbus-sonde" if plausible else "modbus-device"
                found.detail["values"] = {q: round(v, 3) for q, v in values.items()}
                if plausible:
                    found.profile, found.category = profile.name, profile.category
                found.spec = f"modbus:{found.target}?unit={unit}"
                return
        finally:
            client.close()


async def _scan_ble(seconds: float, backend: Any, errors: list[str]) -> list[Found]:
    try:
        ble_scan: Any = importlib.import_module("gateway.ble_scan")
    except ModuleNotFoundError as e:
        if e.name != "gateway.ble_scan":
            raise
        errors.append("note: BLE scanning is not available in this build")
        return []
    try:
        seen = await ble_scan.scan(seconds, backend=backend)
    except Exception as e:  # no adapter, BlueZ down: report, go on
        errors.append(f"BLE scan failed: {e}")
        return []
    return [_ble_found(d) for d in seen]


def _ble_found(d: Any) -> Found:
    from gateway.profiles import load_profile

    name = d.name or getattr(d, "device_id", None) or ""
    found = Found("ble", str(d.address), name=name, kind="ble-device", rssi=d.rssi)
    if d.profile:
        profile = load_profile(d.profile)
        found.profile, found.category = profile.name, profile.category
        found.spec = getattr(d, "spec", None)
        if found.spec is None:  # derive it as the ble and ble-adv sources name devices
            by_name = profile.transport == "ble-adv" and name
            found.spec = f"ble-adv:{name}" if by_name else f"ble:{d.address}"
    return found


def _print_table(found: list[Found], errors: list[str]) -> None:
    rows = [("TRANSPORT", "TARGET", "NAME", "RSSI", "KIND", "PROFILE", "SPEC")]
    for f in sorted(found, key=lambda f: (f.transport, -(f.rssi or -999), f.target)):
        rssi = "" if f.rssi is None else f"{f.rssi} dBm"
        rows.append((f.transport, f.target, f.name, rssi, f.kind, f.profile or "-", f.spec or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    recognised = sum(1 for f in found if f.spec and f.profile)
    print(f"\n{len(found)} found, {recognised} recognised")
    for e in errors:
        print(e if e.startswith("note:") else f"warning: {e}", file=sys.stderr)


def site_toml(
    found: list[Found], *, site_id: str = "my-site", location: tuple[float, float] | None = None
) -> str:
    """A starting site file: one asset per recognised device, placeholders to review."""
    gw = _ID_CHARS.sub("-", f"gw-{socket.gethostname()}")[:64].strip("-.") or "gw-1"
    lon, lat = location or (0.0, 0.0)
    where = "" if location else "  # TODO: the asset's longitude, latitude"
    written = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    lines = [
        f"# Starting site file written by `twinedge scan` at {written} UTC.",
        "# Review every asset (id, name, location) and add a [broker] table before deploying;",
        "# see docs/configuration.md. Check it with: twinedge config check THIS_FILE",
        "",
        "[gateway]",
        f"id = {json.dumps(gw)}",
        f"site = {json.dumps(_ID_CHARS.sub('-', site_id) or 'my-site')}",
    ]
    used: set[str] = set()
    for f in found:
        if not (f.spec and f.profile and f.category):
            continue
        aid = _asset_id(f, used)
        lines += [
            "",
            "[[assets]]",
            f"id = {json.dumps(aid)}",
            f"category = {json.dumps(f.category)}",
            f"source = {json.dumps(f.spec)}",
            f"profile = {json.dumps(f.profile)}",
            f"location = [{lon}, {lat}]{where}",
        ]
    return "\n".join(lines) + "\n"


def _asset_id(f: Found, used: set[str]) -> str:
    """The device's own name when it is a usable id (light-01, counter-0007), else category-N."""
    name = _ID_CHARS.sub("-", f.name).strip("-.")[:64] if f.kind != "modbus-sonde" else ""
    if name and name[0].isalnum() and name not in used:
        used.add(name)
        return name
    n = 1
    while f"{f.category}-{n}" in used:
        n += 1
    used.add(f"{f.category}-{n}")
    return f"{f.category}-{n}"
