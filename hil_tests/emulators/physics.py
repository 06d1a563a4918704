"""Physics and rhythm generators for the emulated devices, the demo and the anomaly models.

Three simulators, one per asset category, each deterministic for a seed:

- :class:`WaterQualitySim` — a river/canal probe: temperature, pH, conductivity, dissolved
  oxygen, turbidity and ORP with seasonal and diurnal cycles, weather, rain events (turbidity up,
  conductivity down by dilution), dissolved oxygen following the temperature-dependent saturation
  plus daytime photosynthesis and night respiration, and sensor noise.
- :class:`StreetlightSim` — a lamp controller: dusk-to-dawn switching from the computed sunrise and
  sunset, a night dimming schedule, mains voltage with load rhythm and noise, power and current
  following the dim curve of an LED driver.
- :class:`CounterSim` — an IR/radar pedestrian counter: people per interval in and out with the
  weekday/weekend hourly rhythm, weather, occasional crowd events, battery and RSSI.

``sample(t)`` is a pure function of the seed, the injected faults and ``t`` (seconds since the Unix
epoch, UTC): sampling the same time twice gives the same values, and sampling order does not
matter. Noise comes from a counter-based hash of (seed, channel, time), weather and rain from
per-day draws of a seeded generator, so an emulator, a training script and a rehearsal scenario
that use the same seed see the same world.

Faults are injected with ``inject(kind, start, duration, **params)``; each records a
:class:`FaultLabel` (start, end, kind, affected quantities) in ``.labels`` — the ground truth that
training, evaluation and HIL rehearsals share. Pure Python (``math``, ``random``); no I/O.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from gateway.solar import sun_times

__all__ = [
    "COUNTER_FAULTS",
    "COUNTER_QUANTITIES",
    "STREETLIGHT_FAULTS",
    "STREETLIGHT_QUANTITIES",
    "WATER_FAULTS",
    "WATER_QUANTITIES",
    "CounterSim",
    "FaultLabel",
    "StreetlightSim",
    "WaterQualitySim",
    "sun_times",
]

DAY = 86400.0
HOUR = 3600.0
_MASK = (1 << 64) - 1

WATER_QUANTITIES = ("temperature", "ph", "conductivity", "dissolved_oxygen", "turbidity", "orp")
STREETLIGHT_QUANTITIES = ("power_state", "dim_level", "power", "voltage", "current", "lamp_fault")
COUNTER_QUANTITIES = ("count_in", "count_out", "battery", "rssi")

WATER_FAULTS = ("drift", "spike", "stuck", "pollution")
STREETLIGHT_FAULTS = ("day_burning", "lamp_failed", "cycling", "power_mismatch")
COUNTER_FAULTS = ("stuck_zero", "burst", "direction_failure", "clock_shift")


# --------------------------------------------------------------------------- deterministic noise
def _mix(x: int) -> int:
    """splitmix64 finaliser: a well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _key(seed: int, channel: int, t: float) -> int:
    return _mix(_mix(_mix(seed & _MASK) ^ channel) ^ (round(t * 1000.0) & _MASK))


def _uniform(seed: int, channel: int, t: float) -> float:
    """A uniform number in (0, 1) that depends only on (seed, channel, t)."""
    return ((_key(seed, channel, t) >> 11) + 0.5) / float(1 << 53)


def _gauss(seed: int, channel: int, t: float) -> float:
    """A standard normal number that depends only on (seed, channel, t) (Box-Muller)."""
    h = _key(seed, channel, t)
    u1 = ((h >> 11) + 0.5) / float(1 << 53)
    u2 = ((_mix(h) >> 11) + 0.5) / float(1 << 53)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def _poisson(lam: float, seed: int, channel: int, t: float) -> int:
    """A Poisson draw that depends only on (seed, channel, t); normal approximation above 50."""
    if lam <= 0.0:
        return 0
    if lam > 50.0:
        return max(0, round(lam + math.sqrt(lam) * _gauss(seed, channel, t)))
    rng = random.Random(_key(seed, channel, t))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class _Wander:
    """Smooth, zero-mean 'weather' variation: a sum of slow sinusoids with seeded periods."""

    def __init__(self, rng: random.Random, min_days: float, max_days: float, n: int = 5) -> None:
        self._terms = [
            (
                2.0 * math.pi / (rng.uniform(min_days, max_days) * DAY),
                rng.uniform(0.0, 2.0 * math.pi),
                rng.uniform(0.5, 1.0),
            )
            for _ in range(n)
        ]
        self._norm = math.sqrt(sum(a * a for _, _, a in self._terms) / 2.0)

    def __call__(self, t: float) -> float:
        """Value with unit standard deviation."""
        return sum(a * math.sin(w * t + p) for w, p, a in self._terms) / self._norm


# --------------------------------------------------------------------------- fault labels
@dataclass(frozen=True, slots=True)
class FaultLabel:
    """Ground truth of one injected fault: active for ``start <= t < end``."""

    kind: str
    start: float
    end: float
    quantities: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict, compare=False)

    def active(self, t: float) -> bool:
        return self.start <= t < self.end

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "start": self.start,
            "end": self.end,
            "quantities": list(self.quantities),
            "params": dict(self.params),
        }


class _Faulty:
    """Fault bookkeeping shared by the simulators."""

    KINDS: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._faults: list[FaultLabel] = []

    @property
    def labels(self) -> list[FaultLabel]:
        """Every injected fault, in injection order."""
        return list(self._faults)

    def labels_at(self, t: float) -> list[FaultLabel]:
        """The faults active at time ``t``."""
        return [f for f in self._faults if f.active(t)]

    def _add(
        self,
        kind: str,
        start: float,
        duration: float,
        quantities: tuple[str, ...],
        params: dict[str, Any],
    ) -> FaultLabel:
        if kind not in self.KINDS:
            known = ", ".join(self.KINDS)
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {known}")
        if not duration > 0:
            raise ValueError(f"fault {kind!r}: duration must be > 0 s, got {duration!r}")
        label = FaultLabel(kind, float(start), float(start) + float(duration), quantities, params)
        self._faults.append(label)
        return label


# --------------------------------------------------------------------------- water quality
#: default drift rates per hour of a fouling probe (biofilm: DO and conductivity read low,
#: the optical turbidity window clouds up, the pH reference junction clogs)
_DRIFT_PER_HOUR = {
    "temperature": 0.02,
    "ph": -0.012,
    "conductivity": -6.0,
    "dissolved_oxygen": -0.06,
    "turbidity": 0.6,
    "orp": -2.5,
}
#: default spike magnitudes (a bubble on the optics, a cable glitch, a passing boat's wash)
_SPIKE = {
    "temperature": 4.0,
    "ph": 1.2,
    "conductivity": 500.0,
    "dissolved_oxygen": -4.0,
    "turbidity": 120.0,
    "orp": -180.0,
}
#: a sewage overflow at severity 1: oxygen-consuming, turbid, saline, reducing, slightly acid
_POLLUTION = {
    "ph": -0.45,
    "conductivity": 380.0,
    "dissolved_oxygen": -3.5,
    "turbidity": 35.0,
    "orp": -140.0,
}
_WATER_LIMITS = {
    "temperature": (-2.0, 45.0),
    "ph": (0.0, 14.0),
    "conductivity": (0.0, 5000.0),
    "dissolved_oxygen": (0.0, 25.0),
    "turbidity": (0.0, 4000.0),
    "orp": (-600.0, 800.0),
}


def _do_saturation(temp_c: float) -> float:
    """Dissolved-oxygen saturation of fresh water at sea level in mg/L (Benson-Krause fit)."""
    t = min(max(temp_c, 0.0), 40.0)
    return 14.652 - 0.41022 * t + 0.007991 * t * t - 0.000077774 * t * t * t


def _solar_hour(t: float, lon: float) -> float:
    return ((t / HOUR) + lon / 15.0) % 24.0


def _day_of_year(t: float) -> float:
    return (t / DAY) % 365.2425  # 1970-01-01 is day 0; within a day of the calendar until 2100


class WaterQualitySim(_Faulty):
    """A multiparameter probe in an urban river or canal.

    ``sample(t)`` returns temperature (°C), ph, conductivity (µS/cm, at 25 °C), dissolved_oxygen
    (mg/L), turbidity (NTU) and orp (mV). Fault kinds: ``drift`` (fouling; ``quantity`` or
    ``quantities``, ``rate`` per hour), ``spike`` (``quantity``, ``magnitude``), ``stuck`` (the
    value at the start is held; ``quantity`` or ``quantities``) and ``pollution`` (several
    quantities move together with a rise and decay; ``severity``).
    """

    KINDS = WATER_FAULTS

    def __init__(self, seed: int, t0: float, *, lon: float = 4.90) -> None:
        super().__init__()
        self.seed, self.t0, self.lon = int(seed), float(t0), lon
        rng = random.Random(self.seed)
        self._temp_wander = _Wander(rng, 2.0, 12.0)
        self._cond_wander = _Wander(rng, 3.0, 20.0)
        self._cloud = _Wander(rng, 0.7, 4.0)
        self.base_conductivity = rng.uniform(420.0, 700.0)
        self.base_ph = rng.uniform(7.3, 7.9)
        self.base_turbidity = rng.uniform(2.5, 7.0)
        self.rain_probability = rng.uniform(0.25, 0.4)
        self._rain_cache: dict[int, list[tuple[float, float, float]]] = {}

    # ---- weather
    def _rain_events(self, day: int) -> list[tuple[float, float, float]]:
        """(start, intensity, response time) of the rain showers of one UTC day."""
        events = self._rain_cache.get(day)
        if events is None:
            rng = random.Random(_mix(self.seed ^ 0x5241494E) ^ day)
            events = []
            while rng.random() < self.rain_probability and len(events) < 3:
                start = day * DAY + rng.uniform(0.0, DAY)
                events.append((start, rng.lognormvariate(-0.4, 0.7), rng.uniform(1.5, 5.0) * HOUR))
            self._rain_cache[day] = events
        return events

    def runoff(self, t: float) -> float:
        """Storm-water runoff at ``t`` (0 = dry weather; ~1 after a heavy shower)."""
        total, day = 0.0, int(t // DAY)
        for d in range(day - 3, day + 1):
            for start, intensity, tau in self._rain_events(d):
                if t >= start:
                    x = (t - start) / tau
                    total += intensity * x * math.exp(1.0 - x)
        return total

    # ---- physics
    def clean(self, t: float) -> dict[str, float]:
        """The true state of the water at ``t``, without sensor noise or faults."""
        doy, hour = _day_of_year(t), _solar_hour(t, self.lon)
        season = math.sin(2.0 * math.pi * (doy - 115.0) / 365.2425)  # peak in late July
        rain = self.runoff(t)
        temp = (
            12.5
            + 8.5 * season
            + (0.6 + 0.5 * max(season, 0.0)) * math.sin(2.0 * math.pi * (hour - 10.0) / 24.0)
            + 1.3 * self._temp_wander(t)
            - 0.6 * min(rain, 2.0)
        )
        # photosynthesis lags the sun by ~2 h; respiration draws oxygen down through the night
        lagged = max(0.0, math.sin(math.pi * (hour - 8.0 + 1.5 * season) / (12.0 + 3.0 * season)))
        lagged *= 0.8 + 0.2 * self._cloud(t)  # cloud cover dims it
        bloom = 0.6 + 0.4 * max(season, 0.0)
        do = _do_saturation(temp) * (
            0.93 + 0.16 * bloom * lagged - 0.06 * (1.0 - lagged) - 0.05 * min(rain, 2.0)
        )
        ph = self.base_ph + 0.28 * bloom * lagged - 0.08 * min(rain, 2.0)
        dilution = 1.0 / (1.0 + 0.45 * rain)
        cond = (
            self.base_conductivity * (1.0 + 0.05 * season + 0.04 * self._cond_wander(t)) * dilution
        )
        turb = self.base_turbidity * (1.0 + 0.15 * self._cond_wander(t + 7 * DAY)) + 45.0 * rain
        orp = 230.0 + 18.0 * (do - 8.0) - 25.0 * (ph - 7.5)
        return {
            "temperature": temp,
            "ph": ph,
            "conductivity": cond,
            "dissolved_oxygen": do,
            "turbidity": turb,
            "orp": orp,
        }

    def _measure(self, t: float) -> dict[str, float]:
        v = self.clean(t)
        s = self.seed
        v["temperature"] += 0.03 * _gauss(s, 1, t)
        v["ph"] += 0.012 * _gauss(s, 2, t)
        v["conductivity"] *= 1.0 + 0.004 * _gauss(s, 3, t)
        v["dissolved_oxygen"] += 0.06 * _gauss(s, 4, t)
        v["turbidity"] = v["turbidity"] * math.exp(0.06 * _gauss(s, 5, t)) + 0.1 * _gauss(s, 6, t)
        v["orp"] += 3.0 * _gauss(s, 7, t)
        return v

    def _apply(self, t: float, upto: int) -> dict[str, float]:
        v = self._measure(t)
        for i, f in enumerate(self._faults[:upto]):
            if not f.active(t):
                continue
            if f.kind == "stuck":
                held = self._apply(f.start, i)
                for q in f.quantities:
                    v[q] = held[q]
            elif f.kind == "drift":
                hours = (t - f.start) / HOUR
                for q in f.quantities:
                    v[q] += f.params["rate"].get(q, _DRIFT_PER_HOUR[q]) * hours
            elif f.kind == "spike":
                for q in f.quantities:
                    v[q] += f.params["magnitude"].get(q, _SPIKE[q])
            else:  # pollution
                ramp = min(1800.0, (f.end - f.start) / 4.0)
                env = min(1.0, (t - f.start) / ramp, (f.end - t) / ramp) * f.params["severity"]
                for q in f.quantities:
                    v[q] += _POLLUTION[q] * env
        return v

    def sample(self, t: float) -> dict[str, float]:
        """What the probe reports at ``t``: physics, noise and the active faults."""
        v = self._apply(t, len(self._faults))
        return {q: min(max(v[q], lo), hi) for q, (lo, hi) in _WATER_LIMITS.items()}

    def inject(self, kind: str, start: float, duration: float, **params: Any) -> FaultLabel:
        """Inject a fault; returns its label (also kept in ``.labels``)."""
        if kind == "pollution":
            params.setdefault("severity", 1.0)
            return self._add(kind, start, duration, tuple(_POLLUTION), params)
        quantities = _quantities(params, WATER_QUANTITIES, default="dissolved_oxygen")
        if kind == "drift":
            rate = params.pop("rate", None)
            params["rate"] = _per_quantity(rate, quantities)
        elif kind == "spike":
            magnitude = params.pop("magnitude", None)
            params["magnitude"] = _per_quantity(magnitude, quantities)
        return self._add(kind, start, duration, quantities, params)


def _quantities(params: dict[str, Any], known: tuple[str, ...], default: str) -> tuple[str, ...]:
    names = params.pop("quantities", None) or (params.pop("quantity", None) or default,)
    names = (names,) if isinstance(names, str) else tuple(names)
    for q in names:
        if q not in known:
            raise ValueError(f"unknown quantity {q!r}; expected one of {', '.join(known)}")
    params["quantities"] = list(names)
    return names


def _per_quantity(value: float | dict[str, float] | None, qs: tuple[str, ...]) -> dict[str, float]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {q: float(value[q]) for q in qs if q in value}
    return {q: float(value) for q in qs}


# --------------------------------------------------------------------------- streetlight
class StreetlightSim(_Faulty):
    """An LED streetlight with a dusk-to-dawn controller and a night dimming schedule.

    ``sample(t)`` returns power_state (0/1), dim_level (%), power (W), voltage (V), current (A)
    and lamp_fault (0/1). ``commanded_on``/``dim_level`` override the schedule, as a downlink
    command would. Fault kinds: ``day_burning`` (relay stuck on in daylight), ``lamp_failed``
    (no light while commanded on; ``reported`` sets the controller's own fault flag),
    ``cycling`` (the lamp flickers off and on every ``period`` seconds) and ``power_mismatch``
    (draw is ``factor`` times what the dim level implies: a failing driver).
    """

    KINDS = STREETLIGHT_FAULTS
    #: the lamp switches on this long after sunset and off this long before sunrise (photocell)
    TWILIGHT = 600.0

    def __init__(
        self,
        seed: int,
        t0: float,
        lat: float = 52.37,
        lon: float = 4.90,
        *,
        rated_power: float = 60.0,
        tz_hours: float = 1.0,
    ) -> None:
        super().__init__()
        self.seed, self.t0, self.lat, self.lon = int(seed), float(t0), lat, lon
        self.rated_power, self.tz_hours = rated_power, tz_hours
        rng = random.Random(self.seed)
        self._mains = _Wander(rng, 0.5, 6.0)
        self.efficiency = rng.uniform(0.96, 1.04)  # lamp-to-lamp spread of the driver

    def is_dark(self, t: float) -> bool:
        """Whether the dusk-to-dawn controller wants the lamp on at ``t``."""
        for d in (-1.0, 0.0, 1.0):
            rise, sset = sun_times(t + d * DAY, self.lat, self.lon)
            if rise - self.TWILIGHT <= t < sset + self.TWILIGHT:
                return False
        return True

    def scheduled_dim(self, t: float) -> float:
        """The dimming schedule in local time: 100 % until 23:00, 40 % to 05:30, then 100 %."""
        local = ((t / HOUR) + self.tz_hours) % 24.0
        return 40.0 if local >= 23.0 or local < 5.5 else 100.0

    def expected_power(self, on: bool, dim: float) -> float:
        """Draw of a healthy lamp (W): driver standby plus a slightly convex dim curve."""
        if not on:
            return 0.7
        d = dim / 100.0
        return 0.7 + self.rated_power * self.efficiency * (0.08 + 0.92 * math.pow(d, 1.15))

    def sample(
        self, t: float, *, commanded_on: bool | None = None, dim_level: float | None = None
    ) -> dict[str, float]:
        """What the controller reports at ``t``."""
        on = self.is_dark(t) if commanded_on is None else commanded_on
        dim = self.scheduled_dim(t) if dim_level is None else min(max(dim_level, 0.0), 100.0)
        lit, draw_factor, lamp_fault = on, 1.0, 0.0
        for f in self.labels_at(t):
            if f.kind == "day_burning" and not self.is_dark(t):
                on, lit, dim = True, True, 100.0
            elif f.kind == "lamp_failed" and on:
                lit = False
                lamp_fault = 1.0 if f.params["reported"] else 0.0
            elif f.kind == "cycling" and on:
                phase = int((t - f.start) // f.params["period"])
                on = lit = phase % 2 == 0
            elif f.kind == "power_mismatch" and on:
                draw_factor = f.params["factor"]
        s = self.seed
        power = self.expected_power(lit, dim if on else 0.0) * draw_factor
        power *= 1.0 + 0.006 * _gauss(s, 11, t)
        local = ((t / HOUR) + self.tz_hours) % 24.0
        evening_load = math.exp(-(((local - 19.0) / 2.5) ** 2))
        voltage = 231.0 - 3.5 * evening_load + 1.8 * self._mains(t) + 0.6 * _gauss(s, 12, t)
        pf = 0.96 - 0.08 * (1.0 - dim / 100.0) if lit else 0.45
        current = power / (voltage * pf)
        return {
            "power_state": 1.0 if on else 0.0,
            "dim_level": dim if on else 0.0,
            "power": max(power, 0.0),
            "voltage": voltage,
            "current": max(current, 0.0),
            "lamp_fault": lamp_fault,
        }

    def inject(self, kind: str, start: float, duration: float, **params: Any) -> FaultLabel:
        """Inject a fault; returns its label (also kept in ``.labels``)."""
        if kind == "day_burning":
            qs: tuple[str, ...] = ("power_state", "power", "current")
        elif kind == "lamp_failed":
            params.setdefault("reported", False)
            qs = ("power", "current", "lamp_fault") if params["reported"] else ("power", "current")
        elif kind == "cycling":
            params.setdefault("period", 300.0)
            qs = ("power_state", "power", "current")
        else:
            params.setdefault("factor", 1.6)
            qs = ("power", "current")
        return self._add(kind, start, duration, qs, params)


# --------------------------------------------------------------------------- pedestrian counter
def _bump(x: float, centre: float, width: float) -> float:
    return math.exp(-0.5 * ((x - centre) / width) ** 2)


class CounterSim(_Faulty):
    """A bidirectional pedestrian counter on a city street.

    ``sample(t, dt)`` returns count_in and count_out (integers: people counted in the ``dt``
    seconds ending at ``t``), battery (%) and rssi (dB). The flow has a weekday commute/lunch
    rhythm and a weekend midday rhythm, less traffic in the rain and in winter, and occasional
    crowd events (a concert: people arrive before and leave after; genuine, not a fault).
    Fault kinds: ``stuck_zero`` (nothing counted), ``burst`` (implausible counts, ``factor``
    times the flow plus ``extra``), ``direction_failure`` (every passer counted as ``direction``)
    and ``clock_shift`` (the device clock is ``hours`` off, so counts go against the rhythm).
    """

    KINDS = COUNTER_FAULTS
    PEAK_PER_HOUR = 900.0

    def __init__(
        self, seed: int, t0: float, busyness: float = 1.0, *, tz_hours: float = 1.0
    ) -> None:
        super().__init__()
        self.seed, self.t0, self.busyness, self.tz_hours = int(seed), float(t0), busyness, tz_hours
        rng = random.Random(self.seed)
        self._radio = _Wander(rng, 0.3, 3.0)
        self.drain_per_day = rng.uniform(0.3, 0.6)
        self._day_cache: dict[int, tuple[float, float, float, float]] = {}

    def _day(self, day: int) -> tuple[float, float, float, float]:
        """(rain start hour, rain hours, event start hour or -1, event size) of a local day."""
        got = self._day_cache.get(day)
        if got is None:
            rng = random.Random(_mix(self.seed ^ 0x434F554E) ^ day)
            rain = rng.random() < 0.3
            event = rng.random() < 0.06
            got = (
                rng.uniform(0.0, 24.0) if rain else -1.0,
                rng.uniform(1.0, 6.0),
                rng.uniform(18.0, 21.0) if event else -1.0,
                rng.uniform(1.0, 2.5),
            )
            self._day_cache[day] = got
        return got

    def rate(self, t: float) -> tuple[float, float]:
        """Expected people per hour (in, out) at ``t``."""
        local = t + self.tz_hours * HOUR
        day = int(local // DAY)
        hour = (local % DAY) / HOUR
        weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
        if weekday < 5:
            shape = (
                0.04
                + 0.9 * _bump(hour, 8.3, 0.9)
                + 0.55 * _bump(hour, 12.6, 1.2)
                + 1.0 * _bump(hour, 17.6, 1.3)
                + 0.25 * _bump(hour, 20.5, 1.8)
            )
            share_in = 0.5 + 0.15 * _bump(hour, 8.3, 1.5) - 0.15 * _bump(hour, 17.6, 1.5)
        else:
            shape = 0.04 + 0.85 * _bump(hour, 14.0, 3.2) + 0.25 * _bump(hour, 21.0, 1.8)
            share_in = 0.5 + 0.08 * math.tanh((13.0 - hour) / 3.0)
        season = math.sin(2.0 * math.pi * (_day_of_year(t) - 115.0) / 365.2425)
        rain_start, rain_hours, event_start, event_size = self._day(day)
        wet = 0.55 if rain_start >= 0 and rain_start <= hour < rain_start + rain_hours else 1.0
        base = self.PEAK_PER_HOUR * self.busyness * shape * wet * (0.85 + 0.15 * season)
        rate_in, rate_out = base * share_in, base * (1.0 - share_in)
        if event_start >= 0:  # arrivals in the hour before, departures in the 40 min after 2.5 h
            crowd = self.PEAK_PER_HOUR * self.busyness * event_size
            rate_in += crowd * _bump(hour, event_start - 0.5, 0.35)
            rate_out += crowd * 1.3 * _bump(hour, event_start + 2.7, 0.25)
        return rate_in, rate_out

    def sample(self, t: float, dt: float) -> dict[str, float]:
        """Counts in the ``dt`` seconds ending at ``t``, with battery and RSSI."""
        clock = t
        for f in self.labels_at(t):
            if f.kind == "clock_shift":
                clock = t + float(f.params["hours"]) * HOUR
        rate_in, rate_out = self.rate(clock - dt / 2.0)
        s = self.seed
        n_in = _poisson(rate_in * dt / HOUR, s, 21, t)
        n_out = _poisson(rate_out * dt / HOUR, s, 22, t)
        for f in self.labels_at(t):
            if f.kind == "stuck_zero":
                n_in = n_out = 0
            elif f.kind == "burst":
                extra = f.params["extra"]
                n_in = round(n_in * f.params["factor"] + extra * _uniform(s, 23, t))
                n_out = round(n_out * f.params["factor"] + extra * _uniform(s, 24, t))
            elif f.kind == "direction_failure":
                total = n_in + n_out
                n_in, n_out = (total, 0) if f.params["direction"] == "in" else (0, total)
        days = max(0.0, (t - self.t0) / DAY)
        battery = max(0.0, 100.0 - self.drain_per_day * days + 0.2 * _gauss(s, 25, t))
        rssi = -74.0 + 4.0 * self._radio(t) + 2.0 * _gauss(s, 26, t)
        return {
            "count_in": n_in,
            "count_out": n_out,
            "battery": round(min(battery, 100.0), 1),
            "rssi": float(round(rssi)),
        }

    def inject(self, kind: str, start: float, duration: float, **params: Any) -> FaultLabel:
        """Inject a fault; returns its label (also kept in ``.labels``)."""
        if kind == "burst":
            params.setdefault("factor", 6.0)
            params.setdefault("extra", 60.0)
        elif kind == "direction_failure":
            params.setdefault("direction", "in")
            if params["direction"] not in ("in", "out"):
                raise ValueError(f"direction must be 'in' or 'out', got {params['direction']!r}")
        elif kind == "clock_shift":
            params.setdefault("hours", 7.0)
        return self._add(kind, start, duration, ("count_in", "count_out"), params)
