"""Run one side of a rehearsal: the real detector and the real feed encoding on the same input.

Readings are replayed in time order, in batches of ``batch`` seconds of sample time (as the
gateway scores what arrived together), through :meth:`Detector.score`; every batch is encoded
with :func:`gateway.outbox.encode_rows` to count the bytes the feed would carry. During a broker
outage nothing is published: the batches wait as backlog and go out as backfill when it ends.
A sample (one asset at one time) counts as flagged when its score reaches the asset's threshold
and the model is active (a shadow model's would-be alerts are counted apart);
precision, recall, F1 and detection delay against the labels come from the models' own
evaluation code (:func:`gateway.detect.training.metrics`).

Input with every value present (scenarios) takes the columnar path of
:mod:`~gateway.rehearse.columnar`: the same batches, scores, flags, alerts and exact byte counts
without a ``Reading`` per value (``tests/rehearse/test_rowbytes.py`` pins it to this replay).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.outbox import encode_rows
from gateway.readings import Reading
from gateway.rehearse.scenario import Series
from gateway.rehearse.sides import Side

__all__ = ["AssetTrace", "SideResult", "resample", "run_side"]

Cuts = dict[str, npt.NDArray[np.int64]]  # per asset: the sample index where each batch ends


@dataclass(slots=True)
class AssetTrace:
    """What one side saw and did for one asset: sample times, scores and flags, alerts."""

    asset: str
    category: str
    threshold: float | None
    times: npt.NDArray[np.float64]
    scores: npt.NDArray[np.float64]
    alerts: int = 0
    shadow_alerts: int = 0
    alert_times: list[float] = field(default_factory=list)
    active: bool = True  # the model is in active mode (shadow flags nothing)

    @property
    def flagged(self) -> npt.NDArray[np.bool_]:
        """Samples this side would have marked suspect (none in shadow mode)."""
        if self.threshold is None or not self.active:
            return np.zeros(len(self.times), dtype=bool)
        return np.nan_to_num(self.scores, nan=-1.0) >= self.threshold


@dataclass(slots=True)
class SideResult:
    side: str
    source: str
    traces: dict[str, AssetTrace]
    readings: int = 0
    published_bytes: int = 0
    messages: int = 0
    backlog_max_readings: int = 0
    backfill_readings: int = 0
    backfill_bytes: int = 0
    score_seconds: float = 0.0
    batch_ms: list[float] = field(default_factory=list)
    timed_readings: int = 0  # readings in the timed batches, when not all were timed
    models: dict[str, Any] = field(default_factory=dict)

    def latency(self) -> dict[str, float | None]:
        ms = np.asarray(self.batch_ms)
        if not ms.size:
            return {"us_per_reading": None, "batch_p50_ms": None, "batch_p99_ms": None,
                    "timed_batches": 0}  # fmt: skip
        p50, p99 = np.percentile(ms, (50, 99)).tolist()
        timed = self.timed_readings or self.readings
        per = self.score_seconds / timed * 1e6 if timed else None
        return {"us_per_reading": None if per is None else round(per, 2),
                "batch_p50_ms": round(p50, 3), "batch_p99_ms": round(p99, 3),
                "timed_batches": int(ms.size)}  # fmt: skip


def resample(series: Series, period: float | None) -> Series:
    """Keep the first sample of each ``period`` (a longer reporting period than the input's)."""
    if period is None or len(series.times) < 2:
        return series
    slot = np.floor((series.times - series.times[0]) / period)
    keep = np.concatenate([[True], np.diff(slot) > 0])
    return Series(series.asset, series.category, series.times[keep],
                  {q: v[keep] for q, v in series.values.items()}, series.units,
                  series.labels)  # fmt: skip


class _Feed:
    """Counts what the feed would publish, holding batches back during broker outages."""

    def __init__(self, result: SideResult, outages: list[tuple[float, float]]) -> None:
        self.result, self.outages = result, sorted(outages)
        self.seq, self.backlog = 1, list[Reading]()

    def _down(self, t: float) -> bool:
        return any(start <= t < end for start, end in self.outages)

    def offer(self, batch: list[Reading], t: float) -> None:
        if self._down(t):
            self.backlog.extend(batch)
            self.result.backlog_max_readings = max(self.result.backlog_max_readings,
                                                   len(self.backlog))  # fmt: skip
            return
        if self.backlog:
            size = self._publish(self.backlog)
            self.result.backfill_readings += len(self.backlog)
            self.result.backfill_bytes += size
            self.backlog = []
        if batch:
            self._publish(batch)

    def _publish(self, readings: list[Reading]) -> int:
        size = len(encode_rows(readings, self.seq).encode()) + 2  # the JSON array's brackets
        self.seq += len(readings)
        self.result.published_bytes += size
        self.result.messages += 1
        return size

    def close(self) -> None:
        self.offer([], math.inf)


def run_side(side: Side, inputs: list[Series], outages: list[tuple[float, float]],
             batch: float = 5.0) -> SideResult:  # fmt: skip
    """Replay ``inputs`` (already at this side's periods) through a fresh detector of ``side``.

    Inputs with every value finite (scenarios) take the columnar path, with the same results;
    the rest (a recording with gaps) is replayed reading by reading.
    """
    from gateway.rehearse.columnar import run_columns

    edges, cuts = _batches(inputs, batch)
    if all(_finite(s) for s in inputs):
        result = run_columns(side, inputs, outages, edges, cuts)
        if result is not None:
            return result
    return _run_readings(side, inputs, outages, edges, cuts)


def _finite(s: Series) -> bool:
    return all(bool(np.isfinite(v).all()) for v in s.values.values())


def _batches(inputs: list[Series], batch: float) -> tuple[list[float], Cuts]:
    """Batch ends in sample time, and per asset the sample index where each batch ends."""
    start = min((float(s.times[0]) for s in inputs if len(s.times)), default=0.0)
    end = max((float(s.times[-1]) for s in inputs if len(s.times)), default=0.0)
    edges = np.arange(start, end + batch, batch) + batch  # batch k holds times < edges[k]
    cuts = {s.asset: np.searchsorted(s.times, edges, side="left") for s in inputs}
    return edges.tolist(), cuts


def _new_result(side: Side, det: Any, inputs: list[Series]) -> SideResult:
    result = SideResult(side.name, side.source, {})
    modes = {c: m["mode"] for c, m in det.stats().items()}
    for s in inputs:
        thr = side.threshold(det, s.asset, s.category)
        result.traces[s.asset] = AssetTrace(s.asset, s.category, thr, s.times,
                                            np.full(len(s.times), np.nan),
                                            active=modes.get(s.category) == "active")  # fmt: skip
    return result


def _run_readings(side: Side, inputs: list[Series], outages: list[tuple[float, float]],
                  edges: list[float], cuts: Cuts, encode: bool = True) -> SideResult:  # fmt: skip
    """The gateway's own path: ``Reading`` objects, ``Detector.score`` and ``encode_rows``."""
    assets = {s.asset: s.category for s in inputs}
    det = side.detector(assets)
    result = _new_result(side, det, inputs)
    feed = _Feed(result, outages)
    prev = dict.fromkeys(assets, 0)
    for k, edge in enumerate(edges):
        readings: list[Reading] = []
        owners: list[tuple[AssetTrace, int, int]] = []
        for s in inputs:
            lo, hi = prev[s.asset], int(cuts[s.asset][k])
            if hi > lo:
                owners.append((result.traces[s.asset], lo, len(readings)))
                readings.extend(_readings(s, lo, hi))
                prev[s.asset] = hi
        if readings:
            _score(det, readings, owners, result)
        if encode:
            feed.offer(readings, edge)
    if encode:
        feed.close()
    result.models = det.stats()
    return result


def _readings(s: Series, lo: int, hi: int) -> list[Reading]:
    out = []
    cols = [(q, s.units[q], v[lo:hi].tolist()) for q, v in s.values.items()]
    for i, t in enumerate(s.times[lo:hi].tolist()):
        seq = lo + i + 1
        for q, unit, vals in cols:
            v = vals[i]
            if v == v:  # a recording may miss a quantity at some times (NaN)
                out.append(Reading(s.asset, q, v, unit, t, t, device=s.asset, seq=seq))
    return out


def _score(det: Any, readings: list[Reading], owners: list[tuple[AssetTrace, int, int]],
           result: SideResult) -> None:  # fmt: skip
    t0 = time.perf_counter()
    events = det.score(readings)
    dt = time.perf_counter() - t0
    result.score_seconds += dt
    result.batch_ms.append(dt * 1000.0)
    result.readings += len(readings)
    bounds = [pos for _, _, pos in owners[1:]] + [len(readings)]
    for (trace, lo, pos), stop in zip(owners, bounds, strict=True):
        first = readings[pos].seq
        for r in readings[pos:stop]:
            if r.score is not None:
                trace.scores[lo + r.seq - first] = r.score
    for e in events:
        if e.state != "start":
            continue
        trace = result.traces[e.asset]
        if e.mode == "active":
            trace.alerts += 1
        else:
            trace.shadow_alerts += 1
        trace.alert_times.append(e.observed_at)
