"""Export a trained gradient-boosted tree classifier as ONE ONNX TreeEnsembleRegressor node.

Generic converters emit a graph of many small nodes per tree, which is what made a converted
forest run at ~840 µs per row; the same trees as one ``ai.onnx.ml.TreeEnsembleRegressor`` node
(summing leaf values onto the baseline log-odds) followed by a ``Sigmoid`` run in a few µs and
load in milliseconds. The graph is built with :mod:`onnx.helper` from scikit-learn's
``HistGradientBoostingClassifier`` predictors.

Thresholds: scikit-learn sends ``x <= thr`` left with ``thr`` a float64; ONNX stores float32
thresholds and the model's input is float32. Storing the largest float32 not above ``thr`` keeps
every float32 input on the same side, so the ONNX scores equal scikit-learn's on float32 inputs
(up to float32 rounding of the leaf sum). Needs the ``train`` extra (scikit-learn, onnx).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "export_hgb"]

INPUT_NAME = "features"
OUTPUT_NAME = "score"


def _f32_floor(thr: float) -> float:
    """The largest float32 that is <= ``thr`` (so x32 <= result  <=>  x32 <= thr)."""
    f = np.float32(thr)
    if float(f) > thr:
        f = np.nextafter(f, np.float32(-np.inf))
    return float(f)


def _tree_attributes(predictors: list[Any]) -> dict[str, list[Any]]:
    attrs: dict[str, list[Any]] = {k: [] for k in (
        "nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_modes", "nodes_values",
        "nodes_truenodeids", "nodes_falsenodeids", "nodes_missing_value_tracks_true",
        "target_treeids", "target_nodeids", "target_ids", "target_weights")}  # fmt: skip
    for tree_id, predictor in enumerate(predictors):
        for node_id, node in enumerate(predictor.nodes):
            leaf = bool(node["is_leaf"])
            if not leaf and bool(node["is_categorical"]):
                raise ValueError("categorical splits are not supported by this exporter")
            attrs["nodes_treeids"].append(tree_id)
            attrs["nodes_nodeids"].append(node_id)
            attrs["nodes_featureids"].append(0 if leaf else int(node["feature_idx"]))
            attrs["nodes_modes"].append("LEAF" if leaf else "BRANCH_LEQ")
            attrs["nodes_values"].append(0.0 if leaf else _f32_floor(float(node["num_threshold"])))
            attrs["nodes_truenodeids"].append(0 if leaf else int(node["left"]))
            attrs["nodes_falsenodeids"].append(0 if leaf else int(node["right"]))
            attrs["nodes_missing_value_tracks_true"].append(
                0 if leaf else int(bool(node["missing_go_to_left"]))
            )
            if leaf:
                attrs["target_treeids"].append(tree_id)
                attrs["target_nodeids"].append(node_id)
                attrs["target_ids"].append(0)
                attrs["target_weights"].append(float(node["value"]))
    return attrs


def export_hgb(clf: Any, n_features: int, doc: str = "") -> bytes:
    """Serialise a fitted binary ``HistGradientBoostingClassifier`` as ONNX bytes.

    Input ``features`` float32 ``[N, n_features]``; output ``score`` float32 ``[N, 1]``, the
    probability of the anomaly class. The bytes are deterministic for a given classifier.
    """
    from onnx import TensorProto, helper

    if len(clf.classes_) != 2:
        raise ValueError("only binary classifiers can be exported")
    predictors = [it[0] for it in clf._predictors]
    base = float(np.asarray(clf._baseline_prediction).ravel()[0])
    attrs: dict[str, Any] = {
        "n_targets": 1,
        "aggregate_function": "SUM",
        "post_transform": "NONE",
        "base_values": [base],
        **_tree_attributes(predictors),
    }
    trees = helper.make_node(
        "TreeEnsembleRegressor", [INPUT_NAME], ["logit"], domain="ai.onnx.ml", **attrs
    )
    sigmoid = helper.make_node("Sigmoid", ["logit"], [OUTPUT_NAME])
    graph = helper.make_graph(
        [trees, sigmoid],
        "anomaly",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", n_features])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 1])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
        producer_name="twinedge",
        producer_version="1",
        doc_string=doc,
    )
    model.ir_version = 9
    import onnx

    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())
