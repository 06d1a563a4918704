"""Speed of a model bundle on one core: session load, single-row latency, batch throughput.

Feature rows come from the model's own validation scenario (real feature values, so the trees
take realistic paths). ``stage_readings_per_s`` times the whole stage — readings one quantity at a
time into :class:`~gateway.detect.Detector` for 50 assets, windows, features and the ONNX call.
Figures, not a test: run it with ``twinedge model bench``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from gateway.detect.bundle import load_bundle, make_session
from gateway.detect.detector import Detector
from gateway.detect.training import build, recipe_of
from gateway.readings import Reading

__all__ = ["bench_bundle"]


def _load_ms(path: Path, repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        make_session(path)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def _stage(path: Path, values: Any, times: Any, assets: int = 50) -> float:
    bundle = load_bundle(path)
    ids = {f"a{i}": bundle.category for i in range(assets)}
    det = Detector({}, ids)
    det.swap(path)
    units = [bundle.units[q] for q in bundle.quantities]
    rows = min(len(times), 600)
    batches: list[list[Reading]] = []
    for r in range(rows):
        batch = [
            Reading(a, q, float(values[r, j]), units[j], float(times[r]), float(times[r]))
            for a in ids
            for j, q in enumerate(bundle.quantities)
        ]
        batches.append(batch)
    start = time.perf_counter()
    n = 0
    for batch in batches:
        det.score(batch)
        n += len(batch)
    return n / (time.perf_counter() - start)


def bench_bundle(path: Path, single_rows: int = 3000, batch: int = 256) -> dict[str, Any]:
    """Figures for one bundle (see the module doc)."""
    bundle = load_bundle(path)
    data = build(recipe_of(bundle.manifest), "validation", count=1)
    x = data.x
    for _ in range(200):  # warm up
        bundle.run(x[:1])
    lat = []
    for i in range(single_rows):
        row = x[i % len(x) : i % len(x) + 1]
        t_ns = time.perf_counter_ns()
        bundle.run(row)
        lat.append((time.perf_counter_ns() - t_ns) / 1000.0)
    lat.sort()
    xb = np.ascontiguousarray(np.resize(x, (batch, x.shape[1])))
    reps = 400
    start = time.perf_counter()
    for _ in range(reps):
        bundle.run(xb)
    rows_per_s = reps * batch / (time.perf_counter() - start)
    return {
        "model": f"{bundle.name}@{bundle.version}",
        "file_kb": round(path.joinpath(bundle.manifest["file"]).stat().st_size / 1024, 1),
        "features": int(x.shape[1]),
        "load_ms": round(_load_ms(path / bundle.manifest["file"]), 2),
        "single_row_p50_us": round(lat[len(lat) // 2], 2),
        "single_row_p99_us": round(lat[int(len(lat) * 0.99)], 2),
        "batch": batch,
        "rows_per_s": round(rows_per_s),
        "stage_readings_per_s": round(_stage(path, data.values, data.times)),
    }
