"""A bleak backend on Google's bumble stack, so the gateway drives emulated BLE through bleak's API.

bleak accepts ``BleakScanner(..., backend=Cls)`` and ``BleakClient(..., backend=Cls)``; the classes
here implement bleak's backend interface on one bumble :class:`~bumble.device.Device` (the
gateway's "adapter"), called the :class:`Central`. Every scanner and client of one central share
that device, as every BleakScanner/BleakClient of a real gateway shares one HCI adapter. bleak
instantiates the class itself (a ``functools.partial`` is not accepted), so
:meth:`Central.backends` makes a pair of subclasses bound to the central.

bumble gaps handled here, found while building this (see docs/devices/ble.md):

* LE Create Connection Cancel never completes in bumble's emulated controller, so a connect with a
  timeout hangs: :class:`EmulatedController` answers the cancel as a real controller does, with an
  LE Connection Complete event carrying "unknown connection identifier".
* An in-flight GATT operation at disconnect surfaces as a bare ``CancelledError``:
  :meth:`BumbleClient._op` turns it into a ``BleakError`` unless the caller's task itself is
  being cancelled.
* One central scans for everyone, so one scanner's ``stop`` would stop the others: scanning is
  reference counted.
* Concurrent connects fail ("already a pending connection"): connects are serialised.
* Each advert arrives twice (ADV_IND + SCAN_RSP with the same data), even from a non-scannable
  advertiser: :class:`EmulatedController` drops the SCAN_RSP report when the advertiser is not
  scannable, as a real controller never asks it; a scannable device's two reports are both
  passed on, as BlueZ does, and consumers dedupe (the counter payload's sequence number does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError
from bumble import core, hci
from bumble.controller import Controller
from bumble.core import AdvertisingData
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt import Characteristic
from bumble.gatt_client import CharacteristicProxy, DescriptorProxy, ServiceProxy
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink

__all__ = [
    "BumbleClient",
    "BumbleScanner",
    "Central",
    "EmulatedController",
    "central_over_hci",
    "make_device",
]

log = logging.getLogger("twinedge.emulators.ble")

_PROPS = {
    Characteristic.Properties.BROADCAST: "broadcast",
    Characteristic.Properties.READ: "read",
    Characteristic.Properties.WRITE_WITHOUT_RESPONSE: "write-without-response",
    Characteristic.Properties.WRITE: "write",
    Characteristic.Properties.NOTIFY: "notify",
    Characteristic.Properties.INDICATE: "indicate",
    Characteristic.Properties.AUTHENTICATED_SIGNED_WRITES: "authenticated-signed-writes",
    Characteristic.Properties.EXTENDED_PROPERTIES: "extended-properties",
}


class EmulatedController(Controller):  # type: ignore[misc]
    """bumble's emulated controller, with LE Create Connection Cancel completing the pending
    connection with an error (Core spec Vol 4 Part E 7.8.13) instead of leaving it pending.

    It also counts what it puts on the air: advertising PDUs, and how many of them carried data
    different from the previous one (``distinct_adverts``), so a benchmark can tell an advert
    the emulator never sent from one the gateway missed."""

    adverts_sent = 0
    distinct_adverts = 0
    _last_data: bytes = b""
    _no_scan_rsp = False

    def is_scannable(self) -> bool:
        """Whether this controller's advertising accepts scan requests (ADV_IND, ADV_SCAN_IND)."""
        for adv_set in self.advertising_sets.values():
            if adv_set.enabled and adv_set.parameters is not None:
                return bool(adv_set.parameters.advertising_event_properties & 0x02)
        legacy = self.le_legacy_advertiser
        return not legacy.enabled or legacy.advertising_type in (0x00, 0x02)

    def on_advertising_pdu(self, pdu: Any) -> None:
        """bumble reports a SCAN_RSP for every advert heard while scanning; a real controller
        sends no scan request to a non-scannable advertiser, so none comes back."""
        sender = _BY_ADDRESS.get(str(pdu.advertiser_address).split("/")[0])
        self._no_scan_rsp = sender is not None and not sender.is_scannable()
        try:
            super().on_advertising_pdu(pdu)
        finally:
            self._no_scan_rsp = False

    def send_hci_packet(self, packet: Any) -> None:
        if self._no_scan_rsp and _is_scan_response(packet):
            return
        super().send_hci_packet(packet)

    def send_advertising_pdu(self, packet: Any) -> None:
        data = getattr(packet, "data", b"")
        self.adverts_sent += 1
        if data != self._last_data:
            self.distinct_adverts += 1
            self._last_data = data
        super().send_advertising_pdu(packet)

    def on_hci_le_create_connection_cancel_command(self, command: Any) -> Any:
        result = super().on_hci_le_create_connection_cancel_command(command)
        pending = self.pending_le_connection
        if pending is not None:
            self.pending_le_connection = None
            peer = pending.peer_address if hasattr(pending, "peer_address") else hci.Address.ANY
            event = hci.HCI_LE_Connection_Complete_Event(
                status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
                connection_handle=0,
                role=hci.Role.CENTRAL,
                peer_address_type=peer.address_type,
                peer_address=peer,
                connection_interval=0,
                peripheral_latency=0,
                supervision_timeout=0,
                central_clock_accuracy=0,
            )
            asyncio.get_running_loop().call_soon(self.send_hci_packet, event)
        return result


_BY_ADDRESS: dict[str, EmulatedController] = {}  # advertiser address -> its controller


def _is_scan_response(packet: Any) -> bool:
    reports = getattr(packet, "reports", None)
    if not reports or not isinstance(
        packet, hci.HCI_LE_Extended_Advertising_Report_Event | hci.HCI_LE_Advertising_Report_Event
    ):
        return False
    scan_rsp = (
        hci.HCI_LE_Extended_Advertising_Report_Event.EventType.SCAN_RESPONSE,
        hci.HCI_LE_Advertising_Report_Event.EventType.SCAN_RSP,
    )
    return all(r.event_type in scan_rsp for r in reports)


def make_device(name: str, address: str, link: LocalLink) -> tuple[Device, EmulatedController]:
    """A bumble Device on its own emulated controller attached to ``link``."""
    controller = EmulatedController(name, link=link, public_address=address)
    _BY_ADDRESS[address.upper()] = controller
    host = Host(controller, AsyncPipeSink(controller))
    device = Device(name=name, address=hci.Address(address), host=host)
    return device, controller


class Central:
    """The gateway's BLE adapter on bumble: one Device shared by all scanners and clients."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self._listeners: dict[object, Callable[[Advertisement], None]] = {}
        self._scan_users = 0
        self._scan_lock = asyncio.Lock()
        self.connect_lock = asyncio.Lock()
        self._inflight: set[asyncio.Future[Any]] = set()
        self.adverts_seen = 0
        self.transport: Any = None
        #: GATT databases by peer address: (service handle, end, uuid, characteristics)
        self.gatt_cache: dict[str, list[Any]] = {}
        device.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)

    async def start(self) -> None:
        await self.device.power_on()

    async def close(self) -> None:
        if self.transport is not None:
            await self.transport.close()

    def backends(self) -> tuple[type[BumbleScanner], type[BumbleClient]]:
        """Scanner and client backend classes bound to this central, to pass as ``backend=``."""
        scanner = type("BumbleScanner", (BumbleScanner,), {"central": self})
        client = type("BumbleClient", (BumbleClient,), {"central": self})
        return scanner, client

    def _on_advertisement(self, adv: Advertisement) -> None:
        self.adverts_seen += 1
        for listener in list(self._listeners.values()):
            listener(adv)

    async def hci(self, coro: Any) -> Any:
        """Run an HCI exchange to completion even if the caller is cancelled or times out:
        bumble's host would otherwise take a cancelled command's late answer for the next's."""
        task = asyncio.ensure_future(coro)
        self._inflight.add(task)
        task.add_done_callback(self._settled)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if task.cancelled() and (me is None or not me.cancelling()):
                raise ConnectionError("HCI exchange cancelled by the stack") from None
            raise

    def _settled(self, task: asyncio.Future[Any]) -> None:
        self._inflight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("HCI exchange failed after its caller left: %s", task.exception())

    async def acquire_scan(self, token: object, listener: Callable[[Advertisement], None]) -> None:
        async with self._scan_lock:
            self._listeners[token] = listener
            self._scan_users += 1
            if self._scan_users == 1:
                await self.hci(self.device.start_scanning(filter_duplicates=False))

    async def release_scan(self, token: object) -> None:
        async with self._scan_lock:
            if self._listeners.pop(token, None) is None:
                return
            self._scan_users -= 1
            if self._scan_users == 0:
                await self.hci(self.device.stop_scanning())


async def central_over_hci(spec: str, address: str = "C0:00:00:00:00:01") -> Central:
    """The gateway's central on a controller reached through a bumble HCI transport spec
    (``tcp-client:127.0.0.1:9001`` for an emulated radio in another process, or
    ``hci-socket:0`` / ``usb:0`` for a real adapter). Call :meth:`Central.start` next; the
    transport closes with :meth:`Central.close`."""
    transport = await open_transport(spec)
    device = Device.with_hci("gateway", hci.Address(address), transport.source, transport.sink)
    central = Central(device)
    central.transport = transport
    return central


def advertisement_data(adv: Advertisement) -> AdvertisementData:
    """bumble's parsed advert -> bleak's AdvertisementData."""
    data = adv.data
    manufacturer: dict[int, bytes] = {}
    for company, payload in data.get_all(AdvertisingData.MANUFACTURER_SPECIFIC_DATA):
        manufacturer[company] = bytes(payload)
    service_data: dict[str, bytes] = {}
    for kind in (
        AdvertisingData.SERVICE_DATA_16_BIT_UUID,
        AdvertisingData.SERVICE_DATA_32_BIT_UUID,
        AdvertisingData.SERVICE_DATA_128_BIT_UUID,
    ):
        for uuid, payload in data.get_all(kind):
            service_data[_uuid_str(uuid)] = bytes(payload)
    uuids: list[str] = []
    for kind in (
        AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
        AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
        AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
        AdvertisingData.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
    ):
        for group in data.get_all(kind):
            uuids.extend(u for u in map(_uuid_str, group) if u not in uuids)
    name = data.get(AdvertisingData.COMPLETE_LOCAL_NAME) or data.get(
        AdvertisingData.SHORTENED_LOCAL_NAME
    )
    tx = data.get(AdvertisingData.TX_POWER_LEVEL)
    return AdvertisementData(
        local_name=name if isinstance(name, str) else None,
        manufacturer_data=manufacturer,
        service_data=service_data,
        service_uuids=uuids,
        tx_power=tx if isinstance(tx, int) else None,
        rssi=adv.rssi,
        platform_data=(adv,),
    )


def _uuid_str(uuid: Any) -> str:
    text = str(uuid.to_hex_str("-")).lower() if hasattr(uuid, "to_hex_str") else str(uuid)
    if len(text) == 4:
        return f"0000{text}-0000-1000-8000-00805f9b34fb"
    return text


class BumbleScanner(BaseBleakScanner):
    """bleak scanner backend: adverts heard by the shared central (refcounted scanning)."""

    central: ClassVar[Central]

    def __init__(
        self,
        detection_callback: Any,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._token = object()

    async def start(self) -> None:
        self.seen_devices = {}
        await self.central.acquire_scan(self._token, self._on_advertisement)

    async def stop(self) -> None:
        await self.central.release_scan(self._token)

    def _on_advertisement(self, adv: Advertisement) -> None:
        data = advertisement_data(adv)
        if not self.is_allowed_uuid(data.service_uuids):
            return
        address = str(adv.address).split("/")[0]
        device = self.create_or_update_device(address, address, data.local_name, adv, data)
        self.call_detection_callbacks(device, data)


class BumbleClient(BaseBleakClient):
    """bleak client backend: a GATT client over a bumble connection from the shared central."""

    central: ClassVar[Central]

    def __init__(self, address_or_ble_device: BLEDevice | str, **kwargs: Any) -> None:
        kwargs.pop("services", None)
        kwargs.pop("bluez", None)
        kwargs.pop("winrt", None)
        super().__init__(
            address_or_ble_device,
            disconnected_callback=kwargs.pop("disconnected_callback", None),
            timeout=kwargs.pop("timeout", 10.0),
        )
        self._connection: Connection | None = None
        self._peer: Peer | None = None

    @property
    def name(self) -> str:
        return self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        return int(self._connection.att_mtu) if self._connection is not None else 23

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        device = self.central.device
        async with self.central.connect_lock:  # bumble: one pending LE connection at a time
            try:
                connection = await device.connect(
                    hci.Address(self.address), timeout=kwargs.get("timeout", self._timeout)
                )
            except (hci.HCI_Error, core.BaseBumbleError, TimeoutError) as e:
                raise BleakDeviceNotFoundError(self.address, f"connect failed: {e}") from e
        self._connection = connection
        connection.on(Connection.EVENT_DISCONNECTION, self._on_disconnection)
        self._peer = Peer(connection)
        try:
            self.services = await self._op(self._discover())
        except BaseException:
            await self.disconnect()
            raise

    def _on_disconnection(self, reason: int) -> None:
        was = self._connection is not None
        self._connection = None
        self._peer = None
        if was and self._disconnected_callback is not None:
            self._disconnected_callback()

    async def disconnect(self) -> None:
        connection, self._connection = self._connection, None
        self._peer = None
        if connection is None:
            return
        with contextlib.suppress(hci.HCI_Error, core.BaseBumbleError, OSError, TimeoutError):
            async with asyncio.timeout(2.0):
                await self.central.hci(connection.disconnect())

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("pairing is not emulated")

    async def unpair(self) -> None:
        raise NotImplementedError("pairing is not emulated")

    async def _discover(self) -> BleakGATTServiceCollection:
        """The peer's GATT database, from the central's cache after the first connection (as
        BlueZ caches it), so a reconnect costs no discovery round trips."""
        assert self._connection is not None and self._peer is not None
        table = self.central.gatt_cache.get(self.address)
        if table is None:
            table = await self._discover_table()
            self.central.gatt_cache[self.address] = table
        client = self._connection.gatt_client
        collection = BleakGATTServiceCollection()
        for s_handle, s_end, s_uuid, chars in table:
            svc = ServiceProxy(client, s_handle, s_end, s_uuid)
            service = BleakGATTService(svc, s_handle, _uuid_str(s_uuid))
            collection.add_service(service)
            for c_handle, c_end, c_uuid, props, descs in chars:
                ch = CharacteristicProxy(client, c_handle, c_end, c_uuid, props)
                ch.descriptors = [DescriptorProxy(client, h, t) for h, t in descs]
                ch.descriptors_discovered = True
                svc.characteristics.append(ch)
                names = [name for flag, name in _PROPS.items() if props & flag]
                char = BleakGATTCharacteristic(
                    ch, c_handle, _uuid_str(c_uuid), names, lambda: self.mtu_size - 3, service
                )
                collection.add_characteristic(char)  # also adds it to its service
                for d in ch.descriptors:
                    desc = BleakGATTDescriptor(d, d.handle, _uuid_str(d.type), char)
                    collection.add_descriptor(desc)  # also adds it to its characteristic
        return collection

    async def _discover_table(self) -> list[Any]:
        assert self._peer is not None
        table = []
        for svc in await self._peer.discover_services():
            chars = []
            for ch in await svc.discover_characteristics():
                descs = [(d.handle, d.type) for d in await ch.discover_descriptors()]
                chars.append((ch.handle, ch.end_group_handle, ch.uuid, int(ch.properties), descs))
            table.append((svc.handle, svc.end_group_handle, svc.uuid, chars))
        return table

    async def _op(self, coro: Any) -> Any:
        """Run a GATT operation; a disconnect mid-operation becomes a BleakError, not a bare
        CancelledError (bumble cancels the pending ATT future)."""
        if self._connection is None:
            coro.close()
            raise BleakError(f"{self.address}: not connected")
        try:
            return await coro
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise BleakError(f"{self.address}: disconnected during a GATT operation") from None
        except hci.HCI_Error as e:
            raise BleakError(f"{self.address}: {e}") from e

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return bytearray(await self._op(characteristic.obj.read_value()))

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return bytearray(await self._op(descriptor.obj.read_value()))

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: Any, response: bool
    ) -> None:
        await self._op(characteristic.obj.write_value(bytes(data), with_response=response))

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: Any) -> None:
        await self._op(descriptor.obj.write_value(bytes(data), with_response=True))

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        def deliver(value: bytes) -> None:
            callback(bytearray(value))

        await self._op(characteristic.obj.subscribe(deliver, prefer_notify=True))

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        await self._op(characteristic.obj.unsubscribe())
