"""Pedestrian-counter adverts: the payload (shared with the gateway) and the node's uplink.

A counter broadcasts its counts in manufacturer-specific data (AD type 0xFF) so a gateway hears
hundreds of counters without a connection each; the layout is in :mod:`edge_node.ble_payload`,
which also has the gateway's decoder. :class:`CounterAdvertiser` adds each report's counts to
cumulative totals and re-advertises them with a rolling sequence number (legacy 31-byte
adverts, not connectable: the counter has no GATT service), so a missed advert loses nobody.
It takes the ``bluetooth.BLE()`` object from the board, never creates it.
"""

import asyncio
import struct

from edge_node.ble_ad import AD_MANUFACTURER, ad_structure, check_legacy, flags_structure
from edge_node.compat import const

COMPANY_ID = 0xFFFF  # Bluetooth SIG: reserved for tests and internal use; profiles may override
MAGIC = 0x54
VERSION = 1
KIND_COUNTER = 1
PAYLOAD_LEN = 16
NO_BATTERY = 0xFF
FLAG_LOW_BATTERY = 0x01
FLAG_TAMPER = 0x02
COUNTER_FMT = "<BBIBHHHBB"  # without the trailing crc8
_LOW_BATTERY_PERCENT = const(15)
_E_SENSOR = const(3)  # node.E_SENSOR: a sensor error (the beam is blocked)


def crc8(data, crc=0):
    # type: (bytes | bytearray, int) -> int
    """CRC-8, polynomial 0x07 (ATM/SMBus), no reflection, no final xor."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def device_id(node_id):
    # type: (int) -> str
    """The device id a counter is known by in site files: ``counter-0007``."""
    return "counter-%04d" % node_id


def parse_device_id(text):
    # type: (str) -> int
    """``counter-0007`` (or a bare number) -> node id 7; ValueError for anything else."""
    digits = text[8:] if text.startswith("counter-") else text
    if not digits or not digits.isdigit():
        raise ValueError("expected a device id such as 'counter-0007', got %r" % text)
    node_id = int(digits)
    if node_id > 0xFFFFFFFF:
        raise ValueError("node id out of range: %r" % text)
    return node_id


def battery_percent(value):
    # type: (float) -> int
    """A battery gauge reading in % -> the advertised byte: rounded, clamped to 0..100."""
    return max(0, min(100, round(value)))


def encode_counter(node_id, boot, seq, count_in, count_out, battery=NO_BATTERY, flags=0):
    # type: (int, int, int, int, int, int, int) -> bytes
    """The 16-byte manufacturer payload (after the company id) of one counter advert."""
    body = struct.pack(
        COUNTER_FMT,
        MAGIC,
        (VERSION << 4) | KIND_COUNTER,
        node_id & 0xFFFFFFFF,
        boot & 0xFF,
        seq & 0xFFFF,
        count_in & 0xFFFF,
        count_out & 0xFFFF,
        battery & 0xFF,
        flags & 0xFF,
    )
    return body + bytes((crc8(body),))


def counter_advert(
    node_id, boot, seq, count_in, count_out, battery=NO_BATTERY, flags=0, company_id=COMPANY_ID
):
    # type: (int, int, int, int, int, int, int, int) -> bytes
    """Complete legacy advertising data (flags + manufacturer data) for a counter: 23 bytes."""
    payload = encode_counter(node_id, boot, seq, count_in, count_out, battery, flags)
    adv = flags_structure() + ad_structure(AD_MANUFACTURER, struct.pack("<H", company_id) + payload)
    return check_legacy(adv)


class CounterAdvertiser:
    def __init__(self, ble, node_id, boot, interval_ms=1000, company_id=COMPANY_ID):
        self.ble = ble
        self.node_id = node_id
        self.boot = boot
        self.interval_us = interval_ms * 1000
        self.company_id = company_id
        self.seq = 0
        self.count_in = 0
        self.count_out = 0
        self.battery = NO_BATTERY
        self.flags = 0
        self.errors = 0
        self.advert = b""

    def submit(self, values, time):
        for name, value in values:
            if name == "count_in":
                self.count_in = (self.count_in + int(value)) & 0xFFFF
            elif name == "count_out":
                self.count_out = (self.count_out + int(value)) & 0xFFFF
            elif name == "battery":
                self.battery = battery_percent(value)
                if self.battery < _LOW_BATTERY_PERCENT:
                    self.flags |= FLAG_LOW_BATTERY
                else:
                    self.flags &= ~FLAG_LOW_BATTERY
        self.seq = (self.seq + 1) & 0xFFFF
        self.advertise()

    def advertise(self):
        self.advert = counter_advert(
            self.node_id, self.boot, self.seq, self.count_in, self.count_out,
            self.battery, self.flags, self.company_id,
        )  # fmt: skip
        # not connectable: nothing to connect to, and a connection would stop the adverts
        self.ble.gap_advertise(self.interval_us, adv_data=self.advert, connectable=False)

    def error(self, code, ref, text):
        self.errors += 1
        if code == _E_SENSOR:  # a sensor error: tell the gateway the beam is blocked
            self.flags |= FLAG_TAMPER

    async def run(self, node):
        self.ble.active(True)
        self.advertise()
        await asyncio.Event().wait()  # adverts go out from the radio; nothing to receive
