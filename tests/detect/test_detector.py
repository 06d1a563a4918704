"""The runtime stage: windows per asset, batch scoring, flags, events, shadow mode, hot swap."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from gateway.detect import AnomalyEvent, Detector, load_bundle
from gateway.detect import features as feats
from gateway.detect.datasets import scenario
from gateway.errors import ModelError
from gateway.readings import Quality, Reading
from hil_tests.emulators.physics import WaterQualitySim

HOUR = 3600.0
T0 = 1_790_000_000.0  # 2026-09-21
UNITS = {"temperature": "CEL", "ph": "C62", "conductivity": "G42", "dissolved_oxygen": "M1",
         "turbidity": "NTU", "orp": "2Z"}  # fmt: skip


def _rows(sim: WaterQualitySim, start: float, hours: float) -> list[tuple[float, dict[str, float]]]:
    n = int(hours * HOUR / 300.0)
    return [(start + i * 300.0, sim.sample(start + i * 300.0)) for i in range(1, n + 1)]


def _readings(asset: str, t: float, row: dict[str, float]) -> list[Reading]:
    return [Reading(asset, q, v, UNITS[q], t + 0.5, t) for q, v in row.items()]


def _detector(models_dir: Path, **assets: str) -> Detector:
    return Detector.load(models_dir, assets or {"wq-1": "water-quality"})


def test_runtime_scores_equal_the_offline_pipeline(models_dir: Path) -> None:
    sc = scenario("water-quality", 10_123, 2.0, ("pollution", "stuck"))
    bundle = load_bundle(models_dir / "water-quality")
    windows, filled = feats.sliding(sc.values, bundle.window)
    x = feats.compute(bundle.feature_set, windows, filled, sc.times, bundle.params)
    offline = bundle.run(x)
    det = _detector(models_dir)
    names = list(UNITS)
    online = []
    for i, t in enumerate(sc.times.tolist()):  # one row (six readings) per batch
        batch = _readings("wq-1", t, dict(zip(names, sc.values[i].tolist(), strict=True)))
        det.score(batch)
        assert len({r.score for r in batch}) == 1
        online.append(batch[0].score)
    np.testing.assert_allclose(online, offline, rtol=0, atol=1e-6)
    # the same readings in big batches (many rows of the asset per batch) score the same
    det2 = _detector(models_dir)
    all_readings = [
        r for i, t in enumerate(sc.times.tolist())
        for r in _readings("wq-1", t, dict(zip(names, sc.values[i].tolist(), strict=True)))
    ]  # fmt: skip
    for k in range(0, len(all_readings), 500):
        det2.score(all_readings[k : k + 500])
    # the reading that completes a row carries that row's score; a row cut by a batch boundary
    # is scored only once it is complete (its first readings carry the previous row's score)
    np.testing.assert_allclose([r.score for r in all_readings[5::6]], offline, atol=1e-6)
    split = [i for i in range(len(offline)) if (i * 6) // 500 != (i * 6 + 5) // 500]
    np.testing.assert_allclose(
        [all_readings[i * 6].score for i in split], offline[[i - 1 for i in split]], atol=1e-6
    )


def _run_fault(det: Detector, seed: int = 10_321) -> tuple[list[Reading], list[AnomalyEvent]]:
    sim = WaterQualitySim(seed, T0)
    sim.inject("pollution", T0 + 24 * HOUR, 6 * HOUR, severity=1.2)
    readings: list[Reading] = []
    events: list[AnomalyEvent] = []
    for t, row in _rows(sim, T0, 40):
        batch = _readings("wq-1", t, row)
        events += det.score(batch)
        readings += batch
    return readings, events


def test_pollution_raises_one_event_and_marks_readings_suspect(models_dir: Path) -> None:
    det = _detector(models_dir)
    readings, events = _run_fault(det)
    starts = [e for e in events if e.state == "start"]
    ends = [e for e in events if e.state == "end"]
    during = [e for e in starts if T0 + 24 * HOUR <= e.observed_at < T0 + 30 * HOUR]
    assert len(during) == 1 and len(starts) <= 2, [e.as_dict() for e in events]
    ev = during[0]
    assert ev.observed_at - (T0 + 24 * HOUR) <= 1800.0  # caught within half an hour
    assert any(e.observed_at > ev.observed_at for e in ends)  # and cleared afterwards
    doc = ev.as_dict()
    assert doc["detectedBy"] == "water-quality@1.0.0" and doc["type"] == "anomaly"
    assert doc["thresholdBreach"]["score"] >= doc["thresholdBreach"]["threshold"]
    assert set(doc["anomalousProperty"]) & {"dissolved_oxygen", "turbidity", "conductivity", "orp"}
    assert doc["dateDetected"].endswith("Z")
    json.dumps(doc, allow_nan=False)
    inside = [r for r in readings if T0 + 25 * HOUR <= r.time < T0 + 29 * HOUR]
    assert inside and all(r.quality is Quality.SUSPECT for r in inside)
    before = [r for r in readings if T0 + 12 * HOUR <= r.time < T0 + 23 * HOUR]
    assert sum(r.quality is Quality.SUSPECT for r in before) <= len(before) // 20
    st = det.stats()["water-quality"]
    assert st["rows_scored"] == 40 * 12 and st["events"] == len(events)
    assert st["mode"] == "active" and len(st["sha256"]) == 64
    assert 0.0 <= st["scores"]["p50"] <= st["scores"]["p95"] <= st["scores"]["p99"] <= 1.0
    assert st["us_per_row"] > 0.0


def test_shadow_mode_scores_and_reports_but_never_flags(models_dir: Path) -> None:
    det = _detector(models_dir)
    det.set_mode("water-quality", "shadow")
    readings, events = _run_fault(det)
    assert all(r.quality is Quality.GOOD for r in readings)
    assert all(r.score is not None for r in readings)
    assert events and all(e.mode == "shadow" for e in events)
    assert det.stats()["water-quality"]["mode"] == "shadow"
    with pytest.raises(ModelError, match="mode must be one of"):
        det.set_mode("water-quality", "off")
    with pytest.raises(ModelError, match="no anomaly model for category 'tram'"):
        det.set_mode("tram", "shadow")


def test_per_asset_threshold(models_dir: Path) -> None:
    det = _detector(models_dir, **{"wq-1": "water-quality", "wq-2": "water-quality"})
    det.set_threshold("wq-1", 1e-6)  # everything is above this
    sim = WaterQualitySim(4, T0)
    batch: list[Reading] = []
    for t, row in _rows(sim, T0, 1):
        batch += _readings("wq-1", t, row) + _readings("wq-2", t, row)
    det.score(batch)
    assert all(r.quality is Quality.SUSPECT for r in batch if r.asset == "wq-1")
    assert not any(r.quality is Quality.SUSPECT for r in batch if r.asset == "wq-2")
    with pytest.raises(ModelError, match="unknown asset 'nope'"):
        det.set_threshold("nope", 0.5)
    with pytest.raises(ValueError, match=r"threshold must be a number in \(0, 1\]"):
        det.set_threshold("wq-1", 1.5)


def test_unscored_and_bad_readings_pass_through(
    models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    det = _detector(models_dir, **{"wq-1": "water-quality", "tram-1": "tram-stop"})
    batch = [
        Reading("tram-1", "count", 3.0, "C62", T0),
        Reading("wq-1", "battery", 88.0, "P1", T0),
        Reading("wq-1", "ph", math.nan, "C62", T0),
        Reading("wq-1", "ph", 7.1, "C62", T0, quality=Quality.INVALID),
        Reading("ghost", "ph", 7.1, "C62", T0),
        Reading("wq-1", "temperature", 14.0, "CEL", T0),
    ]
    assert det.score(batch) == []
    assert all(r.score is None for r in batch)  # the asset's first row is not complete yet
    assert det.bad_readings == 2
    warned = [r for r in caplog.records if "not scored" in r.getMessage()]
    assert len(warned) == 1 and "wq-1: ph value nan" in warned[0].getMessage()
    rest = [Reading("wq-1", q, v, UNITS[q], T0 + 1.0, T0 + 1.0) for q, v in
            (("ph", 7.4), ("conductivity", 500.0), ("dissolved_oxygen", 9.0),
             ("turbidity", 5.0), ("orp", 240.0))]  # fmt: skip
    det.score(rest)
    assert all(r.score is not None and 0.0 <= r.score <= 1.0 for r in rest)
    assert set(det.stats()) == {"water-quality"}


def test_hot_swap_refuses_a_bad_bundle_and_keeps_scoring(
    models_dir: Path, bundle_copy: Path
) -> None:
    det = _detector(models_dir)
    sim = WaterQualitySim(6, T0)
    rows = _rows(sim, T0, 2)
    for t, row in rows[:12]:
        det.score(_readings("wq-1", t, row))
    before = det.stats()["water-quality"]
    with (bundle_copy / "model.onnx").open("ab") as f:
        f.write(b"junk")
    with pytest.raises(ModelError, match=r"model\.onnx: sha256"):
        det.swap(bundle_copy)
    t, row = rows[12]
    batch = _readings("wq-1", t, row)
    det.score(batch)
    assert all(r.score is not None for r in batch)
    after = det.stats()["water-quality"]
    assert after["sha256"] == before["sha256"] and after["rows_scored"] == 13

    good = bundle_copy.parent / "wq-v2"
    shutil.copytree(models_dir / "water-quality", good, ignore=shutil.ignore_patterns("*.py"))
    doc = json.loads((good / "manifest.json").read_text())
    doc["version"] = "1.0.1"
    (good / "manifest.json").write_text(json.dumps(doc))
    det.set_mode("water-quality", "shadow")
    assert det.swap(good) == "water-quality@1.0.1"
    for t, row in rows[13:]:
        det.score(_readings("wq-1", t, row))
    st = det.stats()["water-quality"]
    assert st["model"] == "water-quality@1.0.1" and st["mode"] == "shadow"
    assert st["rows_scored"] == len(rows) - 13


def test_load_refuses_a_bad_bundle_naming_its_file(models_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    for name in ("water-quality", "streetlight"):
        shutil.copytree(models_dir / name, root / name, ignore=shutil.ignore_patterns("*.py"))
    (root / "streetlight" / "model.onnx").write_bytes(b"\x08\x01")
    det = Detector.load(root, {"wq-1": "water-quality"})  # streetlight is not needed here
    assert set(det.stats()) == {"water-quality"}
    with pytest.raises(ModelError, match=r"streetlight/model\.onnx: sha256"):
        Detector.load(root, {"wq-1": "water-quality", "lamp-1": "streetlight"})
    with pytest.raises(ModelError, match="not a directory"):
        Detector.load(tmp_path / "absent", {"wq-1": "water-quality"})


@pytest.mark.parametrize(
    ("family", "kinds"),
    [
        ("streetlight", ("lamp_failed", "cycling")),
        ("pedestrian-counter", ("stuck_zero", "direction_failure")),
    ],
)
def test_runtime_matches_offline_for_every_family(
    models_dir: Path, family: str, kinds: tuple[str, ...]
) -> None:
    sc = scenario(family, 10_777, 2.0, kinds, faults_per_day=1.5)
    bundle = load_bundle(models_dir / family)
    windows, filled = feats.sliding(sc.values, bundle.window)
    x = feats.compute(bundle.feature_set, windows, filled, sc.times, bundle.params)
    offline = bundle.run(x)
    det = Detector.load(models_dir, {"dev-1": family})
    events: list[AnomalyEvent] = []
    scored: list[float | None] = []
    for i, t in enumerate(sc.times.tolist()):
        batch = [
            Reading("dev-1", q, v, bundle.units[q], t, t)
            for q, v in zip(bundle.quantities, sc.values[i].tolist(), strict=True)
        ]
        events += det.score(batch)
        scored.append(batch[-1].score)
    # summed rows (counts) are scored when the next row starts: their score arrives a row later
    lag = 1 if bundle.manifest["window"].get("sum") else 0
    np.testing.assert_allclose(scored[lag:], offline[: len(offline) - lag], atol=1e-6)
    # the faults were found: flagged rows overlap the truth, and events come in start/end pairs
    flagged = offline >= bundle.threshold
    assert sc.truth.any() and (flagged & sc.truth).sum() >= 0.8 * sc.truth.sum()
    states = [e.state for e in events]
    assert states[::2] == ["start"] * len(states[::2]) and "end" not in states[::2]


def test_a_clock_jumping_back_starts_a_new_row(models_dir: Path) -> None:
    det = _detector(models_dir)
    sim = WaterQualitySim(12, T0)
    rows = _rows(sim, T0, 1)
    for t, row in rows:
        det.score(_readings("wq-1", t, row))
    before = det.stats()["water-quality"]["rows_scored"]
    reset = T0 - 86400.0  # the node rebooted with yesterday's clock
    for k in range(3):
        det.score(_readings("wq-1", reset + k * 300.0, rows[k][1]))
    assert det.stats()["water-quality"]["rows_scored"] == before + 3


def test_counts_reported_every_minute_add_up_to_the_models_rows(models_dir: Path) -> None:
    """A counter reporting every 60 s: each 5-minute row sums its five reports, as in training."""
    sc = scenario("pedestrian-counter", 10_555, 1.5, ("stuck_zero",), faults_per_day=2.0)
    bundle = load_bundle(models_dir / "pedestrian-counter")
    windows, filled = feats.sliding(sc.values, bundle.window)
    offline = bundle.run(
        feats.compute(bundle.feature_set, windows, filled, sc.times, bundle.params)
    )
    det = Detector.load(models_dir, {"c-1": "pedestrian-counter"})
    first_of_row: list[Reading] = []
    for i, t in enumerate(sc.times.tolist()):
        counts = sc.values[i].astype(int)
        parts = np.array([np.diff(np.linspace(0, c, 6).round()) for c in counts])  # 5 reports
        for k in range(5):
            ts = t - 240.0 + 60.0 * k  # the reports of the minutes ending t-240 ... t
            batch = [Reading("c-1", q, float(parts[j, k]), "IE", ts, ts)
                     for j, q in enumerate(("count_in", "count_out"))]  # fmt: skip
            det.score([*batch, Reading("c-1", "battery", 90.0, "P1", ts, ts)])
            if k == 0:
                first_of_row.append(batch[0])
    # a row is scored when the next one starts; its score reaches the next row's readings
    got = [r.score for r in first_of_row[1:]]
    np.testing.assert_allclose(got, offline[:-1], atol=1e-6)


def test_a_lone_high_score_inside_a_row_flags_readings_but_raises_no_event(
    models_dir: Path,
) -> None:
    """A probe reporting every second: one glitched sample is suspect, not an anomaly event."""
    det = _detector(models_dir)
    sim = WaterQualitySim(8, T0)
    events: list[AnomalyEvent] = []
    glitch: list[Reading] = []
    for k in range(1200):
        t = T0 + k
        row = sim.sample(t)
        if k == 700:  # mid-row: the next samples overwrite it before the row closes
            row |= {"turbidity": row["turbidity"] + 400.0, "orp": row["orp"] - 300.0}
        batch = _readings("wq-1", t, row)
        events += det.score(batch)
        if k == 700:
            glitch = batch
    assert all(r.quality is Quality.SUSPECT for r in glitch)
    assert events == []
    # the same glitch held for two samples is an anomaly
    for k in range(1200, 1203):
        row = sim.sample(T0 + k)
        if k < 1202:
            row |= {"turbidity": row["turbidity"] + 400.0, "orp": row["orp"] - 300.0}
        events += det.score(_readings("wq-1", T0 + k, row))
    assert [e.state for e in events][:1] == ["start"]


def test_a_probe_without_one_sensor_is_scored_with_the_training_default(
    models_dir: Path,
) -> None:
    """No ORP sensor fitted: rows never complete, so each is scored when the next one starts."""
    det = _detector(models_dir)
    sim = WaterQualitySim(9, T0)
    scored: list[Reading] = []
    for t, row in _rows(sim, T0, 3):
        row.pop("orp")
        batch = _readings("wq-1", t, row)
        det.score(batch)
        scored += batch
    scores = [r.score for r in scored]
    assert scores[:5] == [None] * 5  # the first row waits for the second
    assert all(s is not None and 0.0 <= s <= 1.0 for s in scores[5:])
    assert sum(r.quality is Quality.SUSPECT for r in scored) <= len(scored) // 10
    assert det.stats()["water-quality"]["rows_scored"] == 3 * 12 - 1
