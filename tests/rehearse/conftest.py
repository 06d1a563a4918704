"""Shared fixtures of the rehearsal tests: site files, shipped scenarios and model bundles."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
MODELS = ROOT / "models"

SITE = """\
[gateway]
id = "gw-rehearsal"
site = "rehearsal"
{gateway_extra}
{detect}
[[assets]]
id = "wq-harbour"
category = "water-quality"
location = [4.8952, 52.3791]
source = "demo:water-quality?seed=21"
{asset_extra}
"""


def write_site(path: Path, *, detect: str = "", gateway_extra: str = "",
               asset_extra: str = "") -> Path:  # fmt: skip
    """A valid site file, optionally with a ``[detect]`` table and extra keys."""
    path.write_text(SITE.format(detect=detect, gateway_extra=gateway_extra,
                                asset_extra=asset_extra), encoding="utf-8")  # fmt: skip
    return path


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return write_site(tmp_path / "site.toml")


@pytest.fixture
def only_streetlight_models(tmp_path: Path) -> Path:
    """A models directory with the streetlight bundle only (no water-quality model)."""
    dst = tmp_path / "models"
    (dst / "streetlight").mkdir(parents=True)
    for name in ("manifest.json", "model.onnx"):
        shutil.copy(MODELS / "streetlight" / name, dst / "streetlight" / name)
    return dst
