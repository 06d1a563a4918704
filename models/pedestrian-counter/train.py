"""Train and export the pedestrian-counter model: ``python models/pedestrian-counter/train.py``.

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
    "name": "pedestrian-counter",
    "version": "1.0.0",
    "category": "pedestrian-counter",
    "description": "gradient-boosted trees over causal window features of a bidirectional "
    "pedestrian counter reporting every 5 minutes: stuck at zero, implausible bursts, direction "
    "sensor failure, counts against the daily/weekly rhythm (device clock off)",
    "quantities": [
        {"name": "count_in", "unit": "IE"},
        {"name": "count_out", "unit": "IE"},
    ],
    # counts are people per report: a row adds up the reports of its 5 minutes
    "window": {"length": 24, "period_s": 300.0, "sum": ["count_in", "count_out"]},
    "features": {"set": "pedestrian-counter/1", "params": {"tz_hours": 1.0, "period_s": 300.0}},
    "clear_ratio": 0.8,
    "mode": "active",
    "recipe": {
        "family": "pedestrian-counter",
        "generator": "hil_tests/emulators/physics.py CounterSim (busyness 0.3-2.0)",
        "seeds": {"train": 1, "validation": 5000, "test": 10000},
        "scenarios": {"train": 100, "validation": 8, "test": 6},
        "days": 10,
        "faults_per_day": 0.5,
        "zscore_floor": [1.0, 1.0],
        "trees": {
            "max_iter": 200,
            "max_leaf_nodes": 31,
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
