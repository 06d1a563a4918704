"""One side of a rehearsal on columns: the same figures as the reading-by-reading replay, faster.

The replay in :mod:`gateway.rehearse.runner` builds a ``Reading`` per value, scores each batch
with :meth:`Detector.score` and encodes it with :func:`gateway.outbox.encode_rows` — about 50 s a
side for a day of 20 assets at 1 Hz, almost all of it per-reading Python. Here each asset's
series goes through :meth:`Detector.score_columns` (the rows a 5 s batching scores, the same
windows, model and anomaly state machine, so the same scores, flags and events), and the bytes of
every message are counted exactly from the lengths of its fields (:mod:`~gateway.rehearse.rowbytes`)
with the same batches, sequence numbers and broker outages.

Scoring latency is a property of the gateway's own path, so it is measured there: the first
:data:`TIMED_BATCHES` batches are also replayed through a fresh detector's ``score``, reading by
reading, and timed; their scores and alerts must equal the columnar ones, or the whole side is
replayed reading by reading instead (with a warning).
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from gateway.rehearse import rowbytes
from gateway.rehearse.scenario import Series

if TYPE_CHECKING:
    from gateway.detect.columns import ColumnScores
    from gateway.rehearse.runner import SideResult
    from gateway.rehearse.sides import Side

__all__ = ["TIMED_BATCHES", "run_columns"]

log = logging.getLogger(__name__)
I64 = npt.NDArray[np.int64]
TIMED_BATCHES = 720  # the first hour of 5 s batches


def run_columns(side: Side, inputs: list[Series], outages: list[tuple[float, float]],
                edges: list[float], cuts: dict[str, I64]) -> SideResult | None:  # fmt: skip
    """The side's result, or None when an input is not one the columnar path covers."""
    from gateway.rehearse.runner import _new_result

    det = side.detector({s.asset: s.category for s in inputs})
    result = _new_result(side, det, inputs)
    bytes_per_sample: dict[str, I64] = {}
    times: dict[bytes, I64] = {}  # assets sampled at the same times share their lengths
    for s in inputs:
        cut = cuts[s.asset]
        got = det.score_columns(s.asset, s.times, s.values, np.unique(cut[cut > 0]))
        if got is None:
            return None
        trace = result.traces[s.asset]
        trace.scores = got.scores
        for e in got.events:
            if e.state == "start":
                if e.mode == "active":
                    trace.alerts += 1
                else:
                    trace.shadow_alerts += 1
                trace.alert_times.append(e.observed_at)
        bytes_per_sample[s.asset] = _row_bytes(s, got, times)
        result.readings += len(s.times) * len(s.values)
    _count_feed(result, inputs, outages, edges, cuts, bytes_per_sample)
    result.models = det.stats()
    return result if _time_live(side, inputs, edges, cuts, result) else None


def _row_bytes(s: Series, got: ColumnScores, seen: dict[bytes, I64]) -> I64:
    """Bytes of each sample's rows in the feed, without their ``seq`` fields."""
    base = s.cache.get("row_bytes")
    if base is None:  # values, times and names: the same for both sides
        key = hashlib.sha256(s.times.tobytes()).digest()
        times = seen.get(key)
        if times is None:  # observed_at and received_at
            times = seen[key] = rowbytes.float_lengths(s.times, 3)
        base = np.zeros(len(s.times), dtype=np.int64)
        head = rowbytes.ROW_FRAME + rowbytes.json_length(s.asset)
        for q, v in s.values.items():
            fixed = head + rowbytes.json_length(q) + rowbytes.json_length(s.units[q])
            base += fixed + rowbytes.float_lengths(v) + 2 * times
        s.cache["row_bytes"] = base
    scored = sum(q in got.quantities for q in s.values)
    quality = np.where(got.suspect, rowbytes.SUSPECT, rowbytes.GOOD)
    unscored = (len(s.values) - scored) * (rowbytes.GOOD + rowbytes.NULL)
    return np.asarray(base + scored * (quality + rowbytes.score_lengths(got.scores)) + unscored)


def _count_feed(result: SideResult, inputs: list[Series], outages: list[tuple[float, float]],
                edges: list[float], cuts: dict[str, I64],
                bytes_per_sample: dict[str, I64]) -> None:  # fmt: skip
    """Publish every batch as the runner's feed does: held back in an outage, then backfilled."""
    rows = np.zeros(len(edges), dtype=np.int64)
    size = np.zeros(len(edges), dtype=np.int64)
    for s in inputs:
        cut = cuts[s.asset]
        total = np.concatenate([[0], np.cumsum(bytes_per_sample[s.asset])])
        rows += np.diff(cut, prepend=0) * len(s.values)
        size += np.diff(total[cut], prepend=0)
    feed = _Counter(result, sorted(outages))
    for edge, n, b in zip(edges, rows.tolist(), size.tolist(), strict=True):
        feed.offer(n, b, edge)
    feed.offer(0, 0, math.inf)


class _Counter:
    """:class:`gateway.rehearse.runner._Feed` on counts: readings and their bytes without seq."""

    def __init__(self, result: SideResult, outages: list[tuple[float, float]]) -> None:
        self.result, self.outages = result, outages
        self.seq, self.held, self.held_bytes = 1, 0, 0

    def offer(self, rows: int, row_bytes: int, t: float) -> None:
        if any(start <= t < end for start, end in self.outages):
            self.held += rows
            self.held_bytes += row_bytes
            self.result.backlog_max_readings = max(self.result.backlog_max_readings, self.held)
            return
        if self.held:
            self.result.backfill_bytes += self._publish(self.held, self.held_bytes)
            self.result.backfill_readings += self.held
            self.held = self.held_bytes = 0
        if rows:
            self._publish(rows, row_bytes)

    def _publish(self, rows: int, row_bytes: int) -> int:
        size = rowbytes.message_bytes(rows, row_bytes, self.seq)
        self.seq += rows
        self.result.published_bytes += size
        self.result.messages += 1
        return size


def _time_live(side: Side, inputs: list[Series], edges: list[float], cuts: dict[str, I64],
               result: SideResult) -> bool:  # fmt: skip
    """Time the gateway's own path on the first batches; False if it disagrees with columns."""
    from gateway.rehearse.runner import _run_readings

    k = min(TIMED_BATCHES, len(edges))
    head = []
    for s in inputs:
        n = int(cuts[s.asset][k - 1]) if k else 0
        head.append(Series(s.asset, s.category, s.times[:n],
                           {q: v[:n] for q, v in s.values.items()}, s.units))  # fmt: skip
    live = _run_readings(side, head, [], edges[:k], {a: c[:k] for a, c in cuts.items()},
                         encode=False)  # fmt: skip
    for h in head:
        mine, theirs = result.traces[h.asset], live.traces[h.asset]
        same = np.array_equal(mine.scores[: len(h.times)], theirs.scores, equal_nan=True)
        alerts = mine.alert_times[: len(theirs.alert_times)]  # later batches raise the rest
        if not same or alerts != theirs.alert_times:
            log.warning("%s: columnar scoring differs from Detector.score on its first %d "
                        "batches; replaying the side reading by reading", h.asset, k)  # fmt: skip
            return False
    result.score_seconds, result.batch_ms = live.score_seconds, live.batch_ms
    result.timed_readings = live.readings
    return True
