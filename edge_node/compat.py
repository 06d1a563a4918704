"""Small differences between MicroPython and CPython, kept in one place."""

import time

try:
    ticks_ms = time.ticks_ms  # type: ignore[attr-defined]
    ticks_diff = time.ticks_diff  # type: ignore[attr-defined]
    ticks_add = time.ticks_add  # type: ignore[attr-defined]
except AttributeError:  # CPython

    def ticks_ms():
        return time.monotonic_ns() // 1_000_000  # type: ignore[attr-defined]

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, b):
        return a + b


def getrandbits32():
    """32 random bits (a boot id), from the port's RNG."""
    try:
        import random

        return random.getrandbits(32)
    except (ImportError, AttributeError):
        import os

        b = os.urandom(4)
        return b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)
