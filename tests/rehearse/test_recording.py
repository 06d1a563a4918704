"""The recorder: bounded per asset, counts-only for counters, and a file that round-trips."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from gateway.cli import main
from gateway.errors import ConfigError
from gateway.readings import Quality, Reading
from gateway.rehearse import Recorder, load_recording, load_scenario
from tests.rehearse.conftest import SCENARIOS

T0 = 1_780_000_000.0


def _water(asset: str, n: int, start: float = T0) -> list[Reading]:
    return [Reading(asset, "temperature", 10.0 + i / 100, "CEL", start + i, start + i)
            for i in range(n)]  # fmt: skip


def test_round_trip_keeps_values_times_units(tmp_path: Path) -> None:
    rec = Recorder({"wq": "water-quality", "lamp": "streetlight"})
    rec.record(_water("wq", 50))
    rec.record([Reading("lamp", "power", 41.5, "WTT", T0 + 3, T0 + 3),
                Reading("lamp", "power", float("nan"), "WTT", T0 + 4, T0 + 4,
                        Quality.INVALID)])  # fmt: skip
    assert rec.export(tmp_path / "r.jsonl.gz") == 51
    series = {s.asset: s for s in load_recording(tmp_path / "r.jsonl.gz")}
    assert series["wq"].units == {"temperature": "CEL"} and series["wq"].labels == []
    assert np.array_equal(series["wq"].times, T0 + np.arange(50))
    assert np.allclose(series["wq"].values["temperature"], 10.0 + np.arange(50) / 100)
    assert series["lamp"].values["power"].tolist() == [41.5]  # the invalid value is not kept
    again = Recorder.load(tmp_path / "r.jsonl.gz")
    assert again.stats() == rec.stats()


def test_cap_per_asset_drops_oldest_and_counts(tmp_path: Path) -> None:
    rec = Recorder({"a": "water-quality", "b": "water-quality"}, max_bytes=2000)
    rec.record(_water("a", 500))
    rec.record(_water("b", 5))
    stats = rec.stats()
    assert 2000 - 60 < stats["a"]["bytes"] <= 2000
    assert stats["a"]["dropped"] == 500 - stats["a"]["rows"] > 0
    assert stats["b"] == {"rows": 5, "bytes": stats["b"]["bytes"], "dropped": 0}
    rec.export(tmp_path / "r.jsonl.gz")
    a = {s.asset: s for s in load_recording(tmp_path / "r.jsonl.gz")}["a"]
    assert a.times[-1] == T0 + 499 and a.times[0] == T0 + stats["a"]["dropped"]  # newest kept
    with gzip.open(tmp_path / "r.jsonl.gz", "rt") as f:
        assert json.loads(f.readline())["dropped"] == {"a": stats["a"]["dropped"], "b": 0}


def test_counters_are_recorded_counts_only(tmp_path: Path) -> None:
    rec = Recorder({"ctr": "pedestrian-counter"})
    rec.record([Reading("ctr", q, v, u, T0, T0, device="AA:BB:CC:DD:EE:FF")
                for q, v, u in (("count_in", 3, "IE"), ("count_out", 1, "IE"),
                                ("battery", 88.5, "P1"), ("rssi", -71, "2N"))])  # fmt: skip
    rec.export(tmp_path / "r.jsonl.gz")
    with gzip.open(tmp_path / "r.jsonl.gz", "rt") as f:
        raw = f.read()
    assert "battery" not in raw and "rssi" not in raw and "AA:BB" not in raw
    (ctr,) = load_recording(tmp_path / "r.jsonl.gz")
    assert set(ctr.values) == {"count_in", "count_out"}


def test_unknown_assets_are_ignored_and_bad_files_refused(tmp_path: Path) -> None:
    rec = Recorder({"wq": "water-quality"})
    rec.record(_water("other", 3))
    assert rec.stats() == {"wq": {"rows": 0, "bytes": 0, "dropped": 0}}
    bad = tmp_path / "bad.jsonl.gz"
    with gzip.open(bad, "wt") as f:
        header = {"format": "twinedge-recording", "version": 1,
                  "assets": {"wq": {"category": "water-quality", "units": {}}}}  # fmt: skip
        f.write(json.dumps(header) + '\n["zz", "t", 1, 2]\n')
    with pytest.raises(ConfigError) as e:
        load_recording(bad)
    assert (e.value.file, e.value.key) == (str(bad), "line 2")
    (tmp_path / "plain.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(ConfigError, match="gzip JSON-lines"):
        load_recording(tmp_path / "plain.txt")


def test_scenario_saved_as_recording_rehearses_the_same(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same readings (and labels) from a recording give the same figures as the scenario."""
    rec = tmp_path / "overflow.jsonl.gz"
    args = ["rehearse", "--site", str(site), "--candidate", str(site), "--json"]
    scenario = str(SCENARIOS / "sewage-overflow.toml")
    assert main([*args, "--scenario", scenario, "--save-recording", str(rec)]) == 0
    from_scenario = json.loads(capsys.readouterr().out)["sides"]["current"]
    assert main([*args, "--recording", str(rec)]) == 0
    from_recording = json.loads(capsys.readouterr().out)["sides"]["current"]
    assert from_recording["detection"] == from_scenario["detection"]  # labels kept
    assert from_recording["detection"]["events"] == 1
    for key in ("alerts", "readings", "published_bytes"):
        assert from_recording[key] == from_scenario[key], key
    assert from_scenario["readings"] == 6 * 1440 == len(load_scenario(scenario).assets) * 6 * 1440
