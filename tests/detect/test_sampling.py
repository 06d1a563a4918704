"""The vectorised sampler gives exactly what the simulators' own ``sample()`` gives."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from hil_tests.emulators import physics
from hil_tests.emulators.sampling import sample_series

T0 = 1784592000.0  # 2026-07-21 00:00 UTC, a Tuesday
DAY = 86400.0


def _times(n: int, step: float, start: float = T0) -> np.ndarray[Any, np.dtype[np.float64]]:
    return start + step * np.arange(1, n + 1, dtype=np.float64)


def _same(sim: Any, times: np.ndarray[Any, np.dtype[np.float64]], dt: float | None) -> None:
    got = sample_series(sim, times, dt)
    ref = [sim.sample(t) if dt is None else sim.sample(t, dt) for t in times.tolist()]
    assert list(got) == list(ref[0])
    for q, column in got.items():
        want = np.array([r[q] for r in ref], dtype=np.float64)
        # bit for bit, signed zeros included: the rehearsal's results must not move at all
        assert np.array_equal(column.view(np.uint64), want.view(np.uint64)), q


@pytest.mark.parametrize("seed", [3, 101])
def test_water_series_equals_sample(seed: int) -> None:
    sim = physics.WaterQualitySim(seed, T0, lon=5.1)
    sim.inject("drift", T0 + 600, 5000, quantities=["temperature", "ph"], rate=0.5)
    sim.inject("pollution", T0 + 3000, 8000, severity=0.7)
    sim.inject("stuck", T0 + 4000, 900, quantity="ph")  # holds a value the drift moved
    sim.inject("spike", T0 + 7000, 50, quantity="turbidity", magnitude=30)
    _same(sim, _times(1500, 7.3), None)  # 3 h, faults overlapping
    _same(sim, _times(400, 997.0, T0 - 2 * DAY), None)  # days of rain across midnight


@pytest.mark.parametrize("seed", [3, 101])
def test_streetlight_series_equals_sample(seed: int) -> None:
    sim = physics.StreetlightSim(seed, T0, 48.85, 2.35)
    sim.inject("lamp_failed", T0 + 100, 3000, reported=True)
    sim.inject("cycling", T0 + 5000, 9000, period=120.0)
    sim.inject("day_burning", T0 + 20000, 40000)
    sim.inject("power_mismatch", T0 + 60000, 20000, factor=1.3)
    _same(sim, _times(900, 97.0), None)  # a day: dusk, dawn, the dimming schedule


@pytest.mark.parametrize(("seed", "dt"), [(3, 1.0), (101, 300.0)])
def test_counter_series_equals_sample(seed: int, dt: float) -> None:
    sim = physics.CounterSim(seed, T0, 1.5)
    sim.inject("burst", T0 + 30000, 4000, factor=4.0, extra=2.0)
    sim.inject("stuck_zero", T0 + 40000, 900)
    sim.inject("direction_failure", T0 + 50000, 2000, direction="out")
    sim.inject("clock_shift", T0 + 60000, 5000, hours=5)
    _same(sim, _times(2000, 431.0 if dt > 1 else 43.0), dt)  # weekdays and a weekend


def test_counter_series_large_rates_use_the_normal_approximation() -> None:
    sim = physics.CounterSim(7, T0, 2.0)
    _same(sim, _times(200, 300.0, T0 + 0.3 * DAY), 3600.0)  # an hour's count: rates over 50


def test_unknown_simulator_and_missing_interval_are_refused() -> None:
    with pytest.raises(TypeError, match="dt"):
        sample_series(physics.CounterSim(1, T0), _times(3, 1.0))
    with pytest.raises(TypeError, match="no vectorised sampler"):
        sample_series(object(), _times(3, 1.0))
