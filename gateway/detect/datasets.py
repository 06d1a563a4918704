"""Labelled data sets for training and evaluating the anomaly models.

A *scenario* is one simulated device (a seed of :mod:`hil_tests.emulators.physics`) sampled every
``period_s`` for some days with faults of chosen kinds injected at random times, sizes and
durations. Ground truth: a row is anomalous when a fault is active AND its effect is observable,
i.e. the faulty sample differs from the same simulator without faults (the simulators are pure
functions of seed and time, so the two runs share their noise). A failed lamp in daylight or a
stuck-at-zero counter at 3 a.m. with nobody passing is not counted as a detectable anomaly.

The univariate family uses generic series (cycles, trends, random walks and the physics
quantities at many scales) with generic faults: spike, level_shift, stuck, drift, noise.
Training, validation and held-out test sets use disjoint seed ranges (see ``SEEDS``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["FAMILY_KINDS", "SEEDS", "Scenario", "scenario", "univariate_scenario"]

DAY = 86400.0
HOUR = 3600.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00Z; each scenario starts a seeded number of days later

#: seed ranges: training, threshold validation, held-out test
SEEDS = {"train": 1, "validation": 5_000, "test": 10_000}

FAMILY_KINDS: dict[str, tuple[str, ...]] = {
    "water-quality": ("drift", "spike", "stuck", "pollution"),
    "streetlight": ("day_burning", "lamp_failed", "cycling", "power_mismatch"),
    "pedestrian-counter": ("stuck_zero", "burst", "direction_failure", "clock_shift"),
    "univariate-stream": ("spike", "level_shift", "stuck", "drift", "noise"),
}


@dataclass(slots=True)
class Scenario:
    """One labelled series: times ``(T,)``, values ``(T, Q)``, truth and fault kind per row."""

    times: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]
    truth: npt.NDArray[np.bool_]
    kind: npt.NDArray[np.int16]  # index into FAMILY_KINDS[family], -1 where normal
    faults: list[dict[str, Any]]


def _water_fault(rng: random.Random, kind: str) -> tuple[float, dict[str, Any]]:
    qs = ("temperature", "ph", "conductivity", "dissolved_oxygen", "turbidity", "orp")
    if kind == "drift":
        q = rng.choice(("dissolved_oxygen", "conductivity", "turbidity", "ph", "orp"))
        return rng.uniform(8, 36) * HOUR, {"quantity": q, "rate": _drift_rate(rng, q)}
    if kind == "spike":
        q = rng.choice(qs)
        return rng.choice((1, 1, 2, 3)) * 300.0, {"quantity": q, "magnitude": _spike(rng, q)}
    if kind == "stuck":
        n = rng.choice((1, 1, 2, 6))
        return rng.uniform(2, 12) * HOUR, {"quantities": rng.sample(qs, n)}
    return rng.uniform(3, 12) * HOUR, {"severity": rng.uniform(0.4, 1.4)}


def _drift_rate(rng: random.Random, q: str) -> float:
    base = {"dissolved_oxygen": -0.06, "conductivity": -6.0, "turbidity": 0.6, "ph": -0.012,
            "orp": -2.5}[q]  # fmt: skip
    return base * rng.uniform(0.7, 3.0)


def _spike(rng: random.Random, q: str) -> float:
    base = {"temperature": 4.0, "ph": 1.2, "conductivity": 500.0, "dissolved_oxygen": -4.0,
            "turbidity": 120.0, "orp": -180.0}[q]  # fmt: skip
    return base * rng.uniform(0.5, 1.5) * rng.choice((1, 1, -1))


def _light_fault(rng: random.Random, kind: str) -> tuple[float, dict[str, Any]]:
    if kind == "day_burning":
        return rng.uniform(1, 3) * DAY, {}
    if kind == "lamp_failed":
        return rng.uniform(6, 48) * HOUR, {"reported": rng.random() < 0.2}
    if kind == "cycling":
        return rng.uniform(1, 6) * HOUR, {"period": rng.choice((300.0, 600.0, 900.0))}
    factor = rng.uniform(1.3, 2.2) if rng.random() < 0.6 else rng.uniform(0.35, 0.7)
    return rng.uniform(6, 48) * HOUR, {"factor": factor}


def _counter_fault(rng: random.Random, kind: str) -> tuple[float, dict[str, Any]]:
    if kind == "stuck_zero":
        return rng.uniform(3, 24) * HOUR, {}
    if kind == "burst":
        return rng.choice((1, 1, 2, 3)) * 300.0, {"factor": rng.uniform(4, 12),
                                                   "extra": rng.uniform(30, 150)}  # fmt: skip
    if kind == "direction_failure":
        return rng.uniform(6, 48) * HOUR, {"direction": rng.choice(("in", "out"))}
    return rng.uniform(1, 3) * DAY, {"hours": rng.choice((-1, 1)) * rng.uniform(5, 11)}


def _make_sim(family: str, seed: int, t0: float, rng: random.Random) -> Any:
    from hil_tests.emulators import physics

    if family == "water-quality":
        return physics.WaterQualitySim(seed, t0)
    if family == "streetlight":
        return physics.StreetlightSim(seed, t0)
    return physics.CounterSim(seed, t0, busyness=rng.uniform(0.3, 2.0))


_FAULTS: dict[str, Callable[[random.Random, str], tuple[float, dict[str, Any]]]] = {
    "water-quality": _water_fault,
    "streetlight": _light_fault,
    "pedestrian-counter": _counter_fault,
}


def _sample(family: str, sim: Any, t: float, period: float) -> list[float]:
    if family == "pedestrian-counter":
        s = sim.sample(t, period)
        return [float(s["count_in"]), float(s["count_out"])]
    s = sim.sample(t)
    return [float(v) for v in s.values()]


def scenario(
    family: str, seed: int, days: float, kinds: tuple[str, ...], period_s: float = 300.0,
    faults_per_day: float = 0.5,
) -> Scenario:  # fmt: skip
    """Simulate one device of ``family`` with random faults of ``kinds``; see the module doc."""
    rng = random.Random(seed * 7919 + 17)
    t0 = T0 + rng.randrange(0, 365) * DAY + rng.randrange(0, 24) * HOUR
    sim = _make_sim(family, seed, t0, rng)
    clean = _make_sim(family, seed, t0, random.Random(seed * 7919 + 17))
    if family == "pedestrian-counter":
        clean.busyness = sim.busyness
    _inject_random(family, sim, rng, t0, days, kinds, faults_per_day)
    n = int(days * DAY / period_s)
    times = t0 + period_s * np.arange(1, n + 1, dtype=np.float64)
    values = np.empty((n, 2 if family == "pedestrian-counter" else 6))
    truth = np.zeros(n, dtype=bool)
    kind = np.full(n, -1, dtype=np.int16)
    all_kinds = FAMILY_KINDS[family]
    for i, t in enumerate(times.tolist()):
        row = _sample(family, sim, t, period_s)
        values[i] = row
        active = sim.labels_at(t)
        if active and row != _sample(family, clean, t, period_s):
            truth[i] = True
            kind[i] = all_kinds.index(active[-1].kind)
    return Scenario(times, values, truth, kind, [f.as_dict() for f in sim.labels])


def _inject_random(
    family: str, sim: Any, rng: random.Random, t0: float, days: float, kinds: tuple[str, ...],
    per_day: float,
) -> None:  # fmt: skip
    t = t0 + rng.uniform(0.5, 1.5) * DAY  # a clean first half day at least
    end = t0 + days * DAY
    while True:
        t += rng.expovariate(per_day / DAY)
        kind = rng.choice(kinds)
        duration, params = _FAULTS[family](rng, kind)
        if t + duration > end:
            return
        sim.inject(kind, t, duration, **params)
        t += duration


# --------------------------------------------------------------------------- univariate
def _base_series(rng: np.random.Generator, n: int, seed: int) -> npt.NDArray[np.float64]:
    """A normal series of one of several shapes, at a random scale and offset."""
    shape = seed % 4
    x = np.arange(n, dtype=np.float64)
    if shape == 0:  # daily cycle sampled at a random rate with AR(1) noise
        per = rng.uniform(24, 400)
        y = np.sin(2 * np.pi * x / per) + 0.5 * np.sin(2 * np.pi * x / (per * 7) + 1.0)
        y += _ar1(rng, n, 0.8, 0.15)
    elif shape == 1:  # random walk with mean reversion
        y = _ar1(rng, n, 0.995, 0.1)
    elif shape == 2:  # white noise around a slow trend
        y = rng.normal(0, 1, n) * 0.3 + np.linspace(0, rng.uniform(-2, 2), n)
    else:  # a physics quantity from the simulators
        y = _physics_series(seed, n)
        y = (y - y.mean()) / (y.std() + 1e-9)
    scale = 10 ** rng.uniform(-2, 4)
    offset = rng.normal(0, 5) * scale * rng.choice([0.0, 1.0, 10.0])
    return np.asarray(y * scale + offset, dtype=np.float64)


def _ar1(rng: np.random.Generator, n: int, phi: float, sigma: float) -> npt.NDArray[np.float64]:
    eps = rng.normal(0, sigma, n)
    out = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc = phi * acc + eps[i]
        out[i] = acc
    return out


def _physics_series(seed: int, n: int) -> npt.NDArray[np.float64]:
    from hil_tests.emulators import physics

    pick = (seed // 4) % 4
    t0 = T0 + (seed % 300) * DAY
    period = 600.0
    if pick == 3:
        sim = physics.StreetlightSim(seed, t0)
        return np.array([sim.sample(t0 + i * period)["voltage"] for i in range(n)])
    wq = physics.WaterQualitySim(seed, t0)
    q = ("temperature", "dissolved_oxygen", "conductivity")[pick]
    return np.array([wq.sample(t0 + i * period)[q] for i in range(n)])


def univariate_scenario(
    seed: int, n: int = 3000, faults: int = 8, kinds: tuple[str, ...] | None = None
) -> Scenario:
    """A generic series of ``n`` rows with ``faults`` labelled faults of the univariate kinds."""
    rng = np.random.default_rng(seed)
    y = _base_series(rng, n, seed)
    clean = y.copy()
    truth = np.zeros(n, dtype=bool)
    kind = np.full(n, -1, dtype=np.int16)
    all_kinds = FAMILY_KINDS["univariate-stream"]
    allowed = [all_kinds.index(k) for k in (kinds or all_kinds)]
    labels: list[dict[str, Any]] = []
    sigma = float(np.std(np.diff(clean))) + 1e-9 * (abs(float(clean.mean())) + 1.0)
    spread = float(np.std(clean)) + sigma
    starts = np.sort(rng.choice(np.arange(100, n - 200), size=faults, replace=False))
    last_end = 0
    for s in starts.tolist():
        if s < last_end + 20:
            continue
        k = allowed[int(rng.integers(len(allowed)))]
        e = _apply_univariate(rng, y, all_kinds[k], s, sigma, spread)
        last_end = e
        hit = y[s:e] != clean[s:e]
        truth[s:e] |= hit
        kind[s:e][hit] = k
        labels.append({"kind": all_kinds[k], "start": s, "end": e})
    times = 1_700_000_000.0 + 60.0 * np.arange(n, dtype=np.float64)
    return Scenario(times, y[:, None], truth, kind, labels)


def _apply_univariate(
    rng: np.random.Generator, y: npt.NDArray[np.float64], kind: str, s: int, sigma: float,
    spread: float,
) -> int:  # fmt: skip
    if kind == "spike":
        e = s + int(rng.integers(1, 3))
        y[s:e] += rng.choice([-1, 1]) * rng.uniform(1.5, 4) * spread
    elif kind == "level_shift":
        e = s + int(rng.integers(20, 120))
        y[s:e] += rng.choice([-1, 1]) * rng.uniform(1.0, 3) * spread
    elif kind == "stuck":
        e = s + int(rng.integers(15, 120))
        y[s:e] = y[s - 1]
    elif kind == "drift":
        e = s + int(rng.integers(40, 200))
        y[s:e] += rng.choice([-1, 1]) * np.linspace(0, rng.uniform(1.0, 3) * spread, e - s)
    else:
        e = s + int(rng.integers(20, 120))
        y[s:e] += rng.normal(0, 1, e - s) * rng.uniform(0.5, 1.5) * spread
    return min(int(e), int(y.shape[0]))
