"""``twinedge model score|eval|bench|verify`` through the real command-line entry point."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest

from gateway.cli import main


def _write_series(path: Path, n: int, *, spike_at: int | None = None) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "level_m", "note"])
        for i in range(n):
            t = 1_700_000_000 + 600 * i
            v = 2.0 + 0.3 * math.sin(2 * math.pi * i / 144) + 0.01 * math.sin(i * 1.7)
            if spike_at is not None and i == spike_at:
                v += 3.0
            w.writerow([t, f"{v:.4f}", "x"])


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_score_csv_adds_columns_and_flags_a_spike(tmp_path: Path) -> None:
    src, out = tmp_path / "level.csv", tmp_path / "scored.csv"
    _write_series(src, 600, spike_at=400)
    code = main(["model", "score", "univariate-stream", "--csv", str(src),
                 "--value-column", "level_m", "--output", str(out)])  # fmt: skip
    assert code == 0
    rows = _read(out)
    assert len(rows) == 600 and list(rows[0]) == [
        "timestamp",
        "level_m",
        "note",
        "score",
        "anomaly",
    ]
    assert rows[400]["anomaly"] == "1"
    flagged = sum(r["anomaly"] == "1" for r in rows)
    assert flagged < 30  # the smooth cycle itself is not an anomaly
    assert all(0.0 <= float(r["score"]) <= 1.0 for r in rows)


def test_scoring_is_strictly_causal(tmp_path: Path) -> None:
    """Scores of the first rows do not change when later rows are appended to the file."""
    full, head = tmp_path / "full.csv", tmp_path / "head.csv"
    _write_series(full, 5000, spike_at=4500)  # > one internal chunk, so chunking is covered too
    lines = full.read_text().splitlines(keepends=True)
    head.write_text("".join(lines[:4301]))
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    for src, dst in ((full, a), (head, b)):
        assert main(["model", "score", "univariate-stream", "--csv", str(src),
                     "--value-column", "level_m", "--output", str(dst)]) == 0  # fmt: skip
    assert [r["score"] for r in _read(a)[:4300]] == [r["score"] for r in _read(b)]


def test_score_defaults_to_first_two_columns_and_iso_times(tmp_path: Path) -> None:
    src = tmp_path / "plain.csv"
    src.write_text(
        "time,value\n"
        + "".join(f"2024-03-01T00:{i // 60:02d}:{i % 60:02d}Z,{i % 7}\n" for i in range(300))
    )
    out = tmp_path / "o.csv"
    assert main(["model", "score", "univariate-stream", "--csv", str(src), "--output",
                 str(out)]) == 0  # fmt: skip
    assert len(_read(out)) == 300


@pytest.mark.parametrize(
    ("body", "args", "message"),
    [
        ("timestamp,v\n1,2\n2,abc\n", ["--value-column", "v"], "row 3: v: expected a finite"),
        ("timestamp,v\n1,2\n2,\n", ["--value-column", "v"], "row 3: v: expected a finite"),
        ("timestamp,v\n5,2\n4,2\n", ["--value-column", "v"], "row 3: timestamp: expected times"),
        ("timestamp,v\n1,2\nyesterday,2\n", ["--value-column", "v"], "row 3: timestamp"),
        ("timestamp,v\n1,2\n", ["--value-column", "level"], "column 'level': expected one of"),
        ("timestamp,v\n1,2\n", ["--time-column", "ts"], "column 'ts': expected one of"),
        ("timestamp,v\n1,nan\n", [], "row 2: v: expected a finite number"),
        ("", [], "header"),
    ],
)
def test_bad_csv_is_a_clear_error_naming_the_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, args: list[str], message: str
) -> None:
    src = tmp_path / "bad.csv"
    src.write_text(body)
    code = main(["model", "score", "univariate-stream", "--csv", str(src),
                 "--output", str(tmp_path / "o.csv"), *args])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "bad.csv" in err and message in err


def test_binary_garbage_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "blob.csv"
    src.write_bytes(b"timestamp,value\n1,2\n2,3\n\xff\xfe\x00garbage,1\n")
    code = main(["model", "score", "univariate-stream", "--csv", str(src),
                 "--output", str(tmp_path / "o.csv")])  # fmt: skip
    assert code == 2
    assert "blob.csv: row 4: expected UTF-8 text" in capsys.readouterr().err


def test_score_multivariate_model_reads_quantity_columns(tmp_path: Path) -> None:
    from hil_tests.emulators.physics import StreetlightSim

    sim = StreetlightSim(3, 1_790_000_000.0)
    # 2026-09-21 14:13 UTC: the lamp fails at 19:13 UTC, well after sunset
    sim.inject("lamp_failed", 1_790_000_000.0 + 5 * 3600, 4 * 3600)
    src = tmp_path / "lamp.csv"
    with src.open("w", newline="") as f:
        w = csv.writer(f)
        names = ["power_state", "dim_level", "power", "voltage", "current", "lamp_fault"]
        w.writerow(["t", *names])
        for i in range(1, 12 * 30):
            t = 1_790_000_000.0 + 300 * i
            s = sim.sample(t)
            w.writerow([t, *(s[n] for n in names)])
    out = tmp_path / "o.csv"
    assert main(["model", "score", "streetlight", "--csv", str(src), "--output", str(out)]) == 0
    rows = _read(out)
    failed = [r for r in rows if 5.5 * 3600 <= float(r["t"]) - 1_790_000_000.0 < 9 * 3600]
    assert failed and all(r["anomaly"] == "1" for r in failed)
    assert sum(r["anomaly"] == "1" for r in rows) < len(failed) + 10


def test_eval_json_reports_every_fault_kind_next_to_baselines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["model", "eval", "streetlight", "--json", "--scenarios", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "streetlight@1.0.0"
    kinds = ["day_burning", "lamp_failed", "cycling", "power_mismatch", "all"]
    assert list(result["results"]) == kinds
    for by_detector in result["results"].values():
        assert set(by_detector) == {"model", "static", "zscore"}
        for m in by_detector.values():
            assert {"precision", "recall", "f1", "event_recall", "median_delay_s"} <= set(m)
    overall = result["results"]["all"]
    assert overall["model"]["f1"] > max(overall["static"]["f1"], overall["zscore"]["f1"])
    assert result["held_out"]["seeds_from"] == 10_000


def test_bench_prints_speed_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "bench", "univariate-stream", "--rows", "200"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (fig,) = doc["models"]
    assert fig["model"] == "univariate-stream@1.0.0"
    assert fig["load_ms"] > 0 and fig["rows_per_s"] > 0 and fig["stage_readings_per_s"] > 0
    assert 0 < fig["single_row_p50_us"] <= fig["single_row_p99_us"]


def test_verify_reports_good_and_bad_bundles(
    tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["model", "verify"]) == 0
    out = capsys.readouterr().out
    assert out.count("ok   ") == 4
    for name in ("streetlight", "univariate-stream"):
        shutil.copytree(models_dir / name, tmp_path / name)
    (tmp_path / "streetlight" / "model.onnx").write_bytes(b"x")
    assert main(["model", "--models-dir", str(tmp_path), "verify"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "streetlight/model.onnx: sha256" in out and "ok   univariate" in out
    assert main(["model", "eval", "nonexistent"]) == 2
    assert "expected one of" in capsys.readouterr().err
