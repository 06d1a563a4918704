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

No dataclasses or typing at run time: MicroPython imports this file.
"""

import struct

COMPANY_ID = 0xFFFF  # Bluetooth SIG: reserved for tests and internal use; profiles may override
MAGIC = 0x54
VERSION = 1
KIND_COUNTER = 1
PAYLOAD_LEN = 16
LEGACY_ADV_MAX = 31
NO_BATTERY = 0xFF
FLAG_LOW_BATTERY = 0x01
FLAG_TAMPER = 0x02

AD_FLAGS = 0x01
AD_NAME_SHORT = 0x08
AD_NAME_COMPLETE = 0x09
AD_UUID128_COMPLETE = 0x07
AD_MANUFACTURER = 0xFF
ADV_FLAGS_GENERAL_NO_BREDR = 0x06

_COUNTER_FMT = "<BBIBHHHBB"  # without the trailing crc8

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

_FORMATS = {"u8": "<B", "s8": "<b", "u16": "<H", "s16": "<h", "u32": "<I", "s32": "<i"}
_LIMITS = {
    "u8": (0, 0xFF),
    "s8": (-0x80, 0x7F),
    "u16": (0, 0xFFFF),
    "s16": (-0x8000, 0x7FFF),
    "u32": (0, 0xFFFFFFFF),
    "s32": (-0x80000000, 0x7FFFFFFF),
}


class PayloadError(ValueError):
    """Bytes that are not a valid payload (wrong length, magic, version or CRC)."""


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
    return f"counter-{node_id:04d}"


def parse_device_id(text):
    # type: (str) -> int
    """``counter-0007`` (or a bare number) -> node id 7; ValueError for anything else."""
    digits = text[8:] if text.startswith("counter-") else text
    if not digits or not digits.isdigit():
        raise ValueError(f"expected a device id such as 'counter-0007', got {text!r}")
    node_id = int(digits)
    if node_id > 0xFFFFFFFF:
        raise ValueError(f"node id out of range: {text!r}")
    return node_id


def encode_counter(node_id, boot, seq, count_in, count_out, battery=NO_BATTERY, flags=0):
    # type: (int, int, int, int, int, int, int) -> bytes
    """The 16-byte manufacturer payload (after the company id) of one counter advert."""
    body = struct.pack(
        _COUNTER_FMT,
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
    fields = struct.unpack(_COUNTER_FMT, bytes(payload[:15]))
    battery = fields[7]
    if battery == NO_BATTERY:
        battery = None
    elif battery > 100:
        raise PayloadError(f"battery {battery}% out of range")
    return (fields[2], fields[3], fields[4], fields[5], fields[6], battery, fields[8])


def ad_structure(ad_type, data):
    # type: (int, bytes) -> bytes
    """One AD structure: length, type, data."""
    if len(data) > 29:
        raise PayloadError(f"AD structure data of {len(data)} bytes is too long")
    return bytes((len(data) + 1, ad_type)) + bytes(data)


def counter_advert(
    node_id, boot, seq, count_in, count_out, battery=NO_BATTERY, flags=0, company_id=COMPANY_ID
):
    # type: (int, int, int, int, int, int, int, int) -> bytes
    """Complete legacy advertising data (flags + manufacturer data) for a counter: 23 bytes."""
    payload = encode_counter(node_id, boot, seq, count_in, count_out, battery, flags)
    adv = ad_structure(AD_FLAGS, bytes((ADV_FLAGS_GENERAL_NO_BREDR,)))
    adv += ad_structure(AD_MANUFACTURER, struct.pack("<H", company_id) + payload)
    check_legacy(adv)
    return adv


def check_legacy(adv):
    # type: (bytes) -> bytes
    """Raise PayloadError if advertising data exceeds the 31-byte legacy limit."""
    if len(adv) > LEGACY_ADV_MAX:
        raise PayloadError(f"advert is {len(adv)} bytes, legacy limit is {LEGACY_ADV_MAX}")
    return adv


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


def uuid128_bytes(uuid):
    # type: (str) -> bytes
    """A 128-bit UUID string -> the 16 little-endian bytes used in advertising data."""
    raw = bytes.fromhex(uuid.replace("-", ""))
    if len(raw) != 16:
        raise PayloadError(f"not a 128-bit UUID: {uuid!r}")
    return bytes(reversed(raw))


def streetlight_advert(name):
    # type: (str) -> bytes
    """Advertising data for a streetlight controller: flags, 128-bit service UUID, short name."""
    adv = ad_structure(AD_FLAGS, bytes((ADV_FLAGS_GENERAL_NO_BREDR,)))
    adv += ad_structure(AD_UUID128_COMPLETE, uuid128_bytes(STREETLIGHT_SERVICE))
    room = LEGACY_ADV_MAX - len(adv) - 2
    raw = name.encode()
    kind = AD_NAME_COMPLETE if len(raw) <= room else AD_NAME_SHORT
    adv += ad_structure(kind, raw[:room])
    return check_legacy(adv)


def encode_value(fmt, raw):
    # type: (str, float) -> bytes
    """Integer -> characteristic bytes in format ``fmt`` (u8, s8, u16, s16, u32, s32)."""
    try:
        code = _FORMATS[fmt]
    except KeyError:
        raise PayloadError(f"unknown value format {fmt!r}") from None
    low, high = _LIMITS[fmt]
    try:
        value = int(raw)
    except (OverflowError, ValueError, TypeError):
        raise PayloadError(f"{raw!r} is not an integer") from None
    if not low <= value <= high:  # MicroPython's struct would silently truncate
        raise PayloadError(f"{raw!r} does not fit format {fmt}")
    return struct.pack(code, value)


def decode_value(fmt, data):
    # type: (str, bytes | bytearray) -> int
    """Characteristic bytes -> integer; PayloadError if the length does not match ``fmt``."""
    try:
        code = _FORMATS[fmt]
    except KeyError:
        raise PayloadError(f"unknown value format {fmt!r}") from None
    if len(data) != struct.calcsize(code):
        raise PayloadError(f"{len(data)} bytes for format {fmt}")
    value = struct.unpack(code, bytes(data))[0]  # type: int
    return value
