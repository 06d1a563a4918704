"""Small differences between MicroPython and CPython, kept in one place.

On a board everything comes from MicroPython's own modules; under CPython from
:mod:`edge_node.cpython`, which is not deployed.
"""

__all__ = ["const", "ticks_add", "ticks_diff", "ticks_ms"]

try:
    from time import ticks_add, ticks_diff, ticks_ms  # type: ignore[attr-defined]

    from micropython import const
except ImportError:  # CPython
    from edge_node.cpython import const, ticks_add, ticks_diff, ticks_ms  # type: ignore
