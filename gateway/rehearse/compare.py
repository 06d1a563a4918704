"""Current vs candidate on the same input: run both sides and put their figures side by side."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.rehearse.runner import AssetTrace, SideResult, resample, run_side
from gateway.rehearse.scenario import Scenario, Series, generate
from gateway.rehearse.sides import Side

__all__ = ["Rehearsal", "rehearse"]


@dataclass(slots=True)
class Rehearsal:
    """Both sides' results with the input they saw (for the plots) and the input's labels."""

    input: dict[str, Any]
    inputs: dict[str, list[Series]]  # side -> its series
    results: dict[str, SideResult]
    seconds: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        sides = {name: _side_dict(r, self.inputs[name]) for name, r in self.results.items()}
        return {"input": self.input, "sides": sides, "seconds": self.seconds,
                "differences": _differences(sides)}  # fmt: skip


def rehearse(current: Side, candidate: Side, *, scenario: Scenario | None = None,
             recording: list[Series] | None = None, batch: float = 5.0) -> Rehearsal:  # fmt: skip
    """Check both sides (models load, bundles verify), then generate the input and run both."""
    assets = _assets(scenario, recording)
    for side in (current, candidate):
        side.detector(assets)  # refuses a bad side before any input is generated
    seconds: dict[str, float] = {}
    inputs: dict[str, list[Series]] = {}
    cache: dict[tuple[tuple[str, float | None], ...], list[Series]] = {}
    t0 = time.perf_counter()
    for side in (current, candidate):
        periods = tuple((a, side.period(a)) for a in assets)
        if periods not in cache:
            cache[periods] = _input(scenario, recording, dict(periods))
        inputs[side.name] = cache[periods]
    seconds["input"] = round(time.perf_counter() - t0, 3)
    outages = scenario.outages if scenario is not None else []
    results: dict[str, SideResult] = {}
    for side in (current, candidate):
        t0 = time.perf_counter()
        results[side.name] = run_side(side, inputs[side.name], outages, batch)
        seconds[side.name] = round(time.perf_counter() - t0, 3)
    return Rehearsal(_describe(scenario, recording, batch), inputs, results, seconds)


def _assets(scenario: Scenario | None, recording: list[Series] | None) -> dict[str, str]:
    if scenario is not None:
        return {a.id: a.category for a in scenario.assets}
    return {s.asset: s.category for s in recording or []}


def _input(scenario: Scenario | None, recording: list[Series] | None,
           periods: dict[str, float | None]) -> list[Series]:  # fmt: skip
    if scenario is not None:
        return generate(scenario, {a: p for a, p in periods.items() if p is not None})
    return [resample(s, periods.get(s.asset)) for s in recording or []]


def _describe(scenario: Scenario | None, recording: list[Series] | None,
              batch: float) -> dict[str, Any]:  # fmt: skip
    if scenario is None:
        return {"kind": "recording", "assets": len(recording or []), "batch_s": batch}
    return {
        "kind": "scenario", "name": scenario.name, "file": str(scenario.file),
        "description": scenario.description, "start": scenario.start,
        "duration_s": scenario.duration, "period_s": scenario.period, "batch_s": batch,
        "assets": len(scenario.assets),
        "events": [{"kind": e.kind, "fault": e.fault, "start": e.start, "end": e.end,
                    "assets": list(e.assets)} for e in scenario.events],
    }  # fmt: skip


def _side_dict(r: SideResult, series: list[Series]) -> dict[str, Any]:
    labelled = any(s.labels for s in series)
    by_asset = {s.asset: s for s in series}
    traces = list(r.traces.values())  # a fault on an asset no model scores is a missed fault
    assets = {t.asset: _asset_dict(t, by_asset[t.asset], labelled) for t in r.traces.values()}
    return {
        "source": r.source,
        "detection": _metrics(traces, by_asset) if labelled else None,
        "alerts": sum(t.alerts for t in r.traces.values()),
        "shadow_alerts": sum(t.shadow_alerts for t in r.traces.values()),
        "readings": r.readings, "published_bytes": r.published_bytes, "messages": r.messages,
        "bytes_per_reading": round(r.published_bytes / r.readings, 1) if r.readings else None,
        "backlog_max_readings": r.backlog_max_readings,
        "backfill_readings": r.backfill_readings, "backfill_bytes": r.backfill_bytes,
        "latency": r.latency(),
        "models": {c: {k: m[k] for k in ("model", "mode", "threshold", "rows_scored")}
                   for c, m in r.models.items()},
        "assets": assets,
    }  # fmt: skip


def _asset_dict(t: AssetTrace, s: Series, labelled: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"category": t.category, "threshold": t.threshold,
                           "alerts": t.alerts, "shadow_alerts": t.shadow_alerts,
                           "samples": len(t.times), "flagged": int(t.flagged.sum())}  # fmt: skip
    if labelled:
        out["detection"] = _metrics([t], {s.asset: s})
    return out


def _metrics(traces: list[AssetTrace], series: dict[str, Series]) -> dict[str, Any]:
    """Sample-level precision/recall/F1, event recall and delay, via the models' own metrics."""
    from gateway.detect.training import Data, metrics

    if not traces:
        return {"precision": None, "recall": None, "f1": None, "events": 0}
    times = np.concatenate([t.times for t in traces])
    truth = np.concatenate([series[t.asset].truth(t.times) for t in traces])
    flag = np.concatenate([t.flagged for t in traces])
    sid = np.concatenate([np.full(len(t.times), i, dtype=np.int32) for i, t in enumerate(traces)])
    n = len(times)
    data = Data(np.zeros((n, 0), np.float32), truth, np.zeros(n, np.int16), times, sid,
                np.zeros((n, 0)), np.zeros(n))  # fmt: skip
    got = metrics(flag, data)
    got["missed_events"] = _missed(traces, series)
    return got


def _missed(traces: list[AssetTrace], series: dict[str, Series]) -> int:
    """Labelled faults during which the side never flagged a sample of the asset."""
    missed = 0
    for t in traces:
        flagged = t.times[t.flagged]
        for start, end, _ in series[t.asset].labels:
            if not ((flagged >= start) & (flagged < end)).any():
                missed += 1
    return missed


def _differences(sides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    cur, cand = sides.get("current"), sides.get("candidate")
    if cur is None or cand is None:
        return {}
    out: dict[str, Any] = {}
    for key in ("alerts", "readings", "published_bytes", "backfill_bytes"):
        out[key] = cand[key] - cur[key]
    if cur["detection"] and cand["detection"]:
        for key in ("precision", "recall", "f1", "false_positive_rows"):
            a, b = cur["detection"].get(key), cand["detection"].get(key)
            out[key] = None if a is None or b is None else round(b - a, 4)
    return out
