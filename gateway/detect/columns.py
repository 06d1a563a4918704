"""Columnar scoring: one asset's whole series through the detector at once, same results.

:meth:`Detector.score` takes readings one at a time, the way they arrive. A rehearsal already
holds each asset's input as columns (times, one array per quantity), and feeding ~10 million
``Reading`` objects through the per-reading loop costs far more than the models do.
:func:`score_columns` takes one asset's series and the sample index at which each batch of
``score`` calls would have ended, and works out in numpy which rows ``score`` would have sent to
the model, with which window, fill count and time: a row is scored when the next row starts with
updates still unscored, and — for models without summed quantities — at the end of every batch
(the newest row is complete); the readings of a counter's open row take the asset's current score
and state at the end of a batch. The windows go through the same :func:`features.compute` and
model, and the scores through the detector's own ``_transition`` in the same order, so the scores,
flags and anomaly events are the ones ``score`` gives (pinned by ``tests/detect/test_columns.py``).

It covers the case the rehearsal's scenarios produce: every sample carries every quantity of the
model, finite, in non-decreasing time, and the model has a positive period. :func:`supported`
says whether an asset's input qualifies; anything else goes through :meth:`Detector.score`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from gateway.detect import features

if TYPE_CHECKING:
    from gateway.detect.detector import AnomalyEvent, Detector, _Model, _Window

__all__ = ["ColumnScores", "score_columns", "supported"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
CHUNK = 4096  # rows per model call (bounds the memory of the stacked windows)


@dataclass(slots=True)
class ColumnScores:
    """Per sample: the score its readings got (NaN: none yet) and whether they were marked
    suspect; the anomaly events in order; the rows scored and the seconds spent scoring them."""

    scores: F64
    suspect: npt.NDArray[np.bool_]
    events: list[AnomalyEvent]
    rows: int
    seconds: float
    quantities: tuple[str, ...]  # the ones the model scores (their readings get score, quality)


def supported(det: Detector, asset: str, times: F64, columns: dict[str, F64]) -> bool:
    """Whether :func:`score_columns` can stand in for :meth:`Detector.score` on this input."""
    model = det._model_of(asset)
    if model is None:
        return True  # nothing to score
    if model.bundle.period_s <= 0.0 or asset in det._windows:
        return False
    if any(q not in columns for q in model.qindex):
        return False
    if len(times) > 1 and not bool(np.all(np.diff(times) >= 0.0)):
        return False
    return all(bool(np.isfinite(columns[q]).all()) for q in model.qindex)


def score_columns(det: Detector, asset: str, times: F64, columns: dict[str, F64],
                  ends: I64) -> ColumnScores:  # fmt: skip
    """Score ``asset``'s samples as ``score`` would in batches ending before each of ``ends``.

    ``ends`` are increasing sample indices (the last one ``len(times)``); the readings of one
    sample are its model quantities at the same time. The asset must be :func:`supported` and
    not scored before; its window is left as ``score`` would have left it.
    """
    n = len(times)
    model = det._model_of(asset)
    if model is None or n == 0:
        quantities = tuple(model.qindex) if model is not None else ()
        return ColumnScores(np.full(n, np.nan), np.zeros(n, dtype=bool), [], 0, 0.0, quantities)
    values = np.column_stack([columns[q] for q in model.qindex]).astype(np.float64)
    starts = _row_starts(times, model.bundle.period_s)
    row = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, n)))
    state, finals = _row_states(values, starts, np.asarray(model.summed, dtype=bool))
    batch = np.repeat(np.arange(len(ends)), np.diff(np.concatenate([[0], ends])))
    last = _requests(starts, ends, batch, model.has_sums)
    win = det._windows[asset] = model.new_window()
    t0 = time.perf_counter()
    windows = _windows(state, finals, row, np.append(last, n - 1), model.bundle.window)
    filled = np.asarray(row[last] + 1.0, dtype=np.float64)
    scores = _run_model(model, windows[:-1], filled, times[last])
    model.record(scores, time.perf_counter() - t0)
    got, flagged, after, events = _transitions(det, model, asset, windows, filled, times[last],
                                                scores)  # fmt: skip
    seconds = time.perf_counter() - t0
    active = model.mode == "active"
    out, suspect = np.full(n, np.nan), np.zeros(n, dtype=bool)
    req = np.searchsorted(last, np.arange(n), side="left")  # the first row scored at or after
    if model.has_sums:  # readings not taken by a row in their batch are provisional
        taken = req < len(last)  # by a row scored when the next row began in the same batch
        taken[taken] = batch[last[req[taken]] + 1] == batch[np.flatnonzero(taken)]
        open_ = ~taken
        # rows scored by the end of their batch: those whose next row began before it ended
        done = np.searchsorted(last + 1, ends[batch[open_]], side="left") - 1
        has = done >= 0
        idx = np.flatnonzero(open_)
        out[idx[has]] = got[done[has]]
        suspect[idx[has]] = after[done[has]] & active
        req_idx = np.flatnonzero(taken)
        out[req_idx] = got[req[req_idx]]
        suspect[req_idx] = flagged[req[req_idx]] & active
    else:
        out[:] = got[req]
        suspect[:] = flagged[req] & active
    _leave(
        win, windows[-1], len(starts), float(times[starts[-1]]), float(times[-1]), model.has_sums
    )
    return ColumnScores(out, suspect, events, len(last), seconds, tuple(model.qindex))


def _row_starts(times: F64, period: float) -> I64:
    """Where each window row begins: the first sample at or after the row's start + period."""
    starts, s, n = [0], 0, len(times)
    while True:
        s = int(np.searchsorted(times, float(times[s]) + period, side="left"))
        if s >= n:
            return np.asarray(starts, dtype=np.int64)
        starts.append(s)


def _row_states(values: F64, starts: I64, summed: npt.NDArray[np.bool_]) -> tuple[F64, F64]:
    """Each sample's newest-row values (a running sum for summed quantities) and each row's
    final values."""
    state = values.copy()
    if summed.any():
        for lo, hi in zip(starts.tolist(), [*starts[1:].tolist(), len(values)], strict=True):
            state[lo:hi, summed] = np.cumsum(values[lo:hi, summed], axis=0)
    finals = state[np.append(starts[1:], len(values)) - 1]
    return state, finals


def _requests(starts: I64, ends: I64, batch: I64, sums: bool) -> I64:
    """The last sample of every row ``score`` sends to the model, in order.

    A row is scored when the next one starts with updates not scored yet: for a model with
    summed quantities always (its rows are scored only then); otherwise only when the new row
    does not start a batch (the end of the previous batch scored it). Models without sums also
    score at the end of every batch.
    """
    boundary = starts[1:]
    if not sums:
        boundary = boundary[batch[boundary] == batch[boundary - 1]]
        return np.unique(np.concatenate([boundary - 1, ends - 1]))
    return np.asarray(boundary - 1, dtype=np.int64)


def _windows(state: F64, finals: F64, row: I64, last: I64, length: int) -> F64:
    """The window ``score`` holds after sample ``last``: older rows' final values (padded with
    the first row's) and the newest row's values so far; ``(len(last), length, Q)``."""
    padded = np.concatenate([np.repeat(finals[:1], length - 1, axis=0), finals])
    rows = row[last]
    w = padded[rows[:, None] + np.arange(length)[None, :]]
    w[:, -1, :] = state[last]
    first = rows == 0  # a one-row window is that row repeated
    w[first] = state[last[first]][:, None, :]
    return np.asarray(w, dtype=np.float64)


def _run_model(model: _Model, windows: F64, filled: F64, times: F64) -> npt.NDArray[np.float32]:
    b = model.bundle
    out = [b.run(features.compute(b.feature_set, windows[i : i + CHUNK], filled[i : i + CHUNK],
                                  times[i : i + CHUNK], b.params))
           for i in range(0, len(windows), CHUNK)]  # fmt: skip
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def _transitions(
    det: Detector, model: _Model, asset: str, windows: F64, filled: F64, times: F64,
    scores: npt.NDArray[np.float32],
) -> tuple[F64, Bools, Bools, list[AnomalyEvent]]:  # fmt: skip
    """The detector's own anomaly state machine over the scored rows, in order: each row's
    score, whether it reached the threshold, and whether the asset was in anomaly after it."""
    from gateway.detect.detector import _Request

    got = np.asarray(scores.tolist(), dtype=np.float64)
    thr = det._thresholds.get(asset, model.bundle.threshold)
    flagged = got >= thr
    after = np.zeros(len(got), dtype=bool)
    win = det._windows[asset]
    events: list[AnomalyEvent] = []
    rows = zip(scores.tolist(), flagged.tolist(), filled.tolist(), times.tolist(), strict=True)
    for k, (s, f, fill, t) in enumerate(rows):
        req = _Request(asset, windows[k], int(fill), t, [])
        events.extend(det._transition(model, req, s, thr, f))
        after[k] = win.flagged
    model.flagged += int(flagged.sum())
    return got, flagged, after, events


def _leave(win: _Window, window: F64, filled: int, row_time: float, last_time: float,
           sums: bool) -> None:  # fmt: skip
    """Leave the window as ``score`` would: the newest row complete, open if not scored."""
    win.values = window.copy()
    win.received = [True] * len(win.received)
    win.n_received = len(win.received)
    win.seen_all = True
    win.filled, win.row_time, win.last_time = filled, row_time, last_time
    win.open = sums
