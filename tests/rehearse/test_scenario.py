"""Scenario files: the shipped ones load and generate labelled, deterministic data; bad ones are
refused with the file and the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.errors import ConfigError
from gateway.rehearse import generate, load_scenario
from tests.rehearse.conftest import SCENARIOS

GOOD = """\
[scenario]
name = "t"
start = 2026-07-21T00:00:00Z
duration = "6h"
period = "5m"

[[assets]]
id = "wq"
category = "water-quality"
seed = 3

[[events]]
kind = "heatwave"
assets = ["wq"]
at = "1h"
duration = "2h"
"""


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_scenarios_generate_labelled_data(path: Path) -> None:
    sc = load_scenario(path)
    series = generate(sc, {a.id: 300.0 for a in sc.assets})  # 5 min keeps the 1 Hz day quick
    assert len(series) == len(sc.assets)
    assert sum(len(s.labels) for s in series) >= 1
    for s in series:
        assert len(s.times) == int(sc.duration / 300.0)
        assert all(np.isfinite(v).all() for v in s.values.values())


def test_generation_is_deterministic_and_follows_the_physics(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text(GOOD, encoding="utf-8")
    a, b = generate(load_scenario(f))[0], generate(load_scenario(f))[0]
    assert all(np.array_equal(a.values[q], b.values[q]) for q in a.values)
    truth = a.truth(a.times)
    assert truth.sum() == 24  # two hours at a 5 min period
    calm = tmp_path / "calm.toml"
    calm.write_text(GOOD.split("[[events]]")[0], encoding="utf-8")
    c = generate(load_scenario(calm))[0]
    assert np.array_equal(a.values["ph"], c.values["ph"])  # the heatwave leaves pH alone
    last = np.flatnonzero(truth)[-1]
    # by the end of the heatwave: warmer water and less oxygen than the same day without it
    assert a.values["temperature"][last] - c.values["temperature"][last] > 0.8
    assert c.values["dissolved_oxygen"][last] - a.values["dissolved_oxygen"][last] > 0.6
    assert np.array_equal(a.values["temperature"][~truth], c.values["temperature"][~truth])
    assert generate(load_scenario(f), {"wq": 1800.0})[0].times.size == 12


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        ('category = "water-quality"', 'category = "lamp"', "assets[0].category", "one of"),
        ("seed = 3", "seed = -1", "assets[0].seed", "an integer >= 0"),
        ('kind = "heatwave"', 'kind = "tsunami"', "events[0].kind", "one of"),
        ('at = "1h"', 'at = "5h"', "events[0].duration", "ends within the scenario"),
        ('assets = ["wq"]', 'assets = ["nope"]', "events[0].assets", "scenario asset ids"),
        ('duration = "2h"', 'duration = "2h"\nparams = { severity = 1 }',
         "events[0].params.severity", "a parameter of a drift fault"),
        ("start = 2026-07-21T00:00:00Z", 'start = "monday"', "scenario.start", "date-time"),
        ('period = "5m"', 'period = "5m"\nspeed = 2', "scenario.speed", "a known key"),
        ('kind = "heatwave"', 'kind = "festival_crowd"', "events[0].assets",
         "pedestrian-counter assets"),
    ],
)  # fmt: skip
def test_invalid_scenario_names_file_and_key(
    tmp_path: Path, old: str, new: str, key: str, expected: str
) -> None:
    f = tmp_path / "bad.toml"
    assert old in GOOD
    f.write_text(GOOD.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_scenario(f)
    assert (e.value.file, e.value.key) == (str(f), key)
    assert expected in e.value.expected
