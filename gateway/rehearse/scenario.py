"""Scenario files (TOML): assets driven by the physics emulators and scripted events.

A scenario names its assets (id, category, seed, location), a start time, a duration and a
sampling period, and a list of events. Each event is either a scripted situation mapped onto the
emulators' faults — ``heatwave`` (water temperature up, dissolved oxygen down: a ``drift`` of
both), ``sewage_overflow`` (``pollution``), ``festival_crowd`` (a counter ``burst``),
``circuit_failure`` (``lamp_failed`` on every listed light) — or any raw fault kind of the
asset's simulator (``spike``, ``stuck``, ``cycling``...), or a ``broker_outage``: a window in which
nothing is published. Every fault event becomes a label (ground truth) of the assets it touches.

:func:`load_scenario` validates the file once (errors name the file and the key);
:func:`generate` samples the simulators deterministically, far faster than real time.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.errors import ConfigError
from gateway.sources import parse_duration

__all__ = [
    "CATEGORY_QUANTITIES", "Event", "Scenario", "ScenarioAsset", "Series", "generate",
    "load_scenario",
]  # fmt: skip

CATEGORY_QUANTITIES: dict[str, tuple[str, ...]] = {
    "water-quality": ("temperature", "ph", "conductivity", "dissolved_oxygen", "turbidity", "orp"),
    "streetlight": ("power_state", "dim_level", "power", "voltage", "current", "lamp_fault"),
    "pedestrian-counter": ("count_in", "count_out", "battery", "rssi"),
}
#: scripted situation -> (category, physics fault kind, default parameters)
SCRIPTED: dict[str, tuple[str, str, dict[str, Any]]] = {
    "heatwave": ("water-quality", "drift", {
        "quantities": ["temperature", "dissolved_oxygen"],
        "rate": {"temperature": 0.45, "dissolved_oxygen": -0.35},
    }),
    "sewage_overflow": ("water-quality", "pollution", {"severity": 1.0}),
    "festival_crowd": ("pedestrian-counter", "burst", {"factor": 4.0, "extra": 2.0}),
    "circuit_failure": ("streetlight", "lamp_failed", {"reported": False}),
}  # fmt: skip
OUTAGE = "broker_outage"
#: the parameters each physics fault kind takes (see hil_tests/emulators/physics.py)
FAULT_PARAMS: dict[str, frozenset[str]] = {
    "drift": frozenset({"rate", "quantity", "quantities"}),
    "spike": frozenset({"magnitude", "quantity", "quantities"}),
    "stuck": frozenset({"quantity", "quantities"}),
    "pollution": frozenset({"severity"}),
    "day_burning": frozenset(), "lamp_failed": frozenset({"reported"}),
    "cycling": frozenset({"period"}), "power_mismatch": frozenset({"factor"}),
    "stuck_zero": frozenset(), "burst": frozenset({"factor", "extra"}),
    "direction_failure": frozenset({"direction"}), "clock_shift": frozenset({"hours"}),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ScenarioAsset:
    id: str
    category: str
    seed: int
    location: tuple[float, float]  # lon, lat
    busyness: float = 1.0
    period: float | None = None


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # the scenario's name for it
    fault: str  # the physics fault kind ("" for an outage)
    start: float  # epoch seconds
    end: float
    assets: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scenario:
    file: Path
    name: str
    description: str
    start: float
    duration: float
    period: float
    assets: tuple[ScenarioAsset, ...]
    events: tuple[Event, ...]

    @property
    def outages(self) -> list[tuple[float, float]]:
        return [(e.start, e.end) for e in self.events if e.kind == OUTAGE]


@dataclass(slots=True)
class Series:
    """One asset's readings: sample times and one column per quantity (with its unit)."""

    asset: str
    category: str
    times: npt.NDArray[np.float64]
    values: dict[str, npt.NDArray[np.float64]]
    units: dict[str, str]
    labels: list[tuple[float, float, str]] = field(default_factory=list)  # start, end, kind
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # derived

    def truth(self, times: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """Whether a labelled fault is active at each of ``times``."""
        out = np.zeros(len(times), dtype=bool)
        for start, end, _ in self.labels:
            out |= (times >= start) & (times < end)
        return out


class _T:
    """A TOML table under validation: file and dotted key for every error."""

    def __init__(self, file: str, key: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigError(file, key or "(top level)", "a table", data)
        self.file, self.key, self.data, self.used = file, key, data, set[str]()

    def path(self, k: str) -> str:
        return f"{self.key}.{k}" if self.key else k

    def get(self, k: str, default: Any = None) -> Any:
        self.used.add(k)
        return self.data.get(k, default)

    def fail(self, k: str, expected: str, got: Any = None) -> ConfigError:
        return ConfigError(self.file, self.path(k), expected, got)

    def string(self, k: str, default: str | None = None) -> str:
        v = self.get(k, default)
        if not isinstance(v, str) or not v:
            raise self.fail(k, "a non-empty string", v)
        return v

    def number(self, k: str, default: float, low: float = 0.0) -> float:
        v = self.get(k, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not v > low:
            raise self.fail(k, f"a number > {low:g}", v)
        return float(v)

    def duration(self, k: str, default: str | None = None) -> float:
        v = self.get(k, default)
        if v is None:
            raise self.fail(k, "a duration such as '30s', '6h' or '2d'")
        return parse_duration(v, file=self.file, key=self.path(k))

    def done(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            raise self.fail(extra[0], "a known key (see docs/rehearsal.md)")


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; raise :class:`ConfigError` naming file and key."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(file), "", "an existing scenario file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(file), "", f"valid TOML ({e})") from None
    root = _T(str(file), "", data)
    head = _T(str(file), "scenario", root.get("scenario", {}))
    name = head.string("name")
    description = str(head.get("description", ""))
    start = _start(head)
    duration = head.duration("duration")
    period = head.duration("period", "1s")
    head.done()
    assets = _assets(root)
    events = _events(root, {a.id: a for a in assets}, start, duration)
    root.done()
    return Scenario(file, name, description, start, duration, period, assets, events)


def _start(t: _T) -> float:
    v = t.get("start")
    if isinstance(v, datetime) and v.tzinfo is not None:
        return v.timestamp()
    raise t.fail("start", "an offset date-time such as 2026-07-21T00:00:00Z", v)


def _assets(root: _T) -> tuple[ScenarioAsset, ...]:
    items = root.get("assets")
    if not isinstance(items, list) or not items:
        raise root.fail("assets", "at least one [[assets]] table")
    out: list[ScenarioAsset] = []
    for i, item in enumerate(items):
        t = _T(root.file, f"assets[{i}]", item)
        aid = t.string("id")
        if any(a.id == aid for a in out):
            raise t.fail("id", "an id not used by another asset", aid)
        category = t.string("category")
        if category not in CATEGORY_QUANTITIES:
            raise t.fail("category", f"one of {list(CATEGORY_QUANTITIES)}", category)
        seed = t.get("seed")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise t.fail("seed", "an integer >= 0", seed)
        loc = t.get("location", [4.90, 52.37])
        if not (isinstance(loc, list) and len(loc) == 2
                and all(isinstance(c, int | float) and math.isfinite(c) for c in loc)
                and -180 <= loc[0] <= 180 and -90 <= loc[1] <= 90):  # fmt: skip
            raise t.fail("location", "[longitude, latitude] in degrees", loc)
        busyness = t.number("busyness", 1.0)
        period = t.duration("period") if "period" in t.data else None
        t.done()
        out.append(ScenarioAsset(aid, category, seed, (float(loc[0]), float(loc[1])),
                                 busyness, period))  # fmt: skip
    return tuple(out)


def _events(
    root: _T, assets: dict[str, ScenarioAsset], start: float, duration: float
) -> tuple[Event, ...]:
    items = root.get("events", [])
    if not isinstance(items, list):
        raise root.fail("events", "a list of [[events]] tables", items)
    return tuple(_event(_T(root.file, f"events[{i}]", item), assets, start, duration)
                 for i, item in enumerate(items))  # fmt: skip


def _event(t: _T, assets: dict[str, ScenarioAsset], t0: float, duration: float) -> Event:
    kind = t.string("kind")
    begin = 0.0 if t.data.get("at") in (0, "0s") and t.get("at") is not None else t.duration("at")
    length = t.duration("duration")
    if begin + length > duration:
        raise t.fail("duration", f"an event that ends within the scenario ({duration:g} s)",
                     t.data.get("duration"))  # fmt: skip
    params = t.get("params", {})
    if not isinstance(params, dict):
        raise t.fail("params", "a table of fault parameters", params)
    if kind == OUTAGE:
        t.done()
        return Event(kind, "", t0 + begin, t0 + begin + length, ())
    names = t.get("assets")
    if not isinstance(names, list) or not names or not all(n in assets for n in names):
        raise t.fail("assets", f"a list of scenario asset ids among {sorted(assets)}", names)
    category, fault, defaults = _mapping(t, kind, {assets[n].category for n in names})
    t.done()
    merged = {**defaults, **params}
    _check_params(t, category, fault, merged, t0 + begin, length)
    return Event(kind, fault, t0 + begin, t0 + begin + length, tuple(names), merged)


def _mapping(t: _T, kind: str, categories: set[str]) -> tuple[str, str, dict[str, Any]]:
    if len(categories) != 1:
        raise t.fail("assets", "assets of one category", sorted(categories))
    (category,) = categories
    if kind in SCRIPTED:
        want, fault, defaults = SCRIPTED[kind]
        if want != category:
            raise t.fail("assets", f"{want} assets for a {kind}", category)
        return category, fault, dict(defaults)
    from hil_tests.emulators import physics

    kinds = {"water-quality": physics.WATER_FAULTS, "streetlight": physics.STREETLIGHT_FAULTS,
             "pedestrian-counter": physics.COUNTER_FAULTS}[category]  # fmt: skip
    if kind not in kinds:
        known = [*SCRIPTED, OUTAGE, *kinds]
        raise t.fail("kind", f"one of {known} for {category} assets", kind)
    return category, kind, {}


def _check_params(t: _T, category: str, fault: str, params: dict[str, Any], start: float,
                  length: float) -> None:  # fmt: skip
    """Inject into a throw-away simulator so a bad parameter fails here, not mid-run."""
    unknown = sorted(set(params) - FAULT_PARAMS[fault])
    if unknown:
        known = ", ".join(sorted(FAULT_PARAMS[fault])) or "none"
        raise t.fail(f"params.{unknown[0]}", f"a parameter of a {fault} fault ({known})")
    try:
        make_sim(category, 0, start, (4.9, 52.37), 1.0).inject(fault, start, length,
                                                               **dict(params))  # fmt: skip
    except (ValueError, TypeError, KeyError) as e:
        raise t.fail("params", f"parameters of a {fault} fault ({e})", params) from None


def generate(scenario: Scenario, periods: dict[str, float] | None = None) -> list[Series]:
    """Sample every asset's simulator over the scenario, at its period (``periods`` overrides).

    Deterministic: the same scenario and periods give the same values, bit for bit. The series
    come from the emulators' vectorised sampler, which gives exactly what ``sample(t)`` gives.
    """
    from gateway.profiles import load_profile
    from gateway.sources.demo import DEFAULT_PROFILES
    from hil_tests.emulators.sampling import sample_series

    out: list[Series] = []
    for a in scenario.assets:
        period = (periods or {}).get(a.id) or a.period or scenario.period
        sim = make_sim(a.category, a.seed, scenario.start, a.location, a.busyness)
        for e in scenario.events:
            if a.id in e.assets:
                sim.inject(e.fault, e.start, e.end - e.start, **dict(e.params))
        n = int(scenario.duration / period)
        times = scenario.start + period * np.arange(1, n + 1, dtype=np.float64)
        quantities = CATEGORY_QUANTITIES[a.category]
        counter = a.category == "pedestrian-counter"
        cols = sample_series(sim, times, period if counter else None)  # = sim.sample(t) per t
        profile = load_profile(DEFAULT_PROFILES[a.category])
        units = {q: profile.quantities[q].unit for q in quantities if q in profile.quantities}
        labels = [(f.start, f.end, f.kind) for f in sim.labels]
        values = {q: cols[q] for q in quantities if q in units}
        out.append(Series(a.id, a.category, times, values, units, labels))
    return out


def make_sim(category: str, seed: int, t0: float, loc: tuple[float, float], busy: float) -> Any:
    from hil_tests.emulators import physics

    if category == "water-quality":
        return physics.WaterQualitySim(seed, t0, lon=loc[0])
    if category == "streetlight":
        return physics.StreetlightSim(seed, t0, loc[1], loc[0])
    return physics.CounterSim(seed, t0, busy)
