"""The one-node TreeEnsemble export scores exactly like the scikit-learn model it came from."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from gateway.detect import training
from gateway.detect.bundle import make_session
from gateway.detect.export import _f32_floor, export_hgb

RECIPE = {
    "family": "water-quality",
    "features": "water-quality/1",
    "params": {"tz_hours": 1.0},
    "window": 36,
    "period_s": 300.0,
    "days": 3,
    "faults_per_day": 1.5,
    "seeds": {"train": 1, "validation": 5000, "test": 10000},
    "scenarios": {"train": 3, "validation": 1, "test": 1},
    "zscore_floor": [0.05, 0.02, 5.0, 0.08, 0.5, 4.0],
    "trees": {"max_iter": 40, "max_leaf_nodes": 15, "learning_rate": 0.1, "random_state": 0},
}


@pytest.fixture(scope="module")
def trained() -> tuple[HistGradientBoostingClassifier, training.Data]:
    data = training.build(RECIPE, "train")
    return training.fit(RECIPE, data), training.build(RECIPE, "validation")


def test_exported_graph_matches_scikit_learn(
    trained: tuple[HistGradientBoostingClassifier, training.Data],
) -> None:
    clf, validation = trained
    blob = export_hgb(clf, validation.x.shape[1])
    ours = make_session(blob).run(None, {"features": validation.x})[0].reshape(-1)
    theirs = clf.predict_proba(validation.x.astype(np.float64))[:, 1]
    assert validation.truth.any() and len(ours) == len(theirs) > 500
    assert np.max(np.abs(ours - theirs)) < 1e-5
    # both sides agree on which rows are anomalous at any threshold
    assert ((ours >= 0.5) == (theirs >= 0.5)).all()


def test_export_is_deterministic(
    trained: tuple[HistGradientBoostingClassifier, training.Data],
) -> None:
    clf, validation = trained
    assert export_hgb(clf, validation.x.shape[1]) == export_hgb(clf, validation.x.shape[1])
    graph = make_session(export_hgb(clf, validation.x.shape[1]))
    assert [n.name for n in graph.get_inputs()] == ["features"]
    assert [n.name for n in graph.get_outputs()] == ["score"]


@pytest.mark.parametrize("thr", [0.1, 1 / 3, -2.7182818284590455, 1e-8, 123456.789])
def test_float32_threshold_keeps_every_float32_input_on_its_side(thr: float) -> None:
    t32 = np.float32(_f32_floor(thr))
    assert float(t32) <= thr
    above = np.nextafter(t32, np.float32(np.inf))
    assert float(above) > thr  # the next float32 up is already on the right-hand side
