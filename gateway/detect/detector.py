"""The anomaly stage: per-asset feature windows, batched ONNX scoring, events and lifecycle."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from gateway.detect import features
from gateway.detect.bundle import MANIFEST, Bundle, load_bundle
from gateway.errors import ModelError
from gateway.readings import Quality, Reading, iso

if TYPE_CHECKING:
    from gateway.detect.columns import ColumnScores

__all__ = ["AnomalyEvent", "Detector"]

log = logging.getLogger(__name__)
MODES = ("active", "shadow")
RECENT = 4096  # scores kept per model for the distribution stats


@dataclass(slots=True)
class AnomalyEvent:
    """An asset's anomaly started (``state="start"``) or ended (``state="end"``).

    Field names follow the native feed; :meth:`as_dict` adds FIWARE Anomaly's names
    (``anomalousProperty``, ``thresholdBreach``, ``detectedBy``, ``dateDetected``).
    """

    asset: str
    category: str
    quantities: list[str]
    score: float
    threshold: float
    model: str  # name@version
    detected_at: float
    observed_at: float
    state: str = "start"
    mode: str = "active"

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": "anomaly",
            "asset": self.asset,
            "category": self.category,
            "state": self.state,
            "mode": self.mode,
            "quantities": list(self.quantities),
            "score": round(self.score, 6),
            "threshold": self.threshold,
            "model": self.model,
            "detected_at": round(self.detected_at, 3),
            "observed_at": round(self.observed_at, 3),
            "anomalousProperty": list(self.quantities),
            "thresholdBreach": {"score": round(self.score, 6), "threshold": self.threshold},
            "detectedBy": self.model,
            "dateDetected": iso(self.detected_at),
        }


@dataclass(slots=True)
class _Window:
    """The newest ``length`` rows of one asset, one row per period; latest value wins in a row.

    ``open`` marks a newest row with updates not yet scored; ``received`` which quantities the
    newest row has had so far (a row is complete when all have arrived).
    """

    values: npt.NDArray[np.float64]
    received: list[bool]
    n_received: int = 0
    seen_all: bool = False  # no NaN (never-seen quantity) is left in the window
    filled: int = 0
    row_time: float = -math.inf  # when the newest row began (period boundaries)
    last_time: float = -math.inf  # the newest value's time (the row's time for the features)
    open: bool = False
    flagged: bool = False
    last_score: float | None = None
    streak: int = 0  # consecutive scores at or above the threshold
    scored_row: int = 0  # the row (by fill count) of the last score
    candidate: tuple[float, float, float, npt.NDArray[np.float64]] | None = None
    pending: list[Reading] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.n_received == len(self.received)

    def starts_row(self, t: float, period: float) -> bool:
        if self.filled == 0 or period <= 0.0:
            return True
        # a clock that jumps back by more than a period (a node reset) starts a row too
        return t >= self.row_time + period or t < self.row_time - period

    def put(self, q: int, value: float, t: float, period: float, summed: bool) -> None:
        """Add a value: it replaces the row's value, or adds to it for a summed quantity."""
        if self.filled == 0:
            self.values[:, q] = 0.0 if summed else value  # padded with its first row
            self.filled, self.row_time = 1, t
        elif self.starts_row(t, period):
            self.values[:-1] = self.values[1:]
            self.filled += 1
            self.row_time = t
            self.received = [False] * len(self.received)
            self.n_received = 0
        first = not self.received[q]
        if self.filled > 1:
            row = self.values[-1]
            row[q] = (row[q] + value if not first else value) if summed else value
        elif summed:
            self.values[:, q] = value if first else self.values[0, q] + value
        else:
            self.values[:, q] = value
        if first:
            self.received[q] = True
            self.n_received += 1
        self.open = True
        self.last_time = max(t, self.row_time)


@dataclass(slots=True)
class _Request:
    asset: str
    window: npt.NDArray[np.float64]
    filled: int
    time: float
    readings: list[Reading]


class _Model:
    """A bundle in use: its mode, counters and recent score distribution."""

    def __init__(self, bundle: Bundle, mode: str = "active") -> None:
        self.bundle, self.mode = bundle, mode
        self.qindex = {q: i for i, q in enumerate(bundle.quantities)}
        summed = set(bundle.manifest["window"].get("sum", []))
        self.summed = [q in summed for q in self.qindex]
        self.has_sums = any(self.summed)
        self.defaults = np.asarray(
            bundle.manifest.get("defaults", [0.0] * len(self.qindex)), dtype=np.float64
        )
        self.floor = np.asarray(
            bundle.manifest.get("attribution_floor", [1e-6] * len(self.qindex)), dtype=np.float64
        )
        self.clear_ratio = float(bundle.manifest.get("clear_ratio", 0.8))
        self.rows = self.flagged = self.events = 0
        self.seconds = 0.0
        self.recent = np.zeros(RECENT, dtype=np.float32)
        self.recent_n = 0

    @property
    def label(self) -> str:
        return f"{self.bundle.name}@{self.bundle.version}"

    def new_window(self) -> _Window:
        values = np.full((self.bundle.window, len(self.qindex)), np.nan)
        return _Window(values, [False] * len(self.qindex))

    def record(self, scores: npt.NDArray[np.float32], seconds: float) -> None:
        n = len(scores)
        self.rows += n
        self.seconds += seconds
        keep = min(n, RECENT)  # of more than RECENT scores only the newest are kept
        idx = (self.recent_n + np.arange(n - keep, n)) % RECENT
        self.recent[idx] = scores[n - keep :]
        self.recent_n += n

    def stats(self) -> dict[str, Any]:
        b = self.bundle
        recent = self.recent[: min(self.recent_n, RECENT)].astype(np.float64)
        dist: dict[str, float | int | None] = {"n": int(recent.size)}
        if recent.size:
            p50, p95, p99 = np.percentile(recent, (50, 95, 99)).tolist()
            dist.update(mean=float(recent.mean()), p50=p50, p95=p95, p99=p99)
        else:
            dist.update(mean=None, p50=None, p95=None, p99=None)
        dist = {k: round(v, 6) if isinstance(v, float) else v for k, v in dist.items()}
        return {
            "model": self.label, "version": b.version, "sha256": b.sha256, "mode": self.mode,
            "category": b.category, "threshold": b.threshold, "rows_scored": self.rows,
            "rows_flagged": self.flagged, "events": self.events, "scores": dist,
            "us_per_row": round(self.seconds / self.rows * 1e6, 2) if self.rows else None,
            "load_ms": round(b.load_ms, 2),
        }  # fmt: skip


class Detector:
    """Scores readings with one ONNX model per asset category; see :mod:`gateway.detect`."""

    def __init__(self, models: Mapping[str, _Model], assets: Mapping[str, str]) -> None:
        self._models: dict[str, _Model] = dict(models)
        self._assets = dict(assets)
        self._windows: dict[str, _Window] = {}
        self._thresholds: dict[str, float] = {}
        self.bad_readings = 0
        self._warned: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, models_dir: Path, assets: Mapping[str, str]) -> Detector:
        """Verify and open the model of every category in ``assets`` found under ``models_dir``.

        Each sub-directory with a ``manifest.json`` is a bundle. A category without a model is
        not scored; a bundle that fails verification raises ModelError naming its file.
        """
        wanted = set(assets.values())
        found: dict[str, _Model] = {}
        if not models_dir.is_dir():
            raise ModelError(f"{models_dir}: not a directory of model bundles")
        for manifest in sorted(models_dir.glob(f"*/{MANIFEST}")):
            category = _peek_category(manifest)
            if category not in wanted:
                continue
            if category in found:
                raise ModelError(f"{manifest}: a second model for category {category!r}")
            bundle = load_bundle(manifest.parent)
            found[category] = _Model(bundle, str(bundle.manifest.get("mode", "active")))
        for category in sorted(wanted - set(found)):
            log.info("no anomaly model for category %s: its assets are not scored", category)
        return cls(found, assets)

    # ------------------------------------------------------------------ scoring
    def score(self, readings: list[Reading]) -> list[AnomalyEvent]:
        """Score a batch in place (``score``, ``quality``) and return anomaly start/end events."""
        requests: dict[str, list[_Request]] = {}
        touched: dict[str, _Window] = {}
        for r in readings:
            model = self._model_of(r.asset)
            q = model.qindex.get(r.quantity) if model is not None else None
            if model is None or q is None:
                continue
            if r.quality is Quality.INVALID or not math.isfinite(r.value):
                self._bad(r)
                continue
            win = self._windows.get(r.asset)
            if win is None:
                win = self._windows[r.asset] = model.new_window()
            period = model.bundle.period_s
            if win.open and win.starts_row(r.time, period):
                requests.setdefault(model.bundle.category, []).append(self._snapshot(r.asset, win))
            win.put(q, float(r.value), r.time, period, model.summed[q])
            win.pending.append(r)
            touched[r.asset] = win
        partial: list[tuple[str, _Window]] = []
        for asset, win in touched.items():
            if win.open and win.complete and not self._models[self._assets[asset]].has_sums:
                category = self._assets[asset]
                requests.setdefault(category, []).append(self._snapshot(asset, win))
            elif win.pending:
                partial.append((asset, win))
        events: list[AnomalyEvent] = []
        for category, reqs in requests.items():
            events.extend(self._run(self._models[category], reqs))
        for asset, win in partial:
            self._provisional(asset, win)
        return events

    def score_columns(
        self, asset: str, times: npt.NDArray[np.float64],
        columns: dict[str, npt.NDArray[np.float64]], ends: npt.NDArray[np.int64],
    ) -> ColumnScores | None:  # fmt: skip
        """One asset's whole series at once: what :meth:`score` gives its readings (each sample's
        quantities at one time) fed in batches ending before each index of ``ends``.

        Returns None, having changed nothing, for input it does not cover (a model quantity
        missing or not finite, time going back, an asset already scored); see
        :mod:`gateway.detect.columns`.
        """
        from gateway.detect import columns as cols

        if not cols.supported(self, asset, times, columns):
            return None
        return cols.score_columns(self, asset, times, columns, ends)

    def _provisional(self, asset: str, win: _Window) -> None:
        """Readings of a row still missing quantities take the asset's current score and state.

        The row itself is scored once it is complete (or the next row starts), so a batch cut
        in the middle of a row never scores a half-updated row.
        """
        active = self._models[self._assets[asset]].mode == "active"
        for r in win.pending:
            r.score = win.last_score
            if win.flagged and active and r.quality is Quality.GOOD:
                r.quality = Quality.SUSPECT
        win.pending = []

    def _bad(self, r: Reading) -> None:
        """Count a value that cannot be scored; log it once per asset and quantity."""
        self.bad_readings += 1
        if (r.asset, r.quantity) not in self._warned:
            self._warned.add((r.asset, r.quantity))
            log.warning(
                "%s: %s value %r (%s) from device %r is not scored; further ones are only counted",
                r.asset, r.quantity, r.value, r.quality.value, r.device,
            )  # fmt: skip

    def _model_of(self, asset: str) -> _Model | None:
        category = self._assets.get(asset)
        return self._models.get(category) if category is not None else None

    def _snapshot(self, asset: str, win: _Window) -> _Request:
        model = self._models[self._assets[asset]]
        values = win.values.copy()
        if not win.seen_all:  # NaN marks a quantity not seen yet: use the training median
            missing = np.isnan(values)
            if missing.any():
                values[missing] = np.broadcast_to(model.defaults, values.shape)[missing]
            else:
                win.seen_all = True
        req = _Request(asset, values, win.filled, win.last_time, win.pending)
        win.pending, win.open = [], False
        return req

    def _run(self, model: _Model, reqs: list[_Request]) -> list[AnomalyEvent]:
        b = model.bundle
        start = time.perf_counter()
        x = features.compute(
            b.feature_set,
            np.stack([r.window for r in reqs]),
            np.array([r.filled for r in reqs], dtype=np.float64),
            np.array([r.time for r in reqs], dtype=np.float64),
            b.params,
        )
        scores = b.run(x)
        model.record(scores, time.perf_counter() - start)
        events: list[AnomalyEvent] = []
        for req, s in zip(reqs, scores.tolist(), strict=True):
            thr = self._thresholds.get(req.asset, b.threshold)
            flagged = s >= thr
            for r in req.readings:
                r.score = s
                if flagged and model.mode == "active" and r.quality is Quality.GOOD:
                    r.quality = Quality.SUSPECT
            model.flagged += int(flagged)
            events.extend(self._transition(model, req, s, thr, flagged))
        return events

    def _transition(
        self, model: _Model, req: _Request, score: float, thr: float, flagged: bool
    ) -> list[AnomalyEvent]:
        """Start an anomaly when two scores in a row, or a row's last score, reach the threshold.

        A lone high score inside a row that is then overwritten (a noise tail of a device that
        reports far faster than the model's period) flags its readings but raises no event.
        """
        win = self._windows[req.asset]
        win.last_score = score
        out: list[AnomalyEvent] = []
        if req.filled != win.scored_row:  # the previous row is closed
            if not win.flagged and win.candidate is not None:
                win.flagged = True
                out.append(self._event(model, req.asset, "start", *win.candidate))
            win.scored_row = req.filled
        win.streak = win.streak + 1 if flagged else 0
        win.candidate = (score, thr, req.time, req.window) if flagged else None
        if not win.flagged and win.streak >= 2:
            win.flagged = True
            out.append(self._event(model, req.asset, "start", score, thr, req.time, req.window))
        elif win.flagged and score < thr * model.clear_ratio:
            win.flagged, win.candidate = False, None
            out.append(self._event(model, req.asset, "end", score, thr, req.time, req.window))
        return out

    def _event(
        self, model: _Model, asset: str, state: str, score: float, thr: float, observed: float,
        window: npt.NDArray[np.float64],
    ) -> AnomalyEvent:  # fmt: skip
        model.events += 1
        return AnomalyEvent(
            asset, model.bundle.category, self._attribute(model, window), score, thr,
            model.label, time.time(), observed, state, model.mode,
        )  # fmt: skip

    @staticmethod
    def _attribute(model: _Model, window: npt.NDArray[np.float64]) -> list[str]:
        """The quantities that moved most (rolling z-score) or stopped moving (stuck)."""
        prev = window[:-1]
        z = np.abs(window[-1] - prev.mean(axis=0)) / (prev.std(axis=0) + model.floor)
        stuck = (np.diff(window[-6:], axis=0) == 0.0).all(axis=0)
        names = list(model.qindex)
        picked = [names[i] for i in np.flatnonzero((z > 3.0) | stuck).tolist()]
        return picked or [names[int(np.argmax(z))]]

    # ------------------------------------------------------------------ lifecycle
    def stats(self) -> dict[str, Any]:
        """Per category: model, version, sha256, mode, rows, score distribution and timing."""
        return {category: m.stats() for category, m in self._models.items()}

    def swap(self, bundle_dir: Path) -> str:
        """Verify and switch to the bundle in ``bundle_dir``; returns its ``name@version``.

        A bundle that fails verification raises ModelError and the current model stays. The new
        model keeps its category's mode; windows are kept when their shape is unchanged.
        """
        new = load_bundle(bundle_dir)
        old = self._models.get(new.category)
        mode = old.mode if old is not None else "active"
        model = _Model(new, mode)
        same = old is not None and (
            old.bundle.quantities, old.bundle.window) == (new.quantities, new.window)  # fmt: skip
        if not same:
            for asset, category in self._assets.items():
                if category == new.category:
                    self._windows.pop(asset, None)
        self._models[new.category] = model
        log.info("anomaly model for %s is now %s", new.category, model.label)
        return model.label

    def set_threshold(self, asset: str, value: float) -> None:
        """Override the score threshold of one asset (downlink ``thresholds``)."""
        if asset not in self._assets:
            raise ModelError(f"unknown asset {asset!r}")
        if not (isinstance(value, int | float) and 0.0 < value <= 1.0):
            raise ModelError(f"{asset}: threshold must be a number in (0, 1], got {value!r}")
        self._thresholds[asset] = float(value)

    def set_mode(self, category: str, mode: str) -> None:
        """Put a category's model in ``shadow`` (score and report, never flag) or ``active``."""
        if mode not in MODES:
            raise ModelError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        model = self._models.get(category)
        if model is None:
            raise ModelError(f"no anomaly model for category {category!r}")
        model.mode = mode


def _peek_category(manifest: Path) -> str | None:
    import json

    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{manifest}: unreadable manifest: {e}") from e
    category = doc.get("category") if isinstance(doc, dict) else None
    return category if isinstance(category, str) else None
