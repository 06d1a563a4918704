"""Find BLE devices nearby and say which shipped profile each one speaks (for ``twinedge scan``).

A device is recognised by what it advertises: a GATT profile's 128-bit ``service`` UUID, or a
``ble-adv`` profile's manufacturer ``company_id`` with a payload that decodes (a counter; its
device id, e.g. ``counter-0007``, is what a site file names). Devices nothing recognises (phones,
watches, beacons) are returned to the caller only to be shown (or left out with
``include_unknown=False``); they are never logged or stored.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from edge_node import ble_payload as bp
from gateway.errors import SourceError
from gateway.profiles import Profile, list_profiles, load_profile

__all__ = ["Found", "recognise", "scan"]


@dataclass(slots=True)
class Found:
    """One device heard during a scan."""

    address: str
    name: str | None
    rssi: int
    profile: str | None = None  # the shipped profile it matches, None if unrecognised
    device_id: str | None = None  # what a site file names: counter-0007, or the address
    spec: str | None = None  # a source spec for a site file
    adverts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # battery, for counters


def _ble_profiles() -> list[Profile]:
    profiles = (load_profile(n) for n in list_profiles())
    return [p for p in profiles if p.transport in ("ble-gatt", "ble-adv")]


def recognise(
    device: BLEDevice, adv: AdvertisementData, profiles: list[Profile]
) -> tuple[str, str, str, dict[str, Any]] | None:
    """(profile name, device id, source spec, extra facts) for a known device, else None."""
    uuids = {u.lower() for u in adv.service_uuids}
    for p in profiles:
        if p.transport == "ble-gatt" and str(p.settings.get("service", "")).lower() in uuids:
            return p.name, device.address, f"ble:{device.address}", {}
        if p.transport == "ble-adv":
            payload = adv.manufacturer_data.get(int(p.settings.get("company_id", bp.COMPANY_ID)))
            if payload is None:
                continue
            try:
                node_id, *_rest, battery, _flags = bp.decode_counter(payload)
            except bp.PayloadError:
                continue
            dev = bp.device_id(node_id)
            return p.name, dev, f"ble-adv:{dev}", {"battery": battery}
    return None


async def scan(
    seconds: float, backend: type[Any] | None = None, *, include_unknown: bool = True
) -> list[Found]:
    """Listen for ``seconds``; recognised devices first, strongest signal first.

    ``backend`` is a bleak scanner backend class (the emulated radio's), else bleak's platform
    default. Unrecognised devices are listed (profile None) so a technician sees what else is
    on the air; ``include_unknown=False`` leaves them out."""
    profiles = _ble_profiles()
    found: dict[str, Found] = {}

    def on_advert(device: BLEDevice, adv: AdvertisementData) -> None:
        hit = recognise(device, adv, profiles)
        if hit is None and not include_unknown:
            return
        entry = found.get(device.address)
        if entry is None:
            entry = found[device.address] = Found(device.address, adv.local_name, adv.rssi)
        entry.adverts += 1
        entry.rssi = max(entry.rssi, adv.rssi) if entry.adverts > 1 else adv.rssi
        entry.name = adv.local_name or entry.name
        if hit is not None:
            entry.profile, entry.device_id, entry.spec, entry.extra = hit
            if entry.name is None and entry.spec.startswith("ble-adv:"):
                entry.name = entry.device_id  # counters advertise no name: their id names them

    kwargs: dict[str, Any] = {"backend": backend} if backend is not None else {}
    try:
        async with BleakScanner(on_advert, scanning_mode="active", **kwargs):
            await asyncio.sleep(seconds)  # the scan window itself, not a wait for an event
    except (BleakError, OSError) as e:
        raise SourceError("ble", f"cannot scan: {e}") from e
    return sorted(found.values(), key=lambda f: (f.profile is None, -f.rssi, f.address))
