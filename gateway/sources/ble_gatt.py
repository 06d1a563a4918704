"""BLE GATT source (scheme ``ble``): a connected peripheral that notifies its values.

``ble:AA:BB:CC:DD:EE:FF`` or ``ble:name=light-01`` (optional ``?timeout=10s&gatt_timeout=2s``)
connects (by name: after scanning for it), reads every characteristic the profile names (so the
twin has state at once), subscribes to their notifications and yields a Reading per value.
Characteristics, value formats and scaling come from the profile (``char``, ``format``, ``scale``
per quantity), so another GATT device model needs only a profile. Commands from the downlink
(``dim`` {"level": 0..100}, ``power`` {"on": bool}) write the characteristic the profile's
``commands`` table names. A disconnect (the device vanished or dropped us) raises SourceError;
the supervisor reconnects; a connect completes on the device's next advert, so a reconnect
takes about one advertising interval once the device is back.

bleak backends come from ``ctx.options["ble_scanner_backend"]`` / ``["ble_client_backend"]``
(the emulated radio in tests and the demo), else bleak's platform default (BlueZ on Linux);
``ctx.options["ble_adapter"]`` picks a BlueZ adapter (``hci1``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Self

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.exc import BleakError

from edge_node import ble_payload as bp
from gateway.errors import ConfigError, FrameError, SourceError
from gateway.profiles import Profile, QuantitySpec, load_profile
from gateway.readings import Quality, Reading
from gateway.sources import SourceContext, SourceSpec, parse_duration

__all__ = ["BleGattSource", "open"]

log = logging.getLogger("twinedge.sources.ble_gatt")
DEFAULT_PROFILE = "streetlight-ble"
_QUEUE = 256
_GONE = object()


class _Char:
    """One profile quantity bound to its characteristic."""

    def __init__(self, q: QuantitySpec, file: str) -> None:
        self.q = q
        uuid = q.fields.get("char")
        fmt = q.fields.get("format", "u16")
        if not isinstance(uuid, str) or len(uuid.replace("-", "")) not in (4, 32):
            raise ConfigError(file, f"quantities.{q.name}.char", "a characteristic UUID", uuid)
        if fmt not in ("u8", "s8", "u16", "s16", "u32", "s32"):
            raise ConfigError(file, f"quantities.{q.name}.format", "u8|s8|u16|s16|u32|s32", fmt)
        self.uuid = uuid.lower()
        self.fmt: str = fmt


class BleGattSource:
    """Readings from one GATT peripheral; also Commandable."""

    def __init__(self, spec: SourceSpec, ctx: SourceContext) -> None:
        self.spec = spec
        self.ctx = ctx
        target = spec.target
        self.name = target[5:] if target.startswith("name=") else None
        self.address = None if self.name else target.upper()
        if self.address is not None and len(self.address.split(":")) != 6:
            raise ConfigError(spec.raw, "source", "ble:AA:BB:CC:DD:EE:FF or ble:name=NAME", target)
        self.device = self.name or target.upper()
        self.timeout = parse_duration(spec.param("timeout", "10s") or "10s", key="timeout")
        self.gatt_timeout = parse_duration(
            spec.param("gatt_timeout", "2s") or "2s", key="gatt_timeout"
        )
        self.profile: Profile = ctx.profile or load_profile(DEFAULT_PROFILE)
        self.profile.require_transport("ble-gatt", "ble")
        self.chars = {
            name: _Char(q, self.profile.file) for name, q in self.profile.quantities.items()
        }
        self.commands = self._commands()
        self.scanner_backend = ctx.options.get("ble_scanner_backend")
        self.client_backend = ctx.options.get("ble_client_backend")
        adapter = ctx.options.get("ble_adapter")  # e.g. "hci1"; bleak's default otherwise
        self.bluez: dict[str, Any] = {"bluez": {"adapter": adapter}} if adapter else {}
        self.client: BleakClient | None = None
        self.queue: asyncio.Queue[Any] = asyncio.Queue(_QUEUE)
        self._seq = 0

    def _commands(self) -> dict[str, _Char]:
        table = self.profile.settings.get("commands", {})
        if not isinstance(table, dict):
            raise ConfigError(self.profile.file, "commands", "a table of command = quantity")
        out = {}
        for cmd, quantity in table.items():
            if quantity not in self.chars:
                raise ConfigError(
                    self.profile.file, f"commands.{cmd}", f"one of {list(self.chars)}", quantity
                )
            out[cmd] = self.chars[quantity]
        return out

    async def __aenter__(self) -> Self:
        found: BLEDevice | str = self.address if self.address else await self._find()
        kwargs: dict[str, Any] = {"backend": self.client_backend} if self.client_backend else {}
        kwargs.update(self.bluez)
        client = BleakClient(
            found, disconnected_callback=self._on_disconnect, timeout=self.timeout, **kwargs
        )
        try:
            await client.connect()
        except (BleakError, OSError, TimeoutError) as e:
            raise SourceError(self.device, f"connect failed: {e}") from e
        self.client = client
        try:
            await self._subscribe(client)
        except BaseException:
            await self._disconnect()
            raise
        self.ctx.device_info.update(address=client.address, mtu=client.mtu_size)
        return self

    async def _find(self) -> BLEDevice:
        """Scan for the device by name (an address is connected to directly: the connect
        completes on the device's next advert, which keeps a reconnect to one interval)."""
        kwargs: dict[str, Any] = {"backend": self.scanner_backend} if self.scanner_backend else {}
        kwargs.update(self.bluez)
        assert self.name is not None
        try:
            found = await BleakScanner.find_device_by_name(self.name, self.timeout, **kwargs)
        except (BleakError, OSError) as e:
            raise SourceError(self.device, f"scan failed: {e}") from e
        if found is None:
            raise SourceError(self.device, f"not advertising (waited {self.timeout:g} s)")
        return found

    async def _subscribe(self, client: BleakClient) -> None:
        for ch in self.chars.values():
            char = client.services.get_characteristic(ch.uuid)
            if char is None:
                raise SourceError(self.device, f"no characteristic {ch.uuid} ({ch.q.name})")
            data = await self._gatt(client.read_gatt_char(char), f"read {ch.q.name}")
            self._on_value(ch, data)
            if "notify" in char.properties:
                await self._gatt(
                    client.start_notify(char, self._notifier(ch)), f"subscribe {ch.q.name}"
                )

    def _notifier(self, ch: _Char) -> Any:
        def on_notify(_char: BleakGATTCharacteristic, data: bytearray) -> None:
            self._on_value(ch, data)

        return on_notify

    async def _gatt(self, op: Any, what: str) -> Any:
        try:
            async with asyncio.timeout(self.gatt_timeout):
                return await op
        except TimeoutError:
            raise SourceError(
                self.device, f"{what}: no answer in {self.gatt_timeout:g} s"
            ) from None
        except (BleakError, OSError) as e:
            raise SourceError(self.device, f"{what}: {e}") from e

    def _on_value(self, ch: _Char, data: bytes | bytearray) -> None:
        counters = self.ctx.counters
        try:
            raw = bp.decode_value(ch.fmt, data)
        except bp.PayloadError as e:
            counters.frames_bad += 1
            level = logging.WARNING if counters.frames_bad & (counters.frames_bad - 1) == 0 else 0
            log.log(
                level or logging.DEBUG,
                "%s: bad %s value (%s), %d bad so far",
                self.device,
                ch.q.name,
                e,
                counters.frames_bad,
            )
            return
        counters.frames_ok += 1
        value = ch.q.convert(raw)
        quality = ch.q.quality(value)
        if quality is Quality.SUSPECT:
            counters.out_of_range += 1
        self._seq += 1
        reading = Reading(
            self.ctx.asset,
            ch.q.name,
            value,
            ch.q.unit,
            time.time(),
            None,
            quality,
            self.device,
            self._seq,
        )
        if self.queue.full():  # the consumer stalled: keep the newest, count the loss
            self.queue.get_nowait()
            counters.gaps += 1
        self.queue.put_nowait(reading)

    def _on_disconnect(self, _client: BleakClient) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(_GONE)

    def __aiter__(self) -> AsyncIterator[Reading]:
        return self._readings()

    async def _readings(self) -> AsyncIterator[Reading]:
        while True:
            item = await self.queue.get()
            if item is _GONE or self.client is None or not self.client.is_connected:
                raise SourceError(self.device, "disconnected")
            yield item

    async def command(self, name: str, args: Mapping[str, Any]) -> None:
        """``dim`` {"level": 0..100} or ``power`` {"on": bool}: write the device's setting."""
        ch = self.commands.get(name)
        if ch is None:
            raise FrameError(
                f"unknown command {name!r}; known: {sorted(self.commands)}", self.device
            )
        raw = _command_value(name, args, self.device)
        client = self.client
        if client is None or not client.is_connected:
            raise SourceError(self.device, f"cannot {name}: not connected")
        data = bp.encode_value(ch.fmt, round((raw - ch.q.offset) / ch.q.scale))
        await self._gatt(client.write_gatt_char(ch.uuid, data, response=True), f"write {name}")
        log.info("%s: %s %s", self.device, name, dict(args))

    async def _disconnect(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(BleakError, OSError, TimeoutError):
                async with asyncio.timeout(self.gatt_timeout):
                    await client.disconnect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._disconnect()


def _command_value(name: str, args: Mapping[str, Any], device: str) -> float:
    if name == "dim":
        level = args.get("level")
        if isinstance(level, bool) or not isinstance(level, int | float) or not 0 <= level <= 100:
            raise FrameError(f"dim: expected {{'level': 0..100}}, got {dict(args)!r}", device)
        return float(level)
    if name == "power":
        on = args.get("on")
        if not isinstance(on, bool):
            raise FrameError(f"power: expected {{'on': true|false}}, got {dict(args)!r}", device)
        return 1.0 if on else 0.0
    value = args.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FrameError(f"{name}: expected {{'value': number}}, got {dict(args)!r}", device)
    return float(value)


def open(spec: SourceSpec, ctx: SourceContext) -> BleGattSource:
    return BleGattSource(spec, ctx)
