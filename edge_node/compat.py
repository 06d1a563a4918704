"""Small differences between MicroPython and CPython, kept in one place.

On a board everything comes from MicroPython's own modules; under CPython from
:mod:`edge_node.cpython`, which is not deployed.
"""

__all__ = ["const", "getrandbits32", "ticks_add", "ticks_diff", "ticks_ms"]

try:
    from random import getrandbits
    from time import ticks_add, ticks_diff, ticks_ms  # type: ignore[attr-defined]

    from micropython import const

    def getrandbits32():
        """32 random bits (a boot id), from the port's RNG."""
        return getrandbits(32)

except ImportError:  # CPython
    from edge_node.cpython import const, getrandbits32, ticks_add, ticks_diff, ticks_ms  # type: ignore
