"""What MicroPython has built in and CPython lacks, for the gateway, emulators and tests.

Only :mod:`edge_node.compat` imports this module, and only under CPython; it is never deployed
to a board (no app's manifest lists it), so its code costs a node no heap.
"""

import binascii
import time


def const(x):
    """MicroPython's compile-time constant; a no-op here."""
    return x


def ticks_ms():
    return time.monotonic_ns() // 1_000_000  # type: ignore[attr-defined]


def ticks_diff(a, b):
    return a - b


def ticks_add(a, b):
    return a + b


def crc16(data):
    """CRC-16/CCITT-FALSE of ``data``, in C (MicroPython's binascii has no crc_hqx)."""
    return binascii.crc_hqx(data, 0xFFFF)  # type: ignore[attr-defined]
