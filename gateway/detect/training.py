"""Build feature sets from labelled scenarios, train, pick thresholds and evaluate.

Used by ``models/*/train.py`` (training and export) and ``twinedge model eval`` (held-out
evaluation next to the baselines). A model's recipe lives in its manifest (``recipe``): family,
feature set and parameters, window, seeds and sizes of the training, validation and test sets,
and the tree hyper-parameters, so evaluation rebuilds exactly the data the card describes.

Metrics (per fault kind, each kind on its own held-out scenarios, and pooled as ``all``):
row-wise precision, recall and F1 against the observable ground truth, plus event recall (share
of contiguous anomalous stretches with at least one flagged row) and the median detection delay
(seconds from the first anomalous row of a stretch to its first flagged row).

Baselines, fitted and tuned on the validation scenarios in the same run:
``static`` — fixed per-quantity bounds at the q / 1-q quantiles of normal rows, q tuned;
``zscore`` — rolling z-score of the newest row against the rest of the model's window,
threshold k tuned.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.detect import datasets, features

__all__ = ["Data", "best_threshold", "build", "evaluate", "fit_baselines", "metrics"]

F64 = npt.NDArray[np.float64]
Progress = Callable[[int], None]


@dataclass(slots=True)
class Data:
    """Rows of many scenarios: features, truth, kind, time, scenario id, raw values, window z."""

    x: npt.NDArray[np.float32]
    truth: npt.NDArray[np.bool_]
    kind: npt.NDArray[np.int16]
    times: F64
    scenario: npt.NDArray[np.int32]
    values: F64
    zmax: F64
    extra: dict[str, Any] = field(default_factory=dict)


def _scenarios(recipe: Mapping[str, Any], split: str, kinds: tuple[str, ...],
               count: int, offset: int = 0) -> Iterable[datasets.Scenario]:  # fmt: skip
    family = recipe["family"]
    base = int(recipe["seeds"][split]) + offset
    for i in range(count):
        if family == "univariate-stream":
            yield datasets.univariate_scenario(
                base + i, int(recipe["rows"]), int(recipe["faults"]), kinds
            )
        else:
            yield datasets.scenario(
                family, base + i, float(recipe["days"]), kinds, float(recipe["period_s"]),
                float(recipe.get("faults_per_day", 0.5)),
            )  # fmt: skip


def _window_z(windows: F64, floor: F64) -> F64:
    prev = windows[:, :-1, :]
    z = np.abs(windows[:, -1, :] - prev.mean(axis=1)) / (prev.std(axis=1) + floor)
    return np.asarray(z.max(axis=1), dtype=np.float64)


def build(
    recipe: Mapping[str, Any], split: str, kinds: tuple[str, ...] | None = None,
    count: int | None = None, progress: Progress | None = None, offset: int = 0,
) -> Data:  # fmt: skip
    """Simulate ``count`` scenarios of ``split`` (seed range) and compute their features."""
    kinds = kinds or datasets.FAMILY_KINDS[recipe["family"]]
    count = int(recipe["scenarios"][split]) if count is None else count
    length = int(recipe["window"])
    floor = np.asarray(recipe["zscore_floor"], dtype=np.float64)
    parts: list[tuple[Any, ...]] = []
    for sid, sc in enumerate(_scenarios(recipe, split, kinds, count, offset)):
        windows, filled = features.sliding(sc.values, length)
        x = features.compute(recipe["features"], windows, filled, sc.times, recipe["params"])
        sids = np.full(len(sc.times), sid, dtype=np.int32)
        parts.append((x, sc.truth, sc.kind, sc.times, sids, sc.values, _window_z(windows, floor)))
        if progress is not None:
            progress(1)
    x, truth, kind, times, sids, values, zmax = (
        np.concatenate(c) for c in zip(*parts, strict=True)
    )
    return Data(x, truth, kind, times, sids, values, zmax)


def fit(recipe: Mapping[str, Any], data: Data) -> Any:
    """Train the gradient-boosted trees (deterministic for the recipe's seed)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    hp = recipe["trees"]
    clf = HistGradientBoostingClassifier(
        max_iter=int(hp["max_iter"]),
        max_leaf_nodes=int(hp["max_leaf_nodes"]),
        learning_rate=float(hp["learning_rate"]),
        l2_regularization=float(hp.get("l2_regularization", 1.0)),
        min_samples_leaf=int(hp.get("min_samples_leaf", 40)),
        early_stopping=False,
        random_state=int(hp.get("random_state", 0)),
    )
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    with threadpool_limits(limits=1):  # one thread: the same float sums, the same trees
        clf.fit(data.x.astype(np.float64), data.truth.astype(np.int8), sample_weight=_weights(data))
    return clf


def _weights(data: Data) -> F64:
    """Balance the fault kinds: short faults (spikes, bursts) weigh as much as long ones."""
    w = np.ones(len(data.truth))
    pos = data.truth
    kinds, counts = np.unique(data.kind[pos], return_counts=True)
    share = pos.sum() / len(kinds)
    for k, c in zip(kinds.tolist(), counts.tolist(), strict=True):
        w[pos & (data.kind == k)] = share / c
    return w


# --------------------------------------------------------------------------- metrics
def _segments(truth: npt.NDArray[np.bool_], sids: npt.NDArray[np.int32]) -> list[tuple[int, int]]:
    """Contiguous runs of truth within one scenario, as [start, end) row indices."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], truth.astype(np.int8), [0]])))
    runs: list[tuple[int, int]] = []
    for s, e in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
        cut = np.flatnonzero(np.diff(sids[s:e])) + s + 1  # split a run across scenarios
        bounds = [s, *cut.tolist(), e]
        runs.extend(itertools.pairwise(bounds))
    return runs


def metrics(flag: npt.NDArray[np.bool_], data: Data, rows: npt.NDArray[np.bool_] | None = None
            ) -> dict[str, float | int | None]:  # fmt: skip
    """Precision, recall, F1, event recall and median delay of ``flag`` against the truth."""
    sel = np.ones(len(flag), dtype=bool) if rows is None else rows
    truth, f = data.truth[sel], flag[sel]
    tp = int((truth & f).sum())
    fp = int((~truth & f).sum())
    fn = int((truth & ~f).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    times, sids = data.times[sel], data.scenario[sel]
    delays: list[float] = []
    segs = _segments(truth, sids)
    for s, e in segs:
        hit = np.flatnonzero(f[s:e])
        if hit.size:
            delays.append(float(times[s + hit[0]] - times[s]))
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "events": len(segs),
        "event_recall": round(len(delays) / len(segs), 4) if segs else None,
        "median_delay_s": round(float(np.median(delays)), 1) if delays else None,
        "false_positive_rows": fp,
        "rows": int(sel.sum()),
    }


def best_threshold(
    scores: F64, data: Data, candidates: Iterable[float], tolerance: float = 0.0
) -> tuple[float, float]:
    """The highest candidate threshold whose row-wise F1 is within ``tolerance`` of the best.

    A tolerance keeps a model's threshold off the edge of a flat F1 plateau, where a slightly
    noisier field would make scores flicker across it.
    """
    f1s = [(float(thr), float(metrics(scores >= thr, data)["f1"] or 0.0)) for thr in candidates]
    top = max(f1 for _, f1 in f1s)
    return max((thr, f1) for thr, f1 in f1s if f1 >= top - tolerance)


# --------------------------------------------------------------------------- baselines
@dataclass(frozen=True, slots=True)
class Baselines:
    """Fitted baselines: static bounds per quantity, and the rolling z-score threshold."""

    low: F64
    high: F64
    quantile: float
    k: float

    def static(self, data: Data) -> npt.NDArray[np.bool_]:
        out = (data.values < self.low) | (data.values > self.high)
        return np.asarray(out.any(axis=1))

    def zscore(self, data: Data) -> npt.NDArray[np.bool_]:
        return np.asarray(data.zmax > self.k)

    def as_dict(self) -> dict[str, Any]:
        return {"static_quantile": self.quantile, "static_low": self.low.round(4).tolist(),
                "static_high": self.high.round(4).tolist(), "zscore_k": self.k}  # fmt: skip


def fit_baselines(validation: Data) -> Baselines:
    """Fit the static bounds on normal validation rows and tune q and k for the best F1."""
    normal = validation.values[~validation.truth]
    best: tuple[float, Baselines | None] = (-1.0, None)
    for q in (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1):
        low, high = np.quantile(normal, q, axis=0), np.quantile(normal, 1.0 - q, axis=0)
        cand = Baselines(low, high, q, 0.0)
        f1 = float(metrics(cand.static(validation), validation)["f1"] or 0.0)
        if f1 > best[0]:
            best = (f1, cand)
    assert best[1] is not None
    k, _ = best_threshold(
        validation.zmax, validation, (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0)
    )
    return Baselines(best[1].low, best[1].high, best[1].quantile, k)


def evaluate(
    scores: F64, threshold: float, data: Data, baselines: Baselines, kinds: tuple[str, ...]
) -> dict[str, Any]:
    """Per fault kind and pooled metrics of the model and both baselines on ``data``."""
    flags = {
        "model": scores >= threshold,
        "static": baselines.static(data),
        "zscore": baselines.zscore(data),
    }
    kind_of_scenario = data.extra["scenario_kind"]
    out: dict[str, Any] = {}
    for i, kind in enumerate(kinds):
        rows = kind_of_scenario[data.scenario] == i
        out[kind] = {name: metrics(f, data, rows) for name, f in flags.items()}
    out["all"] = {name: metrics(f, data) for name, f in flags.items()}
    return out


def build_test(
    recipe: Mapping[str, Any], progress: Progress | None = None, count: int | None = None
) -> Data:
    """The held-out test set: per fault kind, its own scenarios (test seeds) with only that kind."""
    kinds = datasets.FAMILY_KINDS[recipe["family"]]
    per_kind = int(recipe["scenarios"]["test"]) if count is None else count
    parts: list[Data] = []
    for i, kind in enumerate(kinds):
        parts.append(build(recipe, "test", (kind,), per_kind, progress, offset=i * 1000))
    merged = _concat(parts)
    merged.extra["scenario_kind"] = np.repeat(np.arange(len(kinds)), per_kind)
    return merged


def _concat(parts: list[Data]) -> Data:
    shift = 0
    sids = []
    for p in parts:
        sids.append(p.scenario + shift)
        shift += int(p.scenario.max()) + 1 if len(p.scenario) else 0
    return Data(
        np.concatenate([p.x for p in parts]),
        np.concatenate([p.truth for p in parts]),
        np.concatenate([p.kind for p in parts]),
        np.concatenate([p.times for p in parts]),
        np.concatenate(sids),
        np.concatenate([p.values for p in parts]),
        np.concatenate([p.zmax for p in parts]),
    )


# --------------------------------------------------------------------------- train, export, eval
THRESHOLDS = tuple(round(0.05 + 0.025 * i, 3) for i in range(37))  # 0.05 .. 0.95


def recipe_of(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's training recipe merged with the runtime fields the data builder reads."""
    return {
        **manifest["recipe"],
        "features": manifest["features"]["set"],
        "params": manifest["features"].get("params", {}),
        "window": int(manifest["window"]["length"]),
        "period_s": float(manifest["window"]["period_s"]),
    }


def train_and_export(spec: Mapping[str, Any], out_dir: Any, progress: Progress | None = None
                     ) -> dict[str, Any]:  # fmt: skip
    """Train the model ``spec`` describes, export it, check it and write the bundle.

    Writes ``model.onnx`` and ``manifest.json`` into ``out_dir`` and returns the manifest. The
    exported graph's scores are compared with scikit-learn's on the validation rows; a
    difference above 1e-4 is an error. The threshold is the best-F1 one on validation rows.
    """
    import hashlib
    import json
    from pathlib import Path

    import onnx
    import sklearn

    from gateway.detect.bundle import make_session
    from gateway.detect.export import export_hgb

    recipe = recipe_of(spec)
    train = build(recipe, "train", progress=progress)
    clf = fit(recipe, train)
    width = train.x.shape[1]
    blob = export_hgb(clf, width, doc=f"{spec['name']} {spec['version']}: {spec['description']}")
    validation = build(recipe, "validation", progress=progress)
    ours = make_session(blob).run(None, {"features": validation.x})[0].reshape(-1)
    theirs = clf.predict_proba(validation.x.astype(np.float64))[:, 1]
    diff = float(np.max(np.abs(ours - theirs)))
    if diff > 1e-4:
        raise ValueError(f"{spec['name']}: exported scores differ from scikit-learn by {diff}")
    threshold, f1 = best_threshold(ours.astype(np.float64), validation, THRESHOLDS, 0.005)
    normal = train.values[~train.truth]
    manifest = {
        **spec,
        "file": "model.onnx",
        "sha256": hashlib.sha256(blob).hexdigest(),
        "input": {"name": "features", "dtype": "float32", "shape": [None, width]},
        "output": {"name": "score", "dtype": "float32", "range": [0.0, 1.0]},
        "threshold": threshold,
        "defaults": np.median(normal, axis=0).round(4).tolist(),
        "attribution_floor": list(recipe["zscore_floor"]),
        "trained_on": {
            "rows": len(train.truth),
            "anomalous_rows": int(train.truth.sum()),
            "validation_rows": len(validation.truth),
            "validation_f1": round(f1, 4),
            "export_max_abs_diff": diff,
            "trees": len(clf._predictors),
            "scikit_learn": sklearn.__version__,
            "onnx": onnx.__version__,
            "numpy": np.__version__,
        },
    }
    out = Path(out_dir)
    (out / "model.onnx").write_bytes(blob)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def evaluate_bundle(manifest: Mapping[str, Any], run: Callable[[Any], Any],
                    progress: Progress | None = None, count: int | None = None,
                    validation_count: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Held-out evaluation of a model (``run`` maps features to scores) next to the baselines."""
    recipe = recipe_of(manifest)
    kinds = datasets.FAMILY_KINDS[recipe["family"]]
    validation = build(recipe, "validation", count=validation_count, progress=progress)
    baselines = fit_baselines(validation)
    test = build_test(recipe, progress, count)
    scores = np.asarray(run(test.x), dtype=np.float64).reshape(-1)
    threshold = float(manifest["threshold"])
    return {
        "model": f"{manifest['name']}@{manifest['version']}",
        "threshold": threshold,
        "baselines": baselines.as_dict(),
        "held_out": {"seeds_from": int(recipe["seeds"]["test"]), "rows": len(test.truth),
                     "anomalous_rows": int(test.truth.sum()),
                     "scenarios_per_kind": int(len(test.extra["scenario_kind"]) // len(kinds))},
        "results": evaluate(scores, threshold, test, baselines, kinds),
    }  # fmt: skip


def scenario_count(recipe: Mapping[str, Any], split: str) -> int:
    """How many scenarios a split simulates (for progress bars)."""
    n = int(recipe["scenarios"][split])
    return n * len(datasets.FAMILY_KINDS[recipe["family"]]) if split == "test" else n
