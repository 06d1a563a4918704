"""The physics generators: deterministic, physically sensible, and faults that leave labels."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from hil_tests.emulators.physics import (
    CounterSim,
    FaultLabel,
    StreetlightSim,
    WaterQualitySim,
    sun_times,
)

T0 = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
HOUR = 3600.0


def test_water_is_deterministic_and_order_free() -> None:
    a, b = WaterQualitySim(7, T0), WaterQualitySim(7, T0)
    times = [T0 + i * 300.0 for i in range(50)]
    forward = [a.sample(t) for t in times]
    backward = [b.sample(t) for t in reversed(times)][::-1]
    assert forward == backward
    assert WaterQualitySim(8, T0).sample(times[3]) != forward[3]


def test_water_physics_cycles_and_coupling() -> None:
    sim = WaterQualitySim(3, T0)
    day = [sim.clean(T0 + h * HOUR) for h in range(24)]
    temps = [d["temperature"] for d in day]
    assert 5.0 < min(temps) < max(temps) < 30.0
    # photosynthesis: oxygen and pH are higher in the afternoon than before dawn (solar time)
    assert day[15]["dissolved_oxygen"] > day[4]["dissolved_oxygen"]
    assert day[15]["ph"] > day[4]["ph"]
    winter = WaterQualitySim(3, T0 - 150 * 24 * HOUR).clean(T0 - 150 * 24 * HOUR)
    assert winter["temperature"] < day[0]["temperature"]
    assert winter["dissolved_oxygen"] > day[0]["dissolved_oxygen"]  # colder water holds more


def test_rain_raises_turbidity_and_dilutes_conductivity() -> None:
    sim = WaterQualitySim(11, T0)
    times = [T0 + i * 600.0 for i in range(24 * 6 * 30)]
    wet = max(times, key=sim.runoff)
    assert sim.runoff(wet) > 0.3
    dry = min((t for t in times if sim.runoff(t) == 0.0), key=lambda t: abs(t - wet))
    assert sim.clean(wet)["turbidity"] > sim.clean(dry)["turbidity"] + 10.0
    assert sim.clean(wet)["conductivity"] < sim.clean(dry)["conductivity"]


def test_water_faults_and_labels() -> None:
    sim = WaterQualitySim(5, T0)
    ref = WaterQualitySim(5, T0)
    stuck = sim.inject("stuck", T0 + HOUR, 2 * HOUR, quantity="ph")
    sim.inject("pollution", T0 + 5 * HOUR, 6 * HOUR, severity=1.0)
    sim.inject("drift", T0 + 12 * HOUR, 24 * HOUR, quantity="dissolved_oxygen", rate=-0.2)
    sim.inject("spike", T0 + 40 * HOUR, 300.0, quantity="turbidity", magnitude=150.0)
    assert [f.kind for f in sim.labels] == ["stuck", "pollution", "drift", "spike"]
    assert isinstance(stuck, FaultLabel) and stuck.quantities == ("ph",)
    assert sim.sample(T0 + 1.5 * HOUR)["ph"] == sim.sample(T0 + 2.5 * HOUR)["ph"]
    mid = T0 + 8 * HOUR
    moved = {q for q, v in sim.sample(mid).items() if abs(v - ref.sample(mid)[q]) > 1e-9}
    assert {"dissolved_oxygen", "turbidity", "conductivity", "orp", "ph"} <= moved
    t = T0 + 22 * HOUR
    assert sim.sample(t)["dissolved_oxygen"] == pytest.approx(
        ref.sample(t)["dissolved_oxygen"] - 2.0, abs=1e-6
    )
    spike = T0 + 40 * HOUR
    assert sim.sample(spike)["turbidity"] - ref.sample(spike)["turbidity"] == pytest.approx(150.0)
    assert [f.active(T0 + 2 * HOUR) for f in sim.labels] == [True, False, False, False]
    assert sim.labels_at(T0 + 100 * HOUR) == []
    with pytest.raises(ValueError, match="unknown fault kind"):
        sim.inject("melted", T0, 10.0)
    with pytest.raises(ValueError, match="unknown quantity"):
        sim.inject("stuck", T0, 10.0, quantity="salinity")


def test_sun_times_match_the_almanac_for_amsterdam() -> None:
    # midsummer in Amsterdam: sunrise 05:18 CEST (03:18 UTC), sunset 22:06 CEST (20:06 UTC)
    t = datetime(2026, 6, 21, 12, tzinfo=UTC).timestamp()
    rise, sset = sun_times(t, 52.37, 4.90)
    assert abs(rise - datetime(2026, 6, 21, 3, 18, tzinfo=UTC).timestamp()) < 6 * 60
    assert abs(sset - datetime(2026, 6, 21, 20, 6, tzinfo=UTC).timestamp()) < 6 * 60


def test_streetlight_dusk_to_dawn_dimming_and_power() -> None:
    sim = StreetlightSim(2, T0)
    noon = sim.sample(T0 + 12 * HOUR)
    assert noon["power_state"] == 0.0 and noon["power"] < 1.5
    late = sim.sample(T0 + 23.5 * HOUR)  # 00:30 local: dimmed
    evening = sim.sample(T0 + 20.75 * HOUR)  # 21:45 local, after sunset
    assert late["power_state"] == evening["power_state"] == 1.0
    assert late["dim_level"] == 40.0 and evening["dim_level"] == 100.0
    assert 15.0 < late["power"] < evening["power"] < 75.0
    for s in (noon, late, evening):
        assert 220.0 < s["voltage"] < 240.0
        assert s["current"] == pytest.approx(s["power"] / s["voltage"], rel=1.5)
    forced = sim.sample(T0 + 12 * HOUR, commanded_on=True, dim_level=50.0)
    assert forced["power_state"] == 1.0 and forced["dim_level"] == 50.0


def test_streetlight_faults() -> None:
    sim, ref = StreetlightSim(4, T0), StreetlightSim(4, T0)
    sim.inject("day_burning", T0 + 10 * HOUR, 4 * HOUR)
    sim.inject("lamp_failed", T0 + 20.5 * HOUR, 3 * HOUR, reported=True)
    sim.inject("power_mismatch", T0 + 44.5 * HOUR, 2 * HOUR, factor=1.5)
    sim.inject("cycling", T0 + 68.5 * HOUR, HOUR, period=300.0)
    day = sim.sample(T0 + 12 * HOUR)
    assert day["power_state"] == 1.0 and day["power"] > 50.0
    failed = sim.sample(T0 + 22 * HOUR)
    assert failed["power_state"] == 1.0 and failed["power"] < 1.5 and failed["lamp_fault"] == 1.0
    t = T0 + 45 * HOUR
    assert sim.sample(t)["power"] / ref.sample(t)["power"] == pytest.approx(1.5, rel=1e-9)
    states = {sim.sample(T0 + 68.5 * HOUR + i * 300.0)["power_state"] for i in range(6)}
    assert states == {0.0, 1.0}
    assert [f.kind for f in sim.labels] == [
        "day_burning",
        "lamp_failed",
        "power_mismatch",
        "cycling",
    ]


def _day_total(sim: CounterSim, start: float, hours: range) -> int:
    total = 0
    for h in hours:
        for k in range(12):
            s = sim.sample(start + h * HOUR + (k + 1) * 300.0, 300.0)
            total += int(s["count_in"] + s["count_out"])
    return total


def test_counter_rhythm_and_faults() -> None:
    monday = datetime(2026, 6, 1, tzinfo=UTC).timestamp()  # a Monday
    sim = CounterSim(9, monday)
    rush = _day_total(sim, monday, range(6, 8))  # 07:00-09:00 local
    night = _day_total(sim, monday, range(1, 3))  # 02:00-04:00 local
    assert rush > 10 * max(night, 1)
    s = sim.sample(monday + 7 * HOUR, 300.0)
    assert isinstance(s["count_in"], int) and 0.0 < s["battery"] <= 100.0 and s["rssi"] < -40
    sim.inject("stuck_zero", monday + 6 * HOUR, 2 * HOUR + 1.0)  # the end is exclusive
    sim.inject("direction_failure", monday + 16 * HOUR, 2 * HOUR, direction="out")
    sim.inject("burst", monday + 12 * HOUR, 300.0, factor=10.0, extra=100.0)
    assert _day_total(sim, monday, range(6, 8)) == 0
    d = sim.sample(monday + 17 * HOUR, 300.0)
    assert d["count_in"] == 0 and d["count_out"] > 0
    burst = sim.sample(monday + 12 * HOUR + 1.0, 300.0)
    assert burst["count_in"] + burst["count_out"] > 100
    assert all(math.isfinite(v) for v in burst.values())
    with pytest.raises(ValueError, match="direction"):
        sim.inject("direction_failure", monday, 60.0, direction="sideways")
