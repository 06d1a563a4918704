"""Train and export the streetlight anomaly model: ``python models/streetlight/train.py``.

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
    "name": "streetlight",
    "version": "1.0.0",
    "category": "streetlight",
    "description": "gradient-boosted trees over causal window features of an LED streetlight "
    "controller: burning in daylight, failed lamp, cycling, power inconsistent with the dim level",
    "quantities": [
        {"name": "power_state", "unit": "C62"},
        {"name": "dim_level", "unit": "P1"},
        {"name": "power", "unit": "WTT"},
        {"name": "voltage", "unit": "VLT"},
        {"name": "current", "unit": "AMP"},
        {"name": "lamp_fault", "unit": "C62"},
    ],
    "window": {"length": 24, "period_s": 300.0},
    "features": {
        "set": "streetlight/1",
        "params": {"lat": 52.37, "lon": 4.90, "tz_hours": 1.0, "rated_power_w": 60.0},
    },
    "clear_ratio": 0.8,
    "mode": "active",
    "recipe": {
        "family": "streetlight",
        "generator": "hil_tests/emulators/physics.py StreetlightSim (60 W, Amsterdam)",
        "seeds": {"train": 1, "validation": 5000, "test": 10000},
        "scenarios": {"train": 40, "validation": 8, "test": 6},
        "days": 10,
        "faults_per_day": 0.5,
        "zscore_floor": [0.01, 0.5, 0.5, 0.5, 0.005, 0.01],
        "trees": {
            "max_iter": 60,
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
