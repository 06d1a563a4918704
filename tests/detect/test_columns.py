"""Columnar scoring gives what Detector.score gives the same readings, batch for batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.detect import AnomalyEvent, Detector
from gateway.readings import Quality, Reading
from hil_tests.emulators import physics
from hil_tests.emulators.sampling import sample_series

T0 = 1784592000.0  # 2026-07-21 00:00 UTC
ASSETS = {"wq": "water-quality", "light": "streetlight", "ctr": "pedestrian-counter"}
Arr = np.ndarray[Any, np.dtype[Any]]


def _series(step: float, hours: float) -> dict[str, tuple[Arr, dict[str, Arr]]]:
    """Each asset's times and columns, with faults the models flag."""
    times = T0 + 15 * 3600 + step * np.arange(1, int(hours * 3600 / step) + 1)
    water = physics.WaterQualitySim(5, T0)
    water.inject("pollution", T0 + 16 * 3600, 2 * 3600)
    light = physics.StreetlightSim(6, T0)
    light.inject("day_burning", T0 + 15.5 * 3600, 3 * 3600)
    counter = physics.CounterSim(7, T0, 1.5)
    counter.inject("burst", T0 + 17 * 3600, 2 * 3600, factor=4.0, extra=2.0)
    return {
        "wq": (times, sample_series(water, times)),
        "light": (times, sample_series(light, times)),
        "ctr": (times, sample_series(counter, times, step)),  # with battery and rssi
    }


def _batches(times: Arr, batch: float) -> Arr:
    edges = np.arange(times[0], times[-1] + batch, batch) + batch
    return np.asarray(np.searchsorted(times, edges, side="left"))


def _by_readings(det: Detector, asset: str, times: Arr, columns: dict[str, Arr], cuts: Arr,
                 lo: int = 0) -> tuple[Arr, Arr, list[AnomalyEvent]]:  # fmt: skip
    """The gateway's path: one Reading per value, Detector.score per batch."""
    n = len(times)
    scores, suspect, events = np.full(n, np.nan), np.zeros(n, dtype=bool), []
    for hi in cuts.tolist():
        if hi <= lo:
            continue
        batch = [Reading(asset, q, float(v[i]), "", float(times[i]), float(times[i]), seq=i)
                 for i in range(lo, hi) for q, v in columns.items()]  # fmt: skip
        events += det.score(batch)
        for r in batch:
            if r.score is not None:
                scores[r.seq] = r.score
                suspect[r.seq] = r.quality is Quality.SUSPECT
        lo = hi
    return scores, suspect, events


def _key(e: AnomalyEvent) -> tuple[Any, ...]:
    return (e.asset, e.state, e.mode, e.observed_at, e.score, e.threshold, e.quantities)


@pytest.mark.parametrize(
    ("step", "batch", "setup"),
    [
        (1.0, 5.0, {}),  # the rehearsal's 1 Hz input in 5 s batches
        (2.0, 7.0, {"threshold": 0.2}),  # batches that do not divide the model's period
        (10.0, 650.0, {"mode": "shadow"}),  # several rows per batch; shadow flags nothing
    ],
)
def test_columns_equal_readings(models_dir: Path, step: float, batch: float,
                                setup: dict[str, Any]) -> None:  # fmt: skip
    series = _series(step, 5.0)
    dets = [Detector.load(models_dir, ASSETS) for _ in range(2)]
    for det in dets:
        if "threshold" in setup:
            det.set_threshold("wq", setup["threshold"])
            det.set_threshold("ctr", setup["threshold"])
        if "mode" in setup:
            det.set_mode("water-quality", setup["mode"])
    slow, fast = dets
    flagged = raised = 0
    for asset, (times, columns) in series.items():
        cuts = _batches(times, batch)
        scores, suspect, events = _by_readings(slow, asset, times, columns, cuts)
        got = fast.score_columns(asset, times, columns, np.unique(cuts[cuts > 0]))
        assert got is not None
        assert np.array_equal(got.scores, scores, equal_nan=True), asset
        assert np.array_equal(got.suspect, suspect), asset
        assert [_key(e) for e in got.events] == [_key(e) for e in events], asset
        flagged += int(got.suspect.sum())
        raised += len(got.events)
    assert raised > 0 and (flagged > 100 or setup.get("mode") == "shadow")  # faults are seen
    for category, stats in slow.stats().items():
        for k in ("rows_scored", "rows_flagged", "events"):
            assert fast.stats()[category][k] == stats[k], (category, k)


def test_columns_leave_the_windows_as_score_does(models_dir: Path) -> None:
    """Readings after a columnar stretch score as if every reading had gone through score."""
    series = _series(1.0, 3.0)
    slow, fast = Detector.load(models_dir, ASSETS), Detector.load(models_dir, ASSETS)
    for asset, (times, columns) in series.items():
        cuts = _batches(times, 5.0)
        half = len(cuts) // 2 + 7
        head = np.unique(cuts[:half][cuts[:half] > 0])
        want = _by_readings(slow, asset, times, columns, cuts)
        got = fast.score_columns(asset, times[: head[-1]], {q: v[: head[-1]] for q, v in
                                 columns.items()}, head)  # fmt: skip
        assert got is not None
        rest = _by_readings(fast, asset, times, columns, cuts[half:], lo=int(head[-1]))
        assert np.array_equal(rest[0][head[-1] :], want[0][head[-1] :], equal_nan=True), asset
        assert [_key(e) for e in got.events + rest[2]] == [_key(e) for e in want[2]], asset


def test_unsupported_input_is_left_to_score(models_dir: Path) -> None:
    times, columns = _series(1.0, 0.5)["wq"]
    det = Detector.load(models_dir, ASSETS)
    ends = np.array([len(times)])
    holed = dict(columns, ph=np.where(np.arange(len(times)) == 9, np.nan, columns["ph"]))
    assert det.score_columns("wq", times, holed, ends) is None  # a missing value
    assert det.score_columns("wq", times, {"ph": columns["ph"]}, ends) is None  # quantities
    assert det.score_columns("wq", times[::-1].copy(), columns, ends) is None  # time goes back
    assert det.stats()["water-quality"]["rows_scored"] == 0
    assert det.score_columns("wq", times, columns, ends) is not None
    assert det.score_columns("wq", times, columns, ends) is None  # scored already
