"""Device sources: one transport + driver per module, chosen by a spec string.

A spec is ``scheme:target?key=value&...``, e.g. ``serial:/dev/ttyUSB0?baud=115200``,
``modbus:/dev/ttyUSB1?unit=1``, ``ble:AA:BB:CC:DD:EE:FF``, ``ble-adv:counter-0007`` or
``demo:water-quality?period=1s``. :func:`open_source` looks the scheme up in :data:`SCHEMES` and
imports the driver module lazily, so a gateway without BLE never imports bleak.

A Source is an async context manager that is also an async iterator of Readings. Entering it opens
the transport (raising :class:`~gateway.errors.SourceError` if it cannot); iterating yields
readings until the device goes away, which raises ``SourceError``. Bad frames never end the
iteration: they are counted in ``counters`` and logged with the device id. The supervisor
(:mod:`gateway.supervise`) reopens a failed source with backoff and jitter.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable
from urllib.parse import parse_qsl

from gateway.errors import ConfigError
from gateway.profiles import Profile
from gateway.readings import Reading

__all__ = [
    "SCHEMES",
    "Commandable",
    "DeviceCounters",
    "Source",
    "SourceContext",
    "SourceSpec",
    "open_source",
    "parse_duration",
    "parse_spec",
]

#: scheme -> module that defines ``open(spec, ctx) -> Source``. Imported on first use.
SCHEMES: dict[str, str] = {
    "demo": "gateway.sources.demo",
    "serial": "gateway.sources.serial",
    "modbus": "gateway.sources.modbus",
    "ble": "gateway.sources.ble_gatt",
    "ble-adv": "gateway.sources.ble_adv",
}


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A parsed spec string."""

    scheme: str
    target: str
    params: Mapping[str, str]
    raw: str

    def param(self, key: str, default: str | None = None) -> str | None:
        return self.params.get(key, default)


@dataclass(slots=True)
class DeviceCounters:
    """Per-device counters; they live across reconnects and appear in the twin state."""

    frames_ok: int = 0
    frames_bad: int = 0
    gaps: int = 0  # readings missing by sequence number
    duplicates: int = 0
    reconnects: int = 0
    out_of_range: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "frames_ok": self.frames_ok,
            "frames_bad": self.frames_bad,
            "gaps": self.gaps,
            "duplicates": self.duplicates,
            "reconnects": self.reconnects,
            "out_of_range": self.out_of_range,
        }


@dataclass(slots=True)
class SourceContext:
    """What a driver is given besides its spec: the asset it feeds, its profile, its counters,
    and a place to report device facts (firmware version, rssi, battery) for the twin."""

    asset: str
    profile: Profile | None
    counters: DeviceCounters = field(default_factory=DeviceCounters)
    device_info: dict[str, Any] = field(default_factory=dict)
    #: extra objects a test or the demo injects (e.g. ``ble_backend`` for bleak); never from config
    options: dict[str, Any] = field(default_factory=dict)
    #: set by a source that acknowledges to its device: the gateway calls it with
    #: ``(device, seq)`` for every (device, seq) whose readings it committed to the outbox, so
    #: the device frees its buffer only for readings that can no longer be lost
    on_commit: Callable[[str, int], None] | None = None
    #: set by the gateway: ``committed(device, boot, seq)`` tells whether the store already
    #: committed that frame (readings carrying ``boot``; ``boot`` None: under any boot it
    #: remembers). A device resends what it holds after a gateway crash; a frame committed in
    #: the instant before the crash, but not yet acknowledged, must be acknowledged again (and
    #: counted in ``duplicates``), not stored again
    committed: Callable[[str, int | None, int], bool] | None = None


@runtime_checkable
class Source(Protocol):
    """An open device: ``async with open_source(...) as src: async for reading in src: ...``."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def __aiter__(self) -> AsyncIterator[Reading]: ...


@runtime_checkable
class Commandable(Protocol):
    """A source that accepts commands from the downlink (dim level, period, identify, reboot)."""

    async def command(self, name: str, args: Mapping[str, Any]) -> None: ...


def parse_spec(raw: str, *, file: str = "<spec>", key: str = "source") -> SourceSpec:
    """Split ``scheme:target?query`` and check the scheme is known."""
    scheme, sep, rest = raw.partition(":")
    if not sep or not scheme or not rest:
        raise ConfigError(file, key, "a spec such as 'serial:/dev/ttyUSB0?baud=115200'", raw)
    if scheme not in SCHEMES:
        raise ConfigError(file, key, f"a scheme among {sorted(SCHEMES)}", scheme)
    target, _, query = rest.partition("?")
    try:
        params = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise ConfigError(file, key, "a query of key=value pairs joined by '&'", query) from None
    return SourceSpec(scheme, target, params, raw)


def open_source(spec: SourceSpec | str, ctx: SourceContext) -> Source:
    """Create (not yet enter) the Source for ``spec``; the driver module is imported lazily."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    module = importlib.import_module(SCHEMES[spec.scheme])
    opener: Callable[[SourceSpec, SourceContext], Source] = module.open
    return opener(spec, ctx)


_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | float | int, *, file: str = "<spec>", key: str = "period") -> float:
    """``"250ms"``, ``"1s"``, ``"5m"``, ``"2h"``, or a bare number of seconds -> seconds (> 0)."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ConfigError(file, key, "a duration such as '1s' or '250ms'", text)
    if isinstance(text, int | float):
        value = float(text)
    else:
        s = text.strip()
        num = s.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = s[len(num) :] or "s"
        try:
            value = float(num) * _UNITS_S[unit]
        except (ValueError, KeyError):
            raise ConfigError(file, key, "a duration such as '1s', '250ms', '5m'", text) from None
    if not 0 < value < float("inf"):
        raise ConfigError(file, key, "a finite duration greater than zero", text)
    return value
