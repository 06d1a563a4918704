"""Model bundles are verified before use; a bad one is refused with an error naming its file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.detect import load_bundle
from gateway.detect.bundle import sha256_file
from gateway.errors import ModelError

SHIPPED = ("water-quality", "streetlight", "pedestrian-counter", "univariate-stream")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_bundles_verify(models_dir: Path, name: str) -> None:
    b = load_bundle(models_dir / name)
    assert b.name == name and b.sha256 == sha256_file(models_dir / name / "model.onnx")
    assert b.session.get_inputs()[0].shape[1] == b.manifest["input"]["shape"][1]
    assert b.load_ms < 500.0  # generous here; the benchmark records the real figure
    assert all(unit for unit in b.units.values())
    assert (models_dir / name / "README.md").is_file()
    assert (models_dir / name / "train.py").is_file()


def _edit(bundle: Path, **changes: object) -> None:
    path = bundle / "manifest.json"
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


def test_tampered_model_is_refused(bundle_copy: Path) -> None:
    with (bundle_copy / "model.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelError, match=r"model\.onnx: sha256 .* does not match"):
        load_bundle(bundle_copy)


def test_wrong_input_signature_is_refused(bundle_copy: Path) -> None:
    # a manifest that promises a different feature width than the graph takes
    _edit(bundle_copy, input={"name": "features", "dtype": "float32", "shape": [None, 31]})
    with pytest.raises(ModelError, match=r"manifest\.json: inconsistent manifest"):
        load_bundle(bundle_copy)
    _edit(bundle_copy, input={"name": "x", "dtype": "float32", "shape": [None, 32]})
    with pytest.raises(ModelError, match=r"input signature features .* does not match"):
        load_bundle(bundle_copy)


def test_graph_of_another_model_is_refused(bundle_copy: Path, models_dir: Path) -> None:
    other = (models_dir / "streetlight" / "model.onnx").read_bytes()
    (bundle_copy / "model.onnx").write_bytes(other)
    _edit(bundle_copy, sha256=sha256_file(bundle_copy / "model.onnx"))  # hash re-signed
    with pytest.raises(ModelError, match="input signature"):
        load_bundle(bundle_copy)


def test_garbage_graph_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "model.onnx").write_bytes(b"not a protobuf at all")
    _edit(bundle_copy, sha256=sha256_file(bundle_copy / "model.onnx"))
    with pytest.raises(ModelError, match="onnxruntime refused the model"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"quantities": [{"name": "temperature", "unit": "FAH"}]}, "unknown unit codes"),
        ({"features": {"set": "water-quality/9"}}, "unknown feature set"),
        ({"threshold": 1.5}, "inconsistent manifest"),
        ({"window": {"length": 36}}, "malformed manifest"),
    ],
)
def test_bad_manifest_fields(bundle_copy: Path, change: dict[str, object], message: str) -> None:
    _edit(bundle_copy, **change)
    with pytest.raises(ModelError, match=message) as info:
        load_bundle(bundle_copy)
    assert "manifest.json" in str(info.value)


def test_missing_or_unreadable_manifest(bundle_copy: Path) -> None:
    (bundle_copy / "manifest.json").write_text("{ not json")
    with pytest.raises(ModelError, match="unreadable manifest"):
        load_bundle(bundle_copy)
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(ModelError, match="no manifest"):
        load_bundle(bundle_copy)
    (bundle_copy / "manifest.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ModelError, match="missing keys: version"):
        load_bundle(bundle_copy)
