"""The two sides of a rehearsal: the current site and a candidate site file or model bundle.

A side is a site file (validated by :func:`gateway.config.parse_site`, so an invalid field is
refused with the file and the key) plus an optional ``[detect]`` table that only rehearsals
read — what the downlink would set at run time::

    [detect]
    thresholds = { "wq-harbour" = 0.3, "streetlight" = 0.5 }   # per asset id or per category
    mode = { "pedestrian-counter" = "shadow" }                 # per category: active | shadow

A candidate may instead be a model bundle directory: the current site with that bundle swapped in,
verified first with :func:`gateway.security.verify_bundle` when the site trusts signing keys.
Everything is checked and every model opened before any input is generated.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import CATEGORIES, Site, parse_site
from gateway.detect import Detector
from gateway.detect.detector import MODES
from gateway.errors import ConfigError, ModelError

__all__ = ["Side", "load_candidate", "load_side"]

SHIPPED_MODELS = Path(__file__).resolve().parents[2] / "models"


@dataclass(frozen=True, slots=True)
class Side:
    """Everything that decides what one side does with the same input."""

    name: str
    source: str  # the file or bundle it came from
    site: Site
    thresholds: dict[str, float] = field(default_factory=dict)  # asset id or category -> value
    modes: dict[str, str] = field(default_factory=dict)  # category -> mode
    bundles: tuple[Path, ...] = ()  # swapped in after loading the site's models

    @property
    def models_dir(self) -> Path:
        return self.site.models_dir or SHIPPED_MODELS

    def period(self, asset: str) -> float | None:
        """The site's reporting period of ``asset`` if it sets one explicitly."""
        for a in self.site.assets:
            if a.id == asset:
                return a.period
        return None

    def detector(self, assets: dict[str, str]) -> Detector:
        """A fresh detector for ``assets`` (id -> category) configured as this side says."""
        try:
            det = Detector.load(self.models_dir, assets)
            for bundle in self.bundles:
                det.swap(bundle)
            for category, mode in self.modes.items():
                if category in det.stats():
                    det.set_mode(category, mode)
            for asset, category in assets.items():
                value = self.thresholds.get(asset, self.thresholds.get(category))
                if value is not None:
                    det.set_threshold(asset, value)
        except ModelError as e:
            raise ConfigError(self.source, "models", f"usable anomaly models ({e})") from None
        return det

    def threshold(self, det: Detector, asset: str, category: str) -> float | None:
        stats = det.stats().get(category)
        if stats is None:
            return None
        value = self.thresholds.get(asset, self.thresholds.get(category))
        return float(stats["threshold"]) if value is None else value


def load_side(path: str | Path, name: str) -> Side:
    """Read a site file with an optional ``[detect]`` table; errors name the file and key."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(file), "", "an existing site file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(file), "", f"valid TOML ({e})") from None
    detect = data.pop("detect", {})
    site = parse_site(data, file)
    thresholds, modes = _detect(str(file), detect, {a.id for a in site.assets})
    return Side(name, str(file), site, thresholds, modes)


def _detect(file: str, table: Any, assets: set[str]) -> tuple[dict[str, float], dict[str, str]]:
    if not isinstance(table, dict):
        raise ConfigError(file, "detect", "a table", table)
    extra = sorted(set(table) - {"thresholds", "mode"})
    if extra:
        raise ConfigError(file, f"detect.{extra[0]}", "'thresholds' or 'mode'")
    thresholds = table.get("thresholds", {})
    modes = table.get("mode", {})
    for key, v in (("thresholds", thresholds), ("mode", modes)):
        if not isinstance(v, dict):
            raise ConfigError(file, f"detect.{key}", "a table", v)
    for k, v in thresholds.items():
        if k not in assets and k not in CATEGORIES:
            raise ConfigError(file, f"detect.thresholds.{k}", "an asset id or a category", k)
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 < v <= 1.0:
            raise ConfigError(file, f"detect.thresholds.{k}", "a score threshold in (0, 1]", v)
    for k, v in modes.items():
        if k not in CATEGORIES:
            raise ConfigError(file, f"detect.mode.{k}", f"one of {list(CATEGORIES)}", k)
        if v not in MODES:
            raise ConfigError(file, f"detect.mode.{k}", f"one of {list(MODES)}", v)
    return {k: float(v) for k, v in thresholds.items()}, dict(modes)


def load_candidate(path: str | Path, current: Side) -> Side:
    """A candidate site file, or a model bundle directory applied to the current side."""
    p = Path(path)
    if not p.is_dir():
        return load_side(p, "candidate")
    if not (p / "manifest.json").is_file():
        raise ConfigError(str(p), "manifest.json", "a model bundle directory or a site file")
    trusted = current.site.security.trusted
    if trusted:
        from gateway.security import BundleError, verify_bundle

        try:
            verify_bundle(p, trusted)
        except BundleError as e:
            raise ConfigError(
                str(p), "signature.json", f"a bundle signed by a trusted key ({e})"
            ) from None
    return Side("candidate", str(p), current.site, dict(current.thresholds),
                dict(current.modes), (*current.bundles, p))  # fmt: skip
