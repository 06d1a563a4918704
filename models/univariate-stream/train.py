"""Train and export the univariate streaming model: ``python models/univariate-stream/train.py``.

A general detector for any single numeric series (scale-free features: robust z-scores against
the window's median and MAD, step, level shift, volatility and flat-line features). Writes
model.onnx and manifest.json next to this file. Deterministic: fixed seeds, fixed tree seed,
single-threaded histogram building.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # identical float sums on every run

SPEC = {
    "name": "univariate-stream",
    "version": "1.0.0",
    "category": "univariate-stream",
    "description": "gradient-boosted trees over scale-free causal window features of one "
    "numeric series: spikes, level shifts, stuck values, drift, noise bursts",
    "quantities": [{"name": "value", "unit": "C62"}],
    "window": {"length": 192, "period_s": 0.0},
    "features": {"set": "univariate/1", "params": {}},
    "clear_ratio": 0.8,
    "mode": "active",
    "recipe": {
        "family": "univariate-stream",
        "generator": "gateway/detect/datasets.py univariate_scenario: cycles, random walks, "
        "trends and physics.py quantities at scales 0.01-10000",
        "seeds": {"train": 1, "validation": 5000, "test": 10000},
        "scenarios": {"train": 100, "validation": 12, "test": 6},
        "rows": 3000,
        "faults": 10,
        "zscore_floor": [1e-9],
        "trees": {
            "max_iter": 120,
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
