"""Legacy BLE advertising data: AD structures and the 31-byte limit (node and gateway).

The node half of :mod:`edge_node.ble_payload` is split by kind of device (this module,
:mod:`edge_node.ble_counter`, :mod:`edge_node.ble_gatt`) so that a node loads only what it
broadcasts: every module costs heap on a board.
"""

LEGACY_ADV_MAX = 31
AD_FLAGS = 0x01
AD_NAME_SHORT = 0x08
AD_NAME_COMPLETE = 0x09
AD_UUID128_COMPLETE = 0x07
AD_MANUFACTURER = 0xFF
ADV_FLAGS_GENERAL_NO_BREDR = 0x06


class PayloadError(ValueError):
    """Bytes that are not a valid payload (wrong length, magic, version or CRC)."""


def ad_structure(ad_type, data):
    # type: (int, bytes) -> bytes
    """One AD structure: length, type, data."""
    if len(data) > 29:
        raise PayloadError("AD structure data of %d bytes is too long" % len(data))
    return bytes((len(data) + 1, ad_type)) + bytes(data)


def check_legacy(adv):
    # type: (bytes) -> bytes
    """Raise PayloadError if advertising data exceeds the 31-byte legacy limit."""
    if len(adv) > LEGACY_ADV_MAX:
        raise PayloadError("advert is %d bytes, legacy limit is %d" % (len(adv), LEGACY_ADV_MAX))
    return adv


def flags_structure():
    # type: () -> bytes
    """The flags AD structure every twinedge advert starts with (LE general, no BR/EDR)."""
    return ad_structure(AD_FLAGS, bytes((ADV_FLAGS_GENERAL_NO_BREDR,)))
