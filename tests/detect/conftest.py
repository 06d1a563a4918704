"""Shared fixtures of the anomaly-detection tests: the shipped bundles and copies to tamper with."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture
def models_dir() -> Path:
    return MODELS


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    """A private copy of the water-quality bundle (only the files the runtime reads)."""
    dst = tmp_path / "water-quality"
    dst.mkdir()
    for name in ("manifest.json", "model.onnx"):
        shutil.copy(MODELS / "water-quality" / name, dst / name)
    return dst
