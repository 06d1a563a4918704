"""A shipped model is reproducible: re-running its training gives the committed bytes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from gateway.detect.training import train_and_export


@pytest.mark.slow
def test_streetlight_training_reproduces_the_shipped_model(
    models_dir: Path, tmp_path: Path
) -> None:
    spec_file = models_dir / "streetlight" / "train.py"
    loader = importlib.util.spec_from_file_location("streetlight_train", spec_file)
    assert loader is not None and loader.loader is not None
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    manifest = train_and_export(module.SPEC, tmp_path)
    shipped = json.loads((models_dir / "streetlight" / "manifest.json").read_text())
    # the export check inside train_and_export compared the graph with scikit-learn's scores
    assert manifest["trained_on"]["export_max_abs_diff"] < 1e-5
    assert manifest["sha256"] == shipped["sha256"]
    assert (tmp_path / "model.onnx").read_bytes() == (
        models_dir / "streetlight" / "model.onnx"
    ).read_bytes()
    assert manifest["threshold"] == shipped["threshold"]
