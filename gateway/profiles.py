"""Device profiles: declarative TOML files that say how a device model's raw fields become readings.

A profile names the transport it speaks, the asset category it feeds, its sampling period, and one
table per quantity with its UN/CEFACT unit, scaling and physical validity range. Keys a transport
needs (a Modbus register, a GATT characteristic, a field in a frame) stay in the quantity's table
and are read by that transport's driver from :attr:`QuantitySpec.fields`. Shipped profiles live in
``gateway/profiles/*.toml``; a site can name a profile by name or by path. See docs/profiles.md.

Example::

    name = "twinedge-water-node"
    category = "water-quality"
    transport = "serial"
    period = "1s"

    [quantities.temperature]
    unit = "CEL"
    range = [-5, 45]
    field = "temperature"      # transport-specific, kept in fields
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.readings import UNITS, Quality

__all__ = ["PROFILE_DIR", "Profile", "QuantitySpec", "list_profiles", "load_profile"]

PROFILE_DIR = Path(__file__).with_name("profiles")
TRANSPORTS = ("serial", "modbus", "ble-gatt", "ble-adv", "demo")
_COMMON = {"unit", "range", "scale", "offset", "description"}


@dataclass(frozen=True, slots=True)
class QuantitySpec:
    name: str
    unit: str
    low: float = -math.inf
    high: float = math.inf
    scale: float = 1.0
    offset: float = 0.0
    fields: dict[str, Any] = field(default_factory=dict)

    def convert(self, raw: float) -> float:
        """Raw device value -> engineering value."""
        return raw * self.scale + self.offset

    def quality(self, value: float) -> Quality:
        """``suspect`` outside the physical range (never dropped), ``invalid`` for NaN."""
        if value != value:  # NaN
            return Quality.INVALID
        return Quality.GOOD if self.low <= value <= self.high else Quality.SUSPECT


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    transport: str
    category: str
    period: float
    quantities: dict[str, QuantitySpec]
    #: top-level keys other than the common ones (transport settings such as a GATT service UUID)
    settings: dict[str, Any] = field(default_factory=dict)
    file: str = ""
    description: str = ""

    def require_transport(self, transport: str, scheme: str) -> None:
        """Refuse a profile written for another transport than the source's."""
        if self.transport != transport:
            raise ConfigError(
                self.file, "transport", f"'{transport}' for a {scheme}: source", self.transport
            )


def list_profiles() -> list[str]:
    """Names of the shipped profiles."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str) -> Profile:
    """Load a shipped profile by name, or any profile file by path; errors name file and key."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PROFILE_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ConfigError(
            str(name_or_path), "", f"a profile file or one of the shipped {list_profiles()}"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), "", f"valid TOML ({e})") from None
    return parse_profile(data, str(path))


def parse_profile(data: dict[str, Any], file: str) -> Profile:
    from gateway.sources import parse_duration  # local: sources imports profiles

    def need(key: str, kind: type, what: str) -> Any:
        v = data.get(key)
        if not isinstance(v, kind) or (isinstance(v, str) and not v):
            raise ConfigError(file, key, what, v)
        return v

    name = need("name", str, "a profile name (string)")
    transport = need("transport", str, f"one of {list(TRANSPORTS)}")
    if transport not in TRANSPORTS:
        raise ConfigError(file, "transport", f"one of {list(TRANSPORTS)}", transport)
    category = need("category", str, "an asset category such as 'water-quality'")
    period = parse_duration(data.get("period", "1s"), file=file, key="period")
    qtable = data.get("quantities")
    if not isinstance(qtable, dict) or not qtable:
        raise ConfigError(file, "quantities", "at least one [quantities.NAME] table")
    quantities = {q: _quantity(q, spec, file) for q, spec in qtable.items()}
    settings = {
        k: v
        for k, v in data.items()
        if k not in {"name", "transport", "category", "period", "quantities", "description"}
    }
    return Profile(
        name, transport, category, period, quantities, settings, file, data.get("description", "")
    )


def _quantity(name: str, spec: Any, file: str) -> QuantitySpec:
    key = f"quantities.{name}"
    if not isinstance(spec, dict):
        raise ConfigError(file, key, "a table")
    unit = spec.get("unit")
    if unit not in UNITS:
        raise ConfigError(file, f"{key}.unit", f"a UN/CEFACT code among {sorted(UNITS)}", unit)
    low, high = -math.inf, math.inf
    if "range" in spec:
        rng = spec["range"]
        ok = isinstance(rng, list) and len(rng) == 2
        if not ok or not all(isinstance(x, int | float) for x in rng) or rng[0] > rng[1]:
            raise ConfigError(file, f"{key}.range", "[low, high] numbers with low <= high", rng)
        low, high = float(rng[0]), float(rng[1])
    nums = {}
    for k, default in (("scale", 1.0), ("offset", 0.0)):
        v = spec.get(k, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(file, f"{key}.{k}", "a number", v)
        nums[k] = float(v)
    fields = {k: v for k, v in spec.items() if k not in _COMMON}
    return QuantitySpec(name, unit, low, high, nums["scale"], nums["offset"], fields)
