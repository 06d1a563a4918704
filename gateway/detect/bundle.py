"""A model bundle on disk: ``manifest.json`` + ``model.onnx``, verified before anything uses it.

Verification (:func:`load_bundle`): the manifest parses and has every key the runtime reads; the
file's sha256 equals the manifest's; onnxruntime can build a session; the session's single input
and output have the names, element type and width the manifest states; the feature set is one
this runtime knows and produces exactly that many features; every quantity's unit is a known
UN/CEFACT code. Anything else is a :class:`~gateway.errors.ModelError` naming the file and what
is wrong. The session is created once, with one intra-op thread (a gateway scores on one core
and leaves the others to the I/O stages).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.detect import features
from gateway.errors import ModelError
from gateway.readings import UNITS

__all__ = ["MANIFEST", "Bundle", "load_bundle", "make_session", "sha256_file"]

MANIFEST = "manifest.json"


@dataclass(slots=True)
class Bundle:
    """A verified model: its manifest fields and a ready onnxruntime session."""

    path: Path
    manifest: dict[str, Any]
    session: Any
    sha256: str
    load_ms: float
    units: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def category(self) -> str:
        return str(self.manifest["category"])

    @property
    def quantities(self) -> tuple[str, ...]:
        return tuple(q["name"] for q in self.manifest["quantities"])

    @property
    def window(self) -> int:
        return int(self.manifest["window"]["length"])

    @property
    def period_s(self) -> float:
        return float(self.manifest["window"]["period_s"])

    @property
    def feature_set(self) -> str:
        return str(self.manifest["features"]["set"])

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.manifest["features"].get("params", {}))

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"])

    @property
    def input_name(self) -> str:
        return str(self.manifest["input"]["name"])

    def run(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Scores of a ``(N, F)`` float32 feature matrix as a ``(N,)`` array."""
        out = self.session.run(None, {self.input_name: x})[0]
        return np.asarray(out, dtype=np.float32).reshape(-1)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def make_session(model: Path | bytes) -> Any:
    """An onnxruntime session with one intra-op and one inter-op thread."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])


_REQUIRED = ("name", "version", "category", "file", "sha256", "input", "output", "quantities",
             "window", "features", "threshold")  # fmt: skip


def _read_manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ModelError(f"{file}: no manifest") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{file}: unreadable manifest: {e}") from e
    if not isinstance(manifest, dict):
        raise ModelError(f"{file}: expected a JSON object")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise ModelError(f"{file}: missing keys: {', '.join(missing)}")
    return manifest


def _check_manifest(file: Path, m: dict[str, Any]) -> dict[str, str]:
    try:
        units = {str(q["name"]): str(q["unit"]) for q in m["quantities"]}
        fs = features.FEATURE_SETS.get(str(m["features"]["set"]))
        length, period = int(m["window"]["length"]), float(m["window"]["period_s"])
        threshold, width = float(m["threshold"]), int(m["input"]["shape"][1])
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ModelError(f"{file}: malformed manifest: {e!r}") from e
    bad_units = sorted(f"{q}={u}" for q, u in units.items() if u not in UNITS)
    if bad_units:
        raise ModelError(f"{file}: unknown unit codes: {', '.join(bad_units)}")
    summed = m["window"].get("sum", [])
    if not isinstance(summed, list) or not set(summed) <= set(units) or (summed and period <= 0):
        raise ModelError(f"{file}: window.sum must list quantities of a model with a period")
    if m.get("mode", "active") not in ("active", "shadow"):
        raise ModelError(f"{file}: mode must be 'active' or 'shadow', got {m['mode']!r}")
    if fs is None:
        raise ModelError(f"{file}: unknown feature set {m['features']['set']!r}")
    if tuple(units) != fs.quantities:
        raise ModelError(f"{file}: quantities {list(units)} do not match feature set {fs.name}")
    if width != len(fs.names) or length < 2 or period < 0 or not 0.0 < threshold <= 1.0:
        raise ModelError(
            f"{file}: inconsistent manifest (features {width} vs {len(fs.names)}, window "
            f"{length}, period {period}, threshold {threshold})"
        )
    return units


def _check_signature(file: Path, session: Any, m: dict[str, Any]) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    want_in, want_out = m["input"], m["output"]
    if len(inputs) != 1 or len(outputs) < 1:
        raise ModelError(f"{file}: expected one input and one output, got {len(inputs)} inputs")
    got = inputs[0]
    shape = list(got.shape)
    if (got.name != want_in["name"] or got.type != "tensor(float)" or len(shape) != 2
            or shape[1] != int(want_in["shape"][1])):  # fmt: skip
        raise ModelError(
            f"{file}: input signature {got.name} {got.type} {shape} does not match the manifest "
            f"({want_in['name']} tensor(float) [N, {want_in['shape'][1]}])"
        )
    if outputs[0].name != want_out["name"]:
        raise ModelError(f"{file}: output {outputs[0].name!r} is not {want_out['name']!r}")


def load_bundle(path: Path) -> Bundle:
    """Read, verify and open the model bundle in directory ``path``; see the module doc."""
    manifest = _read_manifest(path)
    units = _check_manifest(path / MANIFEST, manifest)
    file = path / str(manifest["file"])
    try:
        digest = sha256_file(file)
    except OSError as e:
        raise ModelError(f"{file}: cannot read model: {e}") from e
    if digest != manifest["sha256"]:
        raise ModelError(f"{file}: sha256 {digest} does not match the manifest")
    import onnxruntime  # noqa: F401  (imported first: load_ms is the session, not the import)

    start = time.perf_counter()
    try:
        session = make_session(file)
    except Exception as e:  # onnxruntime raises its own untyped errors for a bad graph
        raise ModelError(f"{file}: onnxruntime refused the model: {e}") from e
    load_ms = (time.perf_counter() - start) * 1000.0
    _check_signature(file, session, manifest)
    return Bundle(path, manifest, session, digest, load_ms, units)
