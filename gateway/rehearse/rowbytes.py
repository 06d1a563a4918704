"""Exact byte counts of the feed's reading rows without building them one by one.

A readings message is ``[row,row,...]`` where each row is the JSON array
``[seq,"asset","quantity",value,"unit",observed_at,received_at,"quality",score]`` written by
:func:`gateway.outbox.encode_rows` (compact separators, UTF-8). Its length is therefore the sum,
over its rows, of two brackets, eight commas and the length of each field as JSON, plus a comma
between rows and the message's own brackets. Every field's JSON is the ``repr`` of a float
(values, times rounded to the millisecond, scores rounded to 4 places), the digits of an integer,
a quoted string or ``null`` — so the lengths are counted exactly, once per value, with numpy
doing the adding up. ``tests/rehearse/test_rowbytes.py`` pins these counts to ``encode_rows``.
"""

from __future__ import annotations

import json
from itertools import repeat

import numpy as np
import numpy.typing as npt

__all__ = [
    "float_lengths", "float_lengths_once", "json_length", "message_bytes", "score_lengths",
    "seq_digits",
]  # fmt: skip

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
ROW_FRAME = 2 + 8  # a row's brackets and the commas between its nine fields
GOOD, SUSPECT, NULL = len('"good"'), len('"suspect"'), len("null")


def json_length(text: str) -> int:
    """Bytes of a string as the feed writes it (JSON, quoted and escaped, UTF-8)."""
    return len(json.dumps(text, ensure_ascii=False).encode())


def float_lengths(values: F64, ndigits: int | None = None) -> I64:
    """Length of each value's JSON (``repr``; ``round(v, ndigits)`` first when given).

    The whole column is written once by the json module, and the lengths are read off between
    its commas: the same text as ``json.dumps`` writes for each value on its own.
    """
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    if ndigits is None:  # each distinct value once (by its bits: -0.0 is not 0.0 here)
        bits, inverse = np.unique(values.view(np.uint64), return_inverse=True)
        if bits.size < values.size // 2:
            return float_lengths_once(bits.view(np.float64))[inverse.reshape(-1)]
    return float_lengths_once(values, ndigits)


def float_lengths_once(values: F64, ndigits: int | None = None) -> I64:
    """:func:`float_lengths` with every value written, repeated or not."""
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    items = values.tolist()
    if ndigits is not None:
        items = list(map(round, items, repeat(ndigits)))
    text = np.frombuffer(json.dumps(items, separators=(",", ":")).encode(), dtype=np.uint8)
    bounds = np.concatenate([[0], np.flatnonzero(text == ord(",")), [text.size - 1]])
    return np.asarray(np.diff(bounds) - 1, dtype=np.int64)


def score_lengths(scores: F64) -> I64:
    """Length of each score's JSON as the feed writes it: ``round(score, 4)``, or ``null``."""
    out = np.full(scores.size, NULL, dtype=np.int64)
    have = ~np.isnan(scores)
    if have.any():
        unique, inverse = np.unique(scores[have], return_inverse=True)
        out[have] = float_lengths(unique, 4)[inverse]
    return out


def seq_digits(first: int, last: int) -> int:
    """Total number of decimal digits of the integers ``first..last`` (positive; 0 if empty)."""
    return _digits_upto(last) - _digits_upto(first - 1) if last >= first else 0


def _digits_upto(m: int) -> int:
    total, low, width = 0, 1, 1
    while m >= low * 10:  # the numbers low..10*low-1 all have `width` digits
        total += 9 * low * width
        low, width = low * 10, width + 1
    return total + (m - low + 1) * width if m >= low else total


def message_bytes(rows: int, row_bytes: int, first_seq: int) -> int:
    """Bytes of one readings message of ``rows`` rows numbered from ``first_seq``, whose rows
    take ``row_bytes`` bytes without their ``seq`` field; with the array's brackets."""
    return row_bytes + seq_digits(first_seq, first_seq + rows - 1) + (rows - 1) + 2
