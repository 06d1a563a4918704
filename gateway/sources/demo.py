"""In-process emulated devices for the demo and tests: ``demo:<category>?period=1s&seed=1``.

Values come from the physics generators in ``hil_tests/emulators/physics.py`` (the same world the
anomaly models are trained on), with units, ranges and quantity names from the asset's profile
(default: the category's shipped profile). Parameters: ``period`` (sampling period), ``seed``,
``lat``/``lon`` (streetlight), ``busyness`` (counter), and ``fault=KIND@START+DURATION`` (seconds
from now) to inject a labelled fault. It accepts the commands ``set_period``, ``dim``, ``power`` and
``identify`` like a real device.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Self

from gateway.errors import ConfigError
from gateway.profiles import Profile, load_profile
from gateway.readings import Reading
from gateway.sources import SourceContext, SourceSpec, parse_duration

__all__ = ["DEFAULT_PROFILES", "DemoSource", "open"]

DEFAULT_PROFILES = {
    "water-quality": "twinedge-water-node",
    "streetlight": "streetlight-ble",
    "pedestrian-counter": "counter-ble-adv",
}


class DemoSource:
    def __init__(self, spec: SourceSpec, ctx: SourceContext) -> None:
        from hil_tests.emulators import physics

        self.category = spec.target
        if self.category not in DEFAULT_PROFILES:
            raise ConfigError(spec.raw, "source", f"a demo category among {list(DEFAULT_PROFILES)}")
        self.ctx = ctx
        self.profile: Profile = ctx.profile or load_profile(DEFAULT_PROFILES[self.category])
        self.period = parse_duration(spec.param("period") or self.profile.period, file=spec.raw)
        seed = int(spec.param("seed") or abs(hash(ctx.asset)) % 10_000)
        t0 = time.time()
        if self.category == "water-quality":
            self.sim: Any = physics.WaterQualitySim(seed, t0)
        elif self.category == "streetlight":
            lat, lon = float(spec.param("lat") or 52.37), float(spec.param("lon") or 4.90)
            self.sim = physics.StreetlightSim(seed, t0, lat, lon)
        else:
            self.sim = physics.CounterSim(seed, t0, float(spec.param("busyness") or 1.0))
        fault = spec.param("fault")
        if fault:
            kind, _, when = fault.partition("@")
            start, _, dur = when.partition("+")
            self.sim.inject(kind, t0 + float(start or 0), float(dur or 3600))
        self.commanded_on: bool | None = None
        self.dim_level: float | None = None
        self.seq = 0
        self._wake = asyncio.Event()
        ctx.device_info.update(firmware="demo-1.0", emulated=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def __aiter__(self) -> AsyncIterator[Reading]:
        return self._readings()

    async def _readings(self) -> AsyncIterator[Reading]:
        last = time.time()
        while True:
            try:
                async with asyncio.timeout(self.period):
                    await self._wake.wait()  # a command asks for a fresh sample now
            except TimeoutError:
                pass
            self._wake.clear()
            now = time.time()
            values = self._sample(now, now - last)
            last = now
            self.ctx.counters.frames_ok += 1
            for r in self._to_readings(values, now):
                yield r

    def _sample(self, t: float, dt: float) -> dict[str, float]:
        if self.category == "streetlight":
            got: dict[str, float] = self.sim.sample(
                t, commanded_on=self.commanded_on, dim_level=self.dim_level
            )
        elif self.category == "pedestrian-counter":
            got = self.sim.sample(t, dt)
        else:
            got = self.sim.sample(t)
        return got

    def _to_readings(self, values: Mapping[str, float], now: float) -> list[Reading]:
        out = []
        self.seq += 1
        for name, spec in self.profile.quantities.items():
            if name not in values:
                continue
            value = float(values[name])
            quality = spec.quality(value)
            if quality != "good":
                self.ctx.counters.out_of_range += 1
            out.append(
                Reading(
                    self.ctx.asset,
                    name,
                    value,
                    spec.unit,
                    now,
                    now,
                    quality,
                    self.ctx.asset,
                    self.seq,
                )
            )
        return out

    async def command(self, name: str, args: Mapping[str, Any]) -> None:
        if name == "set_period":
            self.period = parse_duration(args.get("period", self.period), key="period")
        elif name == "dim" and self.category == "streetlight":
            self.dim_level = float(args["level"])
            self.commanded_on = self.dim_level > 0
        elif name == "power" and self.category == "streetlight":
            self.commanded_on = bool(args["on"])
        elif name != "identify":
            raise ValueError(f"{self.ctx.asset}: unknown command {name!r}")
        self._wake.set()


def open(spec: SourceSpec, ctx: SourceContext) -> DemoSource:
    return DemoSource(spec, ctx)
