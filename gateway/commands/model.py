"""``twinedge model eval|score|bench|verify``: the anomaly models' quality, speed and integrity.

MODEL is a bundle directory or the name of one under ``--models-dir`` (default: the shipped
``models/``). ``eval`` rebuilds the held-out test set from the manifest's recipe and prints
per-fault-kind precision, recall, F1 and detection delay of the model next to the static and
rolling z-score baselines. ``score`` scores a CSV strictly causally. ``bench`` prints load time,
single-row latency and batch throughput. ``verify`` checks bundles against their manifests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError, ModelError
from gateway.shipped import shipped_models

SHIPPED = shipped_models() or Path("models")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("model", help="evaluate, score with, benchmark and verify anomaly models")
    p.add_argument("--models-dir", type=Path, default=SHIPPED, help="where named models live")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)

    e = msub.add_parser("eval", help="held-out quality per fault kind next to the baselines")
    e.add_argument("model", help="model name or bundle directory")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.add_argument("--markdown", action="store_true", help="print the model-card table")
    e.add_argument("--scenarios", type=int, help="held-out scenarios per fault kind")
    e.set_defaults(func=cmd_eval)

    s = msub.add_parser("score", help="score a CSV causally; adds 'score' and 'anomaly' columns")
    s.add_argument("model", help="model name or bundle directory")
    s.add_argument("--csv", required=True, type=Path, help="input CSV with a header row")
    s.add_argument("--time-column", help="timestamp column (default: the first column)")
    s.add_argument("--value-column", help="value column, univariate models (default: second)")
    s.add_argument("--output", type=Path, help="write here instead of stdout")
    s.add_argument("--threshold", type=float, help="override the manifest's threshold")
    s.set_defaults(func=cmd_score)

    b = msub.add_parser("bench", help="load ms, single-row p50/p99 µs, rows/s at batch 256")
    b.add_argument("models", nargs="*", help="model names or bundle dirs (default: all)")
    b.add_argument("--json", action="store_true", help="print JSON (the default output)")
    b.add_argument("--rows", type=int, default=3000, help="single-row calls to time")
    b.set_defaults(func=cmd_bench)

    v = msub.add_parser("verify", help="check bundles' sha256 and input signature")
    v.add_argument("models", nargs="*", help="model names or bundle dirs (default: all)")
    v.set_defaults(func=cmd_verify)


def _resolve(models_dir: Path, model: str) -> Path:
    path = Path(model)
    if (path / "manifest.json").is_file():
        return path
    named = models_dir / model
    if (named / "manifest.json").is_file():
        return named
    known = sorted(p.parent.name for p in models_dir.glob("*/manifest.json"))
    raise ConfigError(str(models_dir), "model", f"one of {', '.join(known) or '(none)'}", model)


def _all(models_dir: Path, names: list[str]) -> list[Path]:
    if names:
        return [_resolve(models_dir, n) for n in names]
    return sorted(p.parent for p in models_dir.glob("*/manifest.json"))


# --------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from gateway.detect import load_bundle
    from gateway.detect.training import evaluate_bundle, recipe_of, scenario_count

    bundle = load_bundle(_resolve(args.models_dir, args.model))
    recipe = recipe_of(bundle.manifest)
    per_kind = args.scenarios
    test_n = scenario_count(recipe, "test")
    if per_kind is not None:
        test_n = per_kind * (test_n // int(recipe["scenarios"]["test"]))
    total = scenario_count(recipe, "validation") + test_n
    with Progress(transient=True, console=_stderr_console()) as progress:
        task = progress.add_task(f"simulating {bundle.name}", total=total)
        result = evaluate_bundle(
            bundle.manifest, bundle.run, lambda n: progress.advance(task, n), per_kind
        )
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.markdown:
        print(markdown_table(result))
    else:
        _print_table(result)
    return 0


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _fmt(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown_table(result: dict[str, Any]) -> str:
    """The model card's quality table: one row per fault kind and detector."""
    lines = [
        "| fault kind | detector | precision | recall | F1 | event recall | median delay (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, by_detector in result["results"].items():
        for name, m in by_detector.items():
            lines.append(
                f"| {kind} | {name} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | "
                f"{_fmt(m['f1'])} | {_fmt(m['event_recall'])} | {_fmt(m['median_delay_s'], 0)} |"
            )
    return "\n".join(lines)


def _print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['model']} on held-out data (threshold {result['threshold']})")
    for col in ("fault kind", "detector", "precision", "recall", "F1", "event recall", "delay s"):
        table.add_column(col, justify="left" if col in ("fault kind", "detector") else "right")
    for kind, by_detector in result["results"].items():
        for name, m in by_detector.items():
            cells = [_fmt(m[k]) for k in ("precision", "recall", "f1", "event_recall")]
            table.add_row(kind, name, *cells, _fmt(m["median_delay_s"], 0))
    Console().print(table)


# --------------------------------------------------------------------------- score
def cmd_score(args: argparse.Namespace) -> int:
    from gateway.detect import load_bundle
    from gateway.detect.csvscore import score_csv

    bundle = load_bundle(_resolve(args.models_dir, args.model))
    if args.threshold is not None and not 0.0 < args.threshold <= 1.0:
        raise ConfigError("--threshold", "", "a number in (0, 1]", args.threshold)
    out = args.output.open("w", newline="", encoding="utf-8") if args.output else sys.stdout
    try:
        rows, flagged = score_csv(
            bundle, args.csv, out, args.time_column, args.value_column, args.threshold
        )
    finally:
        if args.output:
            out.close()
    print(f"scored {rows} rows, {flagged} flagged as anomalous", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- bench
def cmd_bench(args: argparse.Namespace) -> int:
    from gateway.detect.bench import bench_bundle

    results = [bench_bundle(path, single_rows=args.rows) for path in _all(args.models_dir,
                                                                          args.models)]  # fmt: skip
    print(json.dumps({"machine": _machine(), "models": results}, indent=2))
    return 0


def _machine() -> dict[str, Any]:
    import os
    import platform

    import onnxruntime

    return {
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__, "intra_op_threads": 1,
    }  # fmt: skip


# --------------------------------------------------------------------------- verify
def cmd_verify(args: argparse.Namespace) -> int:
    from gateway.detect import load_bundle

    paths = _all(args.models_dir, args.models)
    if not paths:
        raise ConfigError(str(args.models_dir), "", "at least one model bundle")
    bad = 0
    for path in paths:
        start = time.perf_counter()
        try:
            b = load_bundle(path)
        except ModelError as e:
            bad += 1
            print(f"FAIL {path}: {e}")
            continue
        ms = (time.perf_counter() - start) * 1000
        print(f"ok   {b.name}@{b.version} {b.category} sha256={b.sha256[:16]}… ({ms:.1f} ms)")
    return 1 if bad else 0
