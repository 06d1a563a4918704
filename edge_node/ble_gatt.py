"""The streetlight's GATT service: its encodings (shared with the gateway) and the node's uplink.

A 128-bit service with one characteristic per quantity (read + notify; dim level and power
state also write). Values are little-endian integers; :data:`STREETLIGHT_CHARS` says each
one's format and scale, as the gateway's ``streetlight-ble`` profile does.
:class:`GattPeripheral` takes the ``bluetooth.BLE()`` object from the board, registers the
service, advertises it, notifies connected centrals of each report and passes writes from a
central to ``on_write(quantity, value)``.
"""

import asyncio
import struct

from edge_node.ble_ad import (
    AD_NAME_COMPLETE,
    AD_NAME_SHORT,
    AD_UUID128_COMPLETE,
    LEGACY_ADV_MAX,
    PayloadError,
    ad_structure,
    check_legacy,
    flags_structure,
)
from edge_node.compat import const

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_FLAG_READ = const(0x0002)
_FLAG_WRITE = const(0x0008)
_FLAG_NOTIFY = const(0x0010)

# Streetlight controller: 128-bit UUIDs "7e1a0XXX-5c3b-4e1d-9a2f-7477696e6564" ("twined")
_UUID_BASE = "7e1a%04x-5c3b-4e1d-9a2f-7477696e6564"
STREETLIGHT_SERVICE = _UUID_BASE % 0x0100
STREETLIGHT_CHARS = {
    # quantity: (uuid, format, scale of the raw integer, writable)
    "power_state": (_UUID_BASE % 0x0101, "u8", 1, True),
    "dim_level": (_UUID_BASE % 0x0102, "u8", 1, True),
    "power": (_UUID_BASE % 0x0103, "u16", 0.1, False),  # 0.1 W
    "voltage": (_UUID_BASE % 0x0104, "u16", 0.01, False),  # 10 mV
    "current": (_UUID_BASE % 0x0105, "u16", 0.001, False),  # mA
    "lamp_fault": (_UUID_BASE % 0x0106, "u8", 1, False),
}

# value format -> (struct code, lowest, highest)
_FORMATS = {
    "u8": ("<B", 0, 0xFF),
    "s8": ("<b", -0x80, 0x7F),
    "u16": ("<H", 0, 0xFFFF),
    "s16": ("<h", -0x8000, 0x7FFF),
    "u32": ("<I", 0, 0xFFFFFFFF),
    "s32": ("<i", -0x80000000, 0x7FFFFFFF),
}


def uuid128_bytes(uuid):
    # type: (str) -> bytes
    """A 128-bit UUID string -> the 16 little-endian bytes used in advertising data."""
    raw = bytes.fromhex(uuid.replace("-", ""))
    if len(raw) != 16:
        raise PayloadError("not a 128-bit UUID: %r" % uuid)
    return bytes(reversed(raw))


def streetlight_advert(name):
    # type: (str) -> bytes
    """Advertising data for a streetlight controller: flags, 128-bit service UUID, short name."""
    adv = flags_structure() + ad_structure(AD_UUID128_COMPLETE, uuid128_bytes(STREETLIGHT_SERVICE))
    room = LEGACY_ADV_MAX - len(adv) - 2
    raw = name.encode()
    kind = AD_NAME_COMPLETE if len(raw) <= room else AD_NAME_SHORT
    adv += ad_structure(kind, raw[:room])
    return check_legacy(adv)


def _format(fmt):
    # type: (str) -> tuple[str, int, int]
    try:
        return _FORMATS[fmt]
    except KeyError:
        raise PayloadError("unknown value format %r" % fmt) from None


def encode_value(fmt, raw):
    # type: (str, float) -> bytes
    """Integer -> characteristic bytes in format ``fmt`` (u8, s8, u16, s16, u32, s32)."""
    code, low, high = _format(fmt)
    try:
        value = int(raw)
    except (OverflowError, ValueError, TypeError):
        raise PayloadError("%r is not an integer" % (raw,)) from None
    if not low <= value <= high:  # MicroPython's struct would silently truncate
        raise PayloadError("%r does not fit format %s" % (raw, fmt))
    return struct.pack(code, value)


def decode_value(fmt, data):
    # type: (str, bytes | bytearray) -> int
    """Characteristic bytes -> integer; PayloadError if the length does not match ``fmt``."""
    code = _format(fmt)[0]
    if len(data) != struct.calcsize(code):
        raise PayloadError("%d bytes for format %s" % (len(data), fmt))
    value = struct.unpack(code, bytes(data))[0]  # type: int
    return value


class GattPeripheral:
    def __init__(self, ble, name, on_write, interval_ms=250):
        self.ble = ble
        self.name = name
        self.on_write = on_write
        self.interval_us = interval_ms * 1000
        self.handles = {}  # quantity -> value handle
        self.quantities = {}  # value handle -> quantity
        self.connections = set()
        self.writes = asyncio.Event()
        self._pending = []
        self.errors = 0

    def register(self):
        import bluetooth  # only here: the unix port and CPython tests pass a BLE-like object

        chars = []
        names = list(STREETLIGHT_CHARS)
        for q in names:
            uuid, _, _, writable = STREETLIGHT_CHARS[q]
            flags = _FLAG_READ | _FLAG_NOTIFY | (_FLAG_WRITE if writable else 0)
            chars.append((bluetooth.UUID(uuid), flags))
        service = (bluetooth.UUID(STREETLIGHT_SERVICE), tuple(chars))
        ((handles),) = self.ble.gatts_register_services((service,))
        for i in range(len(names)):
            self.handles[names[i]] = handles[i]
            self.quantities[handles[i]] = names[i]

    def _irq(self, event, data):
        if event == _IRQ_CENTRAL_CONNECT:
            self.connections.add(data[0])
        elif event == _IRQ_CENTRAL_DISCONNECT:
            self.connections.discard(data[0])
            self._advertise()
        elif event == _IRQ_GATTS_WRITE:
            self._pending.append(data[1])
            self.writes.set()

    def _advertise(self):
        self.ble.gap_advertise(self.interval_us, adv_data=streetlight_advert(self.name))

    def submit(self, values, time):
        for name, value in values:
            spec = STREETLIGHT_CHARS.get(name)
            handle = self.handles.get(name)
            if spec is None or handle is None:
                continue
            try:
                data = encode_value(spec[1], round(value / spec[2]))
            except PayloadError:
                self.errors += 1
                continue
            self.ble.gatts_write(handle, data)
            for conn in self.connections:
                self.ble.gatts_notify(conn, handle)

    def error(self, code, ref, text):
        self.errors += 1

    async def run(self, node):
        self.ble.active(True)
        self.ble.irq(self._irq)
        self.register()
        self._advertise()
        while True:
            await self.writes.wait()
            self.writes.clear()
            while self._pending:
                self._apply(self._pending.pop(0))

    def _apply(self, handle):
        q = self.quantities.get(handle)
        if q is None:
            return
        fmt, scale = STREETLIGHT_CHARS[q][1], STREETLIGHT_CHARS[q][2]
        try:
            value = decode_value(fmt, self.ble.gatts_read(handle)) * scale
        except PayloadError:
            self.errors += 1
            return
        self.on_write(q, value)
