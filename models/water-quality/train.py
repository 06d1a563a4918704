"""Train and export the water-quality anomaly model: ``python models/water-quality/train.py``.

Writes model.onnx and manifest.json next to this file. Deterministic: fixed simulator seeds,
fixed tree seed, single-threaded histogram building; a re-run gives the same sha256 with the
library versions recorded in the manifest.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # identical float sums on every run

SPEC = {
    "name": "water-quality",
    "version": "1.0.0",
    "category": "water-quality",
    "description": "gradient-boosted trees over causal window features of a multiparameter "
    "river probe: fouling drift, spikes, stuck-at values and pollution events",
    "quantities": [
        {"name": "temperature", "unit": "CEL"},
        {"name": "ph", "unit": "C62"},
        {"name": "conductivity", "unit": "G42"},
        {"name": "dissolved_oxygen", "unit": "M1"},
        {"name": "turbidity", "unit": "NTU"},
        {"name": "orp", "unit": "2Z"},
    ],
    "window": {"length": 36, "period_s": 300.0},
    "features": {"set": "water-quality/1", "params": {"tz_hours": 1.0}},
    "clear_ratio": 0.8,
    "mode": "active",
    "recipe": {
        "family": "water-quality",
        "generator": "hil_tests/emulators/physics.py WaterQualitySim",
        "seeds": {"train": 1, "validation": 5000, "test": 10000},
        "scenarios": {"train": 60, "validation": 8, "test": 6},
        "days": 10,
        "faults_per_day": 0.5,
        "zscore_floor": [0.05, 0.02, 5.0, 0.08, 0.5, 4.0],
        "trees": {
            "max_iter": 100,
            "max_leaf_nodes": 15,
            "learning_rate": 0.1,
            "min_samples_leaf": 40,
            "random_state": 0,
        },
    },
}

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from gateway.detect.training import train_and_export

    manifest = train_and_export(SPEC, Path(__file__).parent)
    print(manifest["sha256"], manifest["threshold"], manifest["trained_on"])
