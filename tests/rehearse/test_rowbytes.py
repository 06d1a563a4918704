"""Counted feed bytes equal the bytes of the rows encode_rows writes, and the columnar side equals
the reading-by-reading replay."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from gateway.outbox import encode_rows
from gateway.readings import Quality, Reading
from gateway.rehearse import generate, load_scenario, load_side
from gateway.rehearse import rowbytes as rb
from gateway.rehearse.runner import _batches, _run_readings, run_side
from tests.rehearse.conftest import SCENARIOS, write_site

TRICKY = [0.0, -0.0, 0.1, 1.0, -1.5, 1e16, 1e-7, 123456789.123, 5e-324, 1.7976931348623157e308,
          2.0**53, 0.30000000000000004, 7.3e-5, 1784592001.0005, -273.15]  # fmt: skip


def test_float_lengths_are_the_json_lengths() -> None:
    rng = np.random.default_rng(1)
    values = np.concatenate([TRICKY, rng.normal(0, 1e3, 500), rng.integers(0, 99, 50) * 1.0])
    want = [len(repr(v)) for v in values.tolist()]
    assert rb.float_lengths(values).tolist() == want
    want3 = [len(repr(round(v, 3))) for v in values.tolist()]
    assert rb.float_lengths(values, 3).tolist() == want3
    assert rb.float_lengths(np.zeros(0)).tolist() == []
    repeated = np.repeat([0.0, -0.0, 1.5, 40.0, 1e-7], 10)  # written once per distinct value
    assert rb.float_lengths(repeated).tolist() == [len(repr(v)) for v in repeated.tolist()]
    scores = np.array([np.nan, 0.123456, 0.99995, 1.0, 0.00004, np.nan])
    assert rb.score_lengths(scores).tolist() == [4, 6, 3, 3, 3, 4]


@pytest.mark.parametrize("first", [1, 7, 95, 999, 99_990, 10**9 - 3])
def test_seq_digits(first: int) -> None:
    for n in (1, 2, 10, 1234):
        assert rb.seq_digits(first, first + n - 1) == sum(len(str(s)) for s in
                                                          range(first, first + n))  # fmt: skip
    assert rb.seq_digits(first, first - 1) == 0


def test_message_bytes_equal_encode_rows() -> None:
    rng = random.Random(4)
    names = ["wq-01", "straße-7", 'a"b', "tab\there", "灯-3"]
    quantities = ["temperature", "power", "count_in"]
    units = ["CEL", "WTT", "IE", "µS"]
    readings, row_bytes = [], 0
    for _ in range(300):
        asset, q, unit = rng.choice(names), rng.choice(quantities), rng.choice(units)
        value = rng.choice([rng.uniform(-1e4, 1e4), float(rng.randint(0, 40)), *TRICKY])
        t = (
            1784592000 + rng.uniform(0, 86400)
            if rng.random() < 0.5
            else 1784592000.0 + rng.randint(0, 86400)
        )
        score = None if rng.random() < 0.2 else rng.random()
        quality = Quality.SUSPECT if rng.random() < 0.3 else Quality.GOOD
        readings.append(Reading(asset, q, value, unit, t, t, quality, score=score))
        scored = np.array([np.nan if score is None else score])
        row_bytes += (rb.ROW_FRAME + rb.json_length(asset) + rb.json_length(q)
                      + rb.json_length(unit) + int(rb.float_lengths(np.array([value]))[0])
                      + 2 * int(rb.float_lengths(np.array([t]), 3)[0])
                      + (rb.SUSPECT if quality is Quality.SUSPECT else rb.GOOD)
                      + int(rb.score_lengths(scored)[0]))  # fmt: skip
    for first in (1, 9_950, 10**6 - 150):
        want = len(encode_rows(readings, first).encode()) + 2
        assert rb.message_bytes(len(readings), row_bytes, first) == want


def test_columnar_side_equals_the_reading_replay(tmp_path: Path) -> None:
    """Festival with a broker outage: every figure, trace and alert the same on both paths."""
    site = write_site(tmp_path / "site.toml")
    side = load_side(site, "current")
    scenario = load_scenario(SCENARIOS / "festival-crowd.toml")
    inputs = generate(scenario, {s.id: 20.0 for s in scenario.assets})
    edges, cuts = _batches(inputs, 60.0)
    fast = run_side(side, inputs, scenario.outages, 60.0)
    slow = _run_readings(side, inputs, scenario.outages, edges, cuts)
    assert 0 < fast.timed_readings < fast.readings  # took the columnar path, timed a part
    assert fast.backfill_bytes > 0 and fast.backlog_max_readings > 0
    for key in ("readings", "published_bytes", "messages", "backlog_max_readings",
                "backfill_readings", "backfill_bytes"):  # fmt: skip
        assert getattr(fast, key) == getattr(slow, key), key
    assert sum(t.alerts for t in fast.traces.values()) > 0
    for asset, trace in slow.traces.items():
        mine = fast.traces[asset]
        assert np.array_equal(mine.scores, trace.scores, equal_nan=True), asset
        assert (mine.alerts, mine.shadow_alerts, mine.alert_times) == (
            trace.alerts, trace.shadow_alerts, trace.alert_times)  # fmt: skip
    assert {c: m["rows_scored"] for c, m in fast.models.items()} == {
        c: m["rows_scored"] for c, m in slow.models.items()}  # fmt: skip


def test_input_with_gaps_is_replayed_reading_by_reading(tmp_path: Path) -> None:
    side = load_side(write_site(tmp_path / "site.toml"), "current")
    scenario = load_scenario(SCENARIOS / "heatwave.toml")
    inputs = generate(scenario)
    inputs[0].values["ph"][5] = np.nan  # a recording may miss a value
    result = run_side(side, inputs, [], 5.0)
    assert result.timed_readings == 0 and result.readings == sum(
        len(s.times) * len(s.values) for s in inputs) - 1  # fmt: skip
