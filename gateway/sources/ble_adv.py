"""BLE advertisement source (scheme ``ble-adv``): counters heard without a connection.

``ble-adv:counter-0007`` feeds one asset from the adverts of node 7. Every ``ble-adv`` source of a
gateway shares ONE scanner (:class:`ScannerHub`, reference counted per bleak backend), so hundreds
of counters cost no connection each. Payloads follow ``edge_node/ble_payload.py``: cumulative
counts with a rolling sequence number. The ADV + SCAN_RSP copies and repeats of one advert are
dropped as duplicates; missed sequence numbers are counted as gaps, and no people are lost with
them because counts are cumulative (a reading reports people since the last advert heard).

Data minimisation: adverts of devices that are not configured counters (a passer-by's phone,
another site's counter) are dropped on arrival; their addresses are never logged or stored. The
hub remembers the address of a configured counter (in memory only) so a corrupt advert from it
can be counted against that device.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, ClassVar, Self

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from edge_node import ble_payload as bp
from gateway.errors import ConfigError, SourceError
from gateway.profiles import Profile, load_profile
from gateway.readings import Quality, Reading
from gateway.sources import SourceContext, SourceSpec

__all__ = ["BleAdvSource", "ScannerHub", "open"]

log = logging.getLogger("twinedge.sources.ble_adv")
DEFAULT_PROFILE = "counter-ble-adv"
_QUEUE = 256
_START_TIMEOUT = 10.0  # seconds for the adapter to start or stop scanning

Handler = Callable[[tuple[Any, ...] | None, int, str], None]


class ScannerHub:
    """One running BleakScanner shared by every ble-adv source using the same backend."""

    _hubs: ClassVar[dict[Any, ScannerHub]] = {}

    def __init__(
        self, backend: type[Any] | None, company_id: int, adapter: str | None = None
    ) -> None:
        self.backend = backend
        self.company_id = company_id
        self.adapter = adapter
        self.users = 0
        self.handlers: dict[int, Handler] = {}
        self.known: dict[str, int] = {}  # address -> node id, configured counters only
        self.ignored = 0  # adverts of other devices, dropped unread
        self.unattributed_bad = 0
        self.adverts = 0
        self._scanner: BleakScanner | None = None
        self._lock = asyncio.Lock()

    @classmethod
    async def acquire(
        cls, backend: type[Any] | None, company_id: int, adapter: str | None = None
    ) -> ScannerHub:
        key = (backend, company_id) if adapter is None else (backend, company_id, adapter)
        hub = cls._hubs.get(key)
        if hub is None:
            hub = cls._hubs[key] = ScannerHub(backend, company_id, adapter)
        async with hub._lock:
            hub.users += 1
            if hub.users == 1:
                try:
                    await hub._start()
                except BaseException:
                    hub.users -= 1
                    cls._hubs.pop(key, None)
                    raise
        return hub

    async def release(self) -> None:
        async with self._lock:
            self.users -= 1
            if self.users == 0:
                key = (self.backend, self.company_id)
                ScannerHub._hubs.pop(key if self.adapter is None else (*key, self.adapter), None)
                scanner, self._scanner = self._scanner, None
                if scanner is not None:
                    await _stop(scanner)

    async def _start(self) -> None:
        kwargs: dict[str, Any] = {"backend": self.backend} if self.backend else {}
        if self.adapter:
            kwargs["bluez"] = {"adapter": self.adapter}
        scanner = BleakScanner(self._on_advert, scanning_mode="active", **kwargs)
        try:
            async with asyncio.timeout(_START_TIMEOUT):
                await scanner.start()
        except (BleakError, OSError, TimeoutError) as e:
            raise SourceError("ble-adv", f"cannot start the BLE scanner: {e}") from e
        self._scanner = scanner

    def subscribe(self, node_id: int, handler: Handler) -> None:
        if node_id in self.handlers:
            raise ConfigError("<site>", "source", "one ble-adv source per counter", node_id)
        self.handlers[node_id] = handler

    def unsubscribe(self, node_id: int) -> None:
        self.handlers.pop(node_id, None)
        for address in [a for a, n in self.known.items() if n == node_id]:
            del self.known[address]

    def _on_advert(self, device: BLEDevice, adv: AdvertisementData) -> None:
        self.adverts += 1
        payload = adv.manufacturer_data.get(self.company_id)
        if payload is None:
            self.ignored += 1  # a phone, a beacon, a streetlight: not ours to read
            return
        try:
            fields = bp.decode_counter(payload)
        except bp.PayloadError as e:
            self._bad(device.address, str(e))
            return
        handler = self.handlers.get(fields[0])
        if handler is None:
            self.ignored += 1  # a counter not configured on this gateway never becomes an asset
            return
        self.known[device.address] = fields[0]
        handler(fields, adv.rssi, "")

    def _bad(self, address: str, reason: str) -> None:
        node_id = self.known.get(address)
        handler = self.handlers.get(node_id) if node_id is not None else None
        if handler is None:
            self.unattributed_bad += 1  # cannot say whose: counted, address not kept
            return
        handler(None, 0, reason)


async def _stop(scanner: BleakScanner) -> None:
    """Stop scanning; an adapter that is already gone must not hang the shutdown."""
    try:
        async with asyncio.timeout(_START_TIMEOUT):
            await scanner.stop()
    except (BleakError, OSError, TimeoutError) as e:
        log.warning("BLE scanner did not stop cleanly: %s", e)


class BleAdvSource:
    """Readings from one counter's adverts, via the shared scanner hub."""

    def __init__(self, spec: SourceSpec, ctx: SourceContext) -> None:
        self.spec = spec
        self.ctx = ctx
        try:
            self.node_id = bp.parse_device_id(spec.target)
        except ValueError as e:
            raise ConfigError(spec.raw, "source", "ble-adv:counter-NNNN", spec.target) from e
        self.device = bp.device_id(self.node_id)
        self.profile: Profile = ctx.profile or load_profile(DEFAULT_PROFILE)
        self.profile.require_transport("ble-adv", "ble-adv")
        company = self.profile.settings.get("company_id", bp.COMPANY_ID)
        if isinstance(company, bool) or not isinstance(company, int) or not 0 <= company <= 0xFFFF:
            raise ConfigError(self.profile.file, "company_id", "an integer 0..65535", company)
        self.company_id = company
        self.backend = ctx.options.get("ble_scanner_backend")
        self.queue: asyncio.Queue[Reading] = asyncio.Queue(_QUEUE)
        self.hub: ScannerHub | None = None
        self.state: dict[str, int] | None = ctx.device_info.get("advert")

    async def __aenter__(self) -> Self:
        adapter = self.ctx.options.get("ble_adapter")
        self.hub = await ScannerHub.acquire(self.backend, self.company_id, adapter)
        try:
            self.hub.subscribe(self.node_id, self._on_payload)
        except BaseException:
            await self.hub.release()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        hub, self.hub = self.hub, None
        if hub is not None:
            hub.unsubscribe(self.node_id)
            await hub.release()

    def __aiter__(self) -> AsyncIterator[Reading]:
        return self._readings()

    async def _readings(self) -> AsyncIterator[Reading]:
        while True:
            yield await self.queue.get()

    def _on_payload(self, fields: tuple[Any, ...] | None, rssi: int, reason: str) -> None:
        counters = self.ctx.counters
        if fields is None:
            counters.frames_bad += 1
            level = logging.WARNING if counters.frames_bad & (counters.frames_bad - 1) == 0 else 0
            log.log(
                level or logging.DEBUG,
                "%s: bad advert (%s), %d so far",
                self.device,
                reason,
                counters.frames_bad,
            )
            return
        _node, boot, seq, total_in, total_out, battery, flags = fields
        deltas = self._advance(boot, seq, total_in, total_out)
        if deltas is None:
            return
        counters.frames_ok += 1
        now = time.time()
        info = self.ctx.device_info
        info.update(
            rssi=rssi,
            low_battery=bool(flags & bp.FLAG_LOW_BATTERY),
            tamper=bool(flags & bp.FLAG_TAMPER),
        )
        if battery is not None:
            info["battery"] = battery
        values: dict[str, int | None] = {"battery": battery, "rssi": rssi}
        if deltas:  # empty on the first advert heard: a baseline, no interval to report yet
            values.update(count_in=deltas[0], count_out=deltas[1])
        for q in self.profile.quantities.values():
            raw = values.get(str(q.fields.get("field", q.name)))
            if raw is not None:
                self._emit(q.name, q.convert(float(raw)), q.unit, q.quality, now, seq)

    def _emit(
        self,
        name: str,
        value: float,
        unit: str,
        quality: Callable[[float], Quality],
        now: float,
        seq: int,
    ) -> None:
        flag = quality(value)
        if flag is Quality.SUSPECT:
            self.ctx.counters.out_of_range += 1
        reading = Reading(self.ctx.asset, name, value, unit, now, None, flag, self.device, seq)
        if self.queue.full():  # the consumer stalled: keep the newest, count the loss
            self.queue.get_nowait()
            self.ctx.counters.gaps += 1
        self.queue.put_nowait(reading)

    def _advance(
        self, boot: int, seq: int, total_in: int, total_out: int
    ) -> tuple[int, ...] | None:
        """Dedupe by (boot, seq) and count gaps: people (in, out) since the last advert heard,
        ``()`` for the first advert (a baseline) or None for a duplicate."""
        last = self.state
        counters = self.ctx.counters
        self.state = {"boot": boot, "seq": seq, "count_in": total_in, "count_out": total_out}
        if last is None:
            self.ctx.device_info["advert"] = self.state
            return ()  # counts before the first advert heard are not ours to report
        if last["boot"] != boot:
            log.info("%s: counter restarted (boot %d -> %d)", self.device, last["boot"], boot)
            self.ctx.device_info["advert"] = self.state
            return total_in, total_out
        step = (seq - last["seq"]) & 0xFFFF
        if step == 0 or step > 0x8000:  # the SCAN_RSP copy, a repeat, or an old advert
            counters.duplicates += 1
            self.state = last
            return None
        counters.gaps += step - 1
        self.ctx.device_info["advert"] = self.state
        return (total_in - last["count_in"]) & 0xFFFF, (total_out - last["count_out"]) & 0xFFFF


def open(spec: SourceSpec, ctx: SourceContext) -> BleAdvSource:
    return BleAdvSource(spec, ctx)
