"""Causal feature engineering for the anomaly models, shared by training and the runtime.

A model sees a *window*: the last ``length`` rows of one asset's quantities, one row per
``period_s`` seconds (readings inside a period update the newest row: the latest value of each
quantity wins). A window that has not filled yet is padded by repeating its first row and the
``fill`` feature says how much of it is real. :func:`compute` turns a stack of windows
``(N, length, Q)`` plus the time of each window's newest row into a float32 feature matrix
``(N, F)``; training calls it on sliding windows of simulated series and the runtime on the
windows it keeps per asset, so both see exactly the same numbers. Every feature uses only the
window, i.e. rows at or before the scored one.

The feature sets are versioned by name (``water-quality/1`` ...); a manifest names the set it was
trained with and its parameters. Pure numpy, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.solar import sun_times

__all__ = ["FEATURE_SETS", "FeatureSet", "compute", "is_dark", "sun_times"]  # sun_times: re-export

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
DAY = 86400.0
HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class FeatureSet:
    """One versioned feature recipe: which quantities it reads and the names of its outputs."""

    name: str
    quantities: tuple[str, ...]
    names: tuple[str, ...]
    fn: Callable[[F64, F64, F64, Mapping[str, Any]], F64]


# --------------------------------------------------------------------------- helpers
def _fill(filled: F64, length: int) -> F64:
    return np.minimum(filled, length) / length


def _hour_features(times: F64, tz_hours: float) -> tuple[F64, F64, F64]:
    local = times + tz_hours * HOUR
    angle = 2.0 * np.pi * ((local % DAY) / DAY)
    weekday = ((local // DAY) + 3.0) % 7.0  # 1970-01-01 was a Thursday; 0 = Monday
    weekend = np.asarray(weekday >= 5.0, dtype=np.float64)
    return np.asarray(np.sin(angle)), np.asarray(np.cos(angle)), weekend


def _zscore(w: F64, floor: F64 | float) -> F64:
    """(newest - mean of the older rows) / (their std + floor), per quantity."""
    prev = w[:, :-1, :]
    return np.asarray((w[:, -1, :] - prev.mean(axis=1)) / (prev.std(axis=1) + floor))


def _flat(w: F64) -> F64:
    """Fraction of row-to-row steps in the window with exactly no change, per quantity."""
    return np.asarray((np.diff(w, axis=1) == 0.0).mean(axis=1), dtype=np.float64)


def _trend(w: F64, floor: F64 | float) -> F64:
    """(mean of the newest quarter - mean of the oldest quarter) / floor, per quantity."""
    q = max(1, w.shape[1] // 4)
    return np.asarray((w[:, -q:, :].mean(axis=1) - w[:, :q, :].mean(axis=1)) / floor)


def _trailing_run(mask: npt.NDArray[np.bool_]) -> F64:
    """Length of the run of True at the end of each row of a (N, W) mask, as a fraction of W."""
    n, width = mask.shape
    if width == 0:
        return np.zeros(n)
    rev = mask[:, ::-1]
    first_false = np.where(rev.all(axis=1), width, np.argmin(rev, axis=1))
    return np.asarray(first_false / width, dtype=np.float64)


# --------------------------------------------------------------------------- solar geometry
def is_dark(times: F64, lat: float, lon: float, twilight_s: float = 600.0) -> F64:
    """1.0 where a dusk-to-dawn controller at (lat, lon) would have the lamp on, else 0.0."""
    out = np.ones(times.shape)
    days: dict[int, list[tuple[float, float]]] = {}
    for i, t in enumerate(times.tolist()):
        day = int(t // DAY)
        spans = days.get(day)
        if spans is None:
            spans = [sun_times(t + d * DAY, lat, lon) for d in (-1.0, 0.0, 1.0)]
            days[day] = spans
        if any(r - twilight_s <= t < s + twilight_s for r, s in spans):
            out[i] = 0.0
    return out


# --------------------------------------------------------------------------- the feature sets
_WATER = ("temperature", "ph", "conductivity", "dissolved_oxygen", "turbidity", "orp")
#: per-quantity noise floor of the water features (sensor noise of a healthy probe)
_WATER_FLOOR = np.array([0.05, 0.02, 5.0, 0.08, 0.5, 4.0])


def _water(w: F64, filled: F64, times: F64, p: Mapping[str, Any]) -> F64:
    last = w[:, -1, :]
    step = (last - w[:, -2, :]) / _WATER_FLOOR
    temp = np.clip(last[:, 0], 0.0, 40.0)
    sat = 14.652 - 0.41022 * temp + 0.007991 * temp**2 - 0.000077774 * temp**3
    do_ratio = last[:, 3] / sat
    log_turbidity = np.log1p(np.maximum(last[:, 4], 0.0))
    hs, hc, _ = _hour_features(times, float(p.get("tz_hours", 1.0)))
    # absolute conductivity and ORP are site-specific: only their changes are features
    cols = [last[:, [0, 1, 3]], step, _zscore(w, _WATER_FLOOR), _flat(w), _trend(w, _WATER_FLOOR)]
    extra = [do_ratio, log_turbidity, hs, hc, _fill(filled, w.shape[1])]
    return np.asarray(np.column_stack([*cols, *extra]), dtype=np.float64)


def _names(prefixes: Sequence[str], qs: Sequence[str], extra: Sequence[str]) -> tuple[str, ...]:
    return (*[f"{p}:{q}" for p in prefixes for q in qs], *extra)


_LIGHT = ("power_state", "dim_level", "power", "voltage", "current", "lamp_fault")


def _light(w: F64, filled: F64, times: F64, p: Mapping[str, Any]) -> F64:
    rated = float(p.get("rated_power_w", 60.0))
    last = w[:, -1, :]
    state, dim, power, volt, cur, fault = (last[:, i] for i in range(6))
    expected = np.where(state > 0.5, 0.7 + rated * (0.08 + 0.92 * (dim / 100.0) ** 1.15), 0.7)
    toggles = (np.diff(w[:, :, 0], axis=1) != 0.0).mean(axis=1)
    dark = is_dark(times, float(p.get("lat", 52.37)), float(p.get("lon", 4.90)))
    hs, hc, _ = _hour_features(times, float(p.get("tz_hours", 1.0)))
    pw = w[:, :, 2:3] / rated
    cols = [
        state, dim / 100.0, power / rated, volt, cur * volt / rated, fault,
        np.log((power + 0.5) / (expected + 0.5)), toggles, dark, state - dark,
        _zscore(pw, 0.01)[:, 0], (power - w[:, -2, 2]) / rated, hs, hc, _fill(filled, w.shape[1]),
    ]  # fmt: skip
    return np.asarray(np.column_stack(cols), dtype=np.float64)


_COUNTER = ("count_in", "count_out")


def _counter(w: F64, filled: F64, times: F64, p: Mapping[str, Any]) -> F64:
    per_hour = HOUR / float(p.get("period_s", 300.0))
    c_in, c_out = w[:, :, 0], w[:, :, 1]
    total = c_in + c_out
    last_in, last_out, last = c_in[:, -1], c_out[:, -1], total[:, -1]
    mean_prev = total[:, :-1].mean(axis=1)
    hs, hc, weekend = _hour_features(times, float(p.get("tz_hours", 1.0)))
    one_way = ((c_in == 0.0) | (c_out == 0.0)) & (total > 0.0)
    cols = [
        last_in * per_hour, last_out * per_hour, np.log1p(last * per_hour),
        (last_in + 1.0) / (last + 2.0), np.log1p(mean_prev * per_hour),
        (last - mean_prev) / np.sqrt(mean_prev + 1.0), _trailing_run(total == 0.0),
        one_way.mean(axis=1), (c_in.sum(axis=1) + 1.0) / (total.sum(axis=1) + 2.0),
        np.log1p(total.max(axis=1) * per_hour), hs, hc, weekend, _fill(filled, w.shape[1]),
    ]  # fmt: skip
    return np.asarray(np.column_stack(cols), dtype=np.float64)


def _univariate(w: F64, filled: F64, times: F64, p: Mapping[str, Any]) -> F64:
    x = w[:, :, 0]
    ref = x[:, :-1]
    med = np.median(ref, axis=1)
    mad = np.median(np.abs(ref - med[:, None]), axis=1) * 1.4826
    floor = 1e-6 * (np.abs(med) + 1.0)
    scale = np.maximum(np.maximum(mad, 0.5 * ref.std(axis=1)), floor)
    step = np.abs(np.diff(ref, axis=1))
    step_scale = np.maximum(np.median(step, axis=1) * 1.4826, floor)

    def z(v: F64) -> F64:
        return np.asarray(np.clip((v - med) / scale, -50.0, 50.0), dtype=np.float64)

    vol = np.log((x[:, -16:].std(axis=1) + floor) / (ref.std(axis=1) + floor))
    cols = [
        z(x[:, -1]),
        np.clip((x[:, -1] - x[:, -2]) / step_scale, -100.0, 100.0),
        z(x[:, -8:].mean(axis=1)),
        z(x[:, -32:].mean(axis=1)),
        np.clip(vol, -10.0, 10.0),
        (np.diff(x[:, -16:], axis=1) == 0.0).mean(axis=1),
        _trailing_run(np.diff(x, axis=1) == 0.0),
        np.clip((x[:, -16:].max(axis=1) - x[:, -16:].min(axis=1)) / scale, 0.0, 100.0),
        _fill(filled, w.shape[1]),
    ]
    return np.asarray(np.column_stack(cols), dtype=np.float64)


FEATURE_SETS: dict[str, FeatureSet] = {
    "water-quality/1": FeatureSet(
        "water-quality/1",
        _WATER,
        (
            "last:temperature",
            "last:ph",
            "last:dissolved_oxygen",
            *_names(
                ("step", "z", "flat", "trend"),
                _WATER,
                ("do_saturation_ratio", "log_turbidity", "hour_sin", "hour_cos", "fill"),
            ),
        ),
        _water,
    ),
    "streetlight/1": FeatureSet(
        "streetlight/1",
        _LIGHT,
        (
            "power_state",
            "dim",
            "power_rel",
            "voltage",
            "apparent_rel",
            "lamp_fault",
            "log_power_vs_expected",
            "toggles",
            "dark",
            "on_minus_dark",
            "z_power",
            "step_power",
            "hour_sin",
            "hour_cos",
            "fill",
        ),
        _light,
    ),
    "pedestrian-counter/1": FeatureSet(
        "pedestrian-counter/1",
        _COUNTER,
        (
            "in_per_h",
            "out_per_h",
            "log_total_per_h",
            "in_share",
            "log_mean_per_h",
            "z_total",
            "zero_run",
            "one_way_fraction",
            "window_in_share",
            "log_max_per_h",
            "hour_sin",
            "hour_cos",
            "weekend",
            "fill",
        ),
        _counter,
    ),
    "univariate/1": FeatureSet(
        "univariate/1",
        ("value",),
        (
            "robust_z",
            "step_z",
            "shift8_z",
            "shift32_z",
            "log_volatility_ratio",
            "flat16",
            "trailing_flat",
            "range16_z",
            "fill",
        ),
        _univariate,
    ),
}


def compute(name: str, windows: F64, filled: F64, times: F64, params: Mapping[str, Any]) -> F32:
    """Features of a stack of windows ``(N, length, Q)`` as a contiguous float32 ``(N, F)``."""
    fs = FEATURE_SETS[name]
    out = fs.fn(windows, filled, times, params)
    out = np.nan_to_num(out, nan=0.0, posinf=1e6, neginf=-1e6)
    return np.ascontiguousarray(out, dtype=np.float32)


def sliding(series: F64, length: int) -> tuple[F64, F64]:
    """All causal windows of a ``(T, Q)`` series, padded at the start: ``(T, length, Q)``, fill.

    Window ``t`` ends at row ``t``; rows before the first are copies of the first, exactly as the
    runtime pads a new asset's window.
    """
    pad = np.repeat(series[:1], length - 1, axis=0)
    full = np.concatenate([pad, series], axis=0)
    view = np.lib.stride_tricks.sliding_window_view(full, length, axis=0)  # (T, Q, length)
    windows = np.ascontiguousarray(view.transpose(0, 2, 1))
    filled = np.arange(1, series.shape[0] + 1, dtype=np.float64)
    return windows, filled
