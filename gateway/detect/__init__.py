"""On-device anomaly detection: one ONNX model per asset category, scored in batches.

The seam the gateway calls (``gateway/app.py``)::

    detector = Detector.load(models_dir, {"wq-01": "water-quality", "lamp-7": "streetlight"})
    events = detector.score(batch)          # list[Reading] -> list[AnomalyEvent]
    detector.stats()                        # per category: model, sha256, mode, score distribution
    detector.swap(bundle_dir)               # hot swap, verified first; on error the old one stays
    detector.set_threshold("wq-01", 0.6)    # downlink: per-asset score threshold
    detector.set_mode("streetlight", "shadow")

``load`` opens every bundle (a sub-directory with ``manifest.json`` and ``model.onnx``) whose
category appears in ``assets``; categories without a model are not scored. Each bundle is verified
before use — sha256 and input signature against its manifest — and a bad one raises
:class:`~gateway.errors.ModelError` naming the file. Sessions are created once with one intra-op
thread.

``score`` keeps a feature window per asset: one row per ``window.period_s`` of the model, where
readings (which arrive one quantity at a time) update the newest row and the latest value of each
quantity wins. The rows of all assets in a batch are scored in one ONNX call per model. Every
scored reading gets ``reading.score`` (0..1); a score at or above the asset's threshold marks the
reading ``Quality.SUSPECT`` unless the model is in shadow mode. Events are raised only on changes:
``state="start"`` when two consecutive scores of an asset reach the threshold or a row closes
with its last score at or above it (so a lone glitch that the next sample overwrites raises none),
and ``state="end"`` when the score falls below ``threshold * clear_ratio`` (hysteresis, from the
manifest). Readings of quantities the
model does not use (a counter's battery) pass through unscored; non-finite or invalid values are
counted in ``bad_readings`` and skipped, never raised.
"""

from __future__ import annotations

from gateway.detect.bundle import Bundle, load_bundle
from gateway.detect.detector import AnomalyEvent, Detector

__all__ = ["AnomalyEvent", "Bundle", "Detector", "load_bundle"]
