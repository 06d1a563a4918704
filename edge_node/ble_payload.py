"""BLE encodings shared by node firmware, gateway and emulators (MicroPython and CPython).

Two contracts live here:

* **Counter adverts.** A pedestrian counter broadcasts its counts in manufacturer-specific data
  (AD type 0xFF) so a gateway hears hundreds of counters without a connection each. The payload
  after the 16-bit company id is 16 bytes, little-endian::

      0  magic      0x54 ('T')
      1  version    high nibble: format version (1); low nibble: kind (1 = counter)
      2  node_id    u32   the counter's identity; device id f"counter-{node_id:04d}"
      6  boot       u8    boot number mod 256: a new value restarts the cumulative counts
      7  seq        u16   rolling advert sequence number (+1 per new reading, wraps at 65536)
      9  count_in   u16   people counted in since boot (wraps at 65536)
     11  count_out  u16   people counted out since boot (wraps at 65536)
     13  battery    u8    0..100 %, 0xFF when the device has no battery gauge
     14  flags      u8    bit 0: low battery; bit 1: sensor blocked (tamper)
     15  crc8       u8    CRC-8 (poly 0x07, init 0x00) of bytes 0..14

  Counts are cumulative so a missed advert loses no people: the gateway reports the difference
  since the last advert it heard. With the 3-byte flags field the whole advert is 23 bytes,
  inside the 31-byte legacy limit.

* **Streetlight GATT.** A 128-bit service with one characteristic per quantity (read + notify;
  dim level and power state also write). Values are little-endian integers; the gateway's
  profile says each one's format and scale.

This module is the whole of both contracts for the gateway and the emulators. A node imports
only its own half (:mod:`edge_node.ble_counter` or :mod:`edge_node.ble_gatt`, both on
:mod:`edge_node.ble_ad`), which are re-exported here; the decoders are here alone.
No dataclasses or typing at run time: MicroPython can import these files.
"""

import struct

from edge_node.ble_ad import (
    AD_FLAGS,
    AD_MANUFACTURER,
    AD_NAME_COMPLETE,
    AD_NAME_SHORT,
    AD_UUID128_COMPLETE,
    ADV_FLAGS_GENERAL_NO_BREDR,
    LEGACY_ADV_MAX,
    PayloadError,
    ad_structure,
    check_legacy,
)
from edge_node.ble_counter import (
    COMPANY_ID,
    COUNTER_FMT,
    FLAG_LOW_BATTERY,
    FLAG_TAMPER,
    KIND_COUNTER,
    MAGIC,
    NO_BATTERY,
    PAYLOAD_LEN,
    VERSION,
    battery_percent,
    counter_advert,
    crc8,
    device_id,
    encode_counter,
    parse_device_id,
)
from edge_node.ble_gatt import (
    STREETLIGHT_CHARS,
    STREETLIGHT_SERVICE,
    decode_value,
    encode_value,
    streetlight_advert,
    uuid128_bytes,
)

__all__ = [
    "ADV_FLAGS_GENERAL_NO_BREDR",
    "AD_FLAGS",
    "AD_MANUFACTURER",
    "AD_NAME_COMPLETE",
    "AD_NAME_SHORT",
    "AD_UUID128_COMPLETE",
    "COMPANY_ID",
    "FLAG_LOW_BATTERY",
    "FLAG_TAMPER",
    "KIND_COUNTER",
    "LEGACY_ADV_MAX",
    "MAGIC",
    "NO_BATTERY",
    "PAYLOAD_LEN",
    "STREETLIGHT_CHARS",
    "STREETLIGHT_SERVICE",
    "VERSION",
    "PayloadError",
    "ad_structure",
    "battery_percent",
    "check_legacy",
    "counter_advert",
    "crc8",
    "decode_counter",
    "decode_value",
    "device_id",
    "encode_counter",
    "encode_value",
    "manufacturer_data",
    "parse_ad",
    "parse_device_id",
    "streetlight_advert",
    "uuid128_bytes",
]


def decode_counter(payload):
    # type: (bytes | bytearray) -> tuple[int, int, int, int, int, int | None, int]
    """Payload bytes -> (node_id, boot, seq, count_in, count_out, battery or None, flags).

    Raises PayloadError for anything that is not a valid counter payload; never anything else.
    """
    if len(payload) != PAYLOAD_LEN:
        raise PayloadError(f"counter payload is {len(payload)} bytes, expected {PAYLOAD_LEN}")
    if payload[0] != MAGIC:
        raise PayloadError(f"bad magic 0x{payload[0]:02x}")
    if payload[1] >> 4 != VERSION or payload[1] & 0x0F != KIND_COUNTER:
        raise PayloadError(f"unsupported version/kind 0x{payload[1]:02x}")
    if crc8(payload[:15]) != payload[15]:
        raise PayloadError("crc mismatch")
    fields = struct.unpack(COUNTER_FMT, bytes(payload[:15]))
    battery = fields[7]
    if battery == NO_BATTERY:
        battery = None
    elif battery > 100:
        raise PayloadError(f"battery {battery}% out of range")
    return (fields[2], fields[3], fields[4], fields[5], fields[6], battery, fields[8])


def parse_ad(adv):
    # type: (bytes | bytearray) -> list[tuple[int, bytes]]
    """Advertising data bytes -> list of (ad_type, data). Raises PayloadError on a bad length."""
    out = []
    i = 0
    n = len(adv)
    while i < n:
        length = adv[i]
        if length == 0:  # early terminator: the rest is padding
            break
        if i + 1 + length > n:
            raise PayloadError(f"AD structure at {i} overruns the advert")
        out.append((adv[i + 1], bytes(adv[i + 2 : i + 1 + length])))
        i += 1 + length
    return out


def manufacturer_data(adv):
    # type: (bytes | bytearray) -> dict[int, bytes]
    """Advertising data bytes -> {company_id: payload} for every manufacturer-specific field."""
    found = {}
    for ad_type, data in parse_ad(adv):
        if ad_type == AD_MANUFACTURER and len(data) >= 2:
            found[data[0] | (data[1] << 8)] = data[2:]
    return found
