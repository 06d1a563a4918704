"""What MicroPython has built in and CPython lacks, for the gateway, emulators and tests.

Only :mod:`edge_node.compat` imports this module, and only under CPython; it is never deployed
to a board (no app's manifest lists it), so its code costs a node no heap.
"""

import os
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


def getrandbits32():
    b = os.urandom(4)
    return b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)
