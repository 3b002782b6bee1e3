"""Real-world graph shapes: weight views, quantised models, control flow, dtypes, opsets, I/O.

Every test prunes through ``onnxprune.prune`` and then checks the written model against the
input model in onnxruntime (differential), not only the report.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import builders
import ml_dtypes
import numpy as np
import onnx
import pytest
from conftest import CliRunner
from onnx import numpy_helper
from ort_run import outputs_by_name

import onnxprune
from onnxprune.layers import QUANTISED_WEIGHT, SUBGRAPH_REASON

SAMPLES = 48


def prune(
    tmp_path: Path, model: onnx.ModelProto, **options: Any
) -> tuple[onnxprune.Report, Path, Path]:
    """(report, output, input) of ``model`` saved with ``SAMPLES`` random calibration inputs
    and pruned (50% unless ``options`` say otherwise) into ``tmp_path/out.onnx``."""
    path, calib = builders.save_with_calibration(
        model, tmp_path, SAMPLES, name=f"{model.graph.name}.onnx"
    )
    out = tmp_path / "out.onnx"
    return onnxprune.prune(path, calib, **{"sparsity": 0.5, **options}, output=out), out, path


def run(model: onnx.ModelProto | Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output by name (onnxruntime's warnings about these graphs silenced)."""
    return outputs_by_name(model, feed, log_level=3)


def stored(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def check_row_counts(matrix: np.ndarray, target: float) -> None:
    """Group ``row`` without a row floor: every row loses floor(s*K) or one more weight."""
    rows = matrix.shape[0]
    zeros = (matrix == 0).sum(axis=1)
    base = round(target * matrix.size) // rows
    assert set(zeros.tolist()) <= {base, base + 1}, zeros
    assert zeros.sum() == round(target * matrix.size)


def assert_valid(path: Path) -> onnx.ModelProto:
    onnx.checker.check_model(str(path), full_check=True)
    return onnx.load(str(path))


# ---------------------------------------------------------------------------------------------
# 1. Weights reached through Transpose / Cast


def test_transposed_and_cast_weights_are_pruned_as_the_layer_sees_them(tmp_path: Path) -> None:
    model = builders.viewed_weights()
    report, out, _path = prune(tmp_path, model, method="wanda", group="row", min_row_weights=0)
    assert {layer.weight: layer.storage for layer in report.layers} == {
        "Wt": "initializer via Transpose",
        "W1": "initializer via Cast+Transpose",
        "W2": "initializer via Cast",
    }
    assert report.skipped == []
    pruned = assert_valid(out)
    # The view nodes stay; the stored constants keep their dtype and layout.
    assert [n.op_type for n in pruned.graph.node] == [n.op_type for n in model.graph.node]
    before, after = stored(model), stored(pruned)
    for name in ("Wt", "W1", "W2"):
        assert after[name].data_type == before[name].data_type, name
        assert list(after[name].dims) == list(before[name].dims), name
    assert numpy_helper.to_array(after["W1"]).dtype == ml_dtypes.bfloat16

    # What each layer reads, taken from onnxruntime: the original's values where kept, zeros
    # elsewhere, pruned row by row in the layer's own (output, K) view.
    seen = ["W0", "W1t", "W2f"]
    feed = builders.random_inputs(model, 8, seed=3)
    original = run(builders.with_outputs(model, seen, elem=None), feed)
    result = run(builders.with_outputs(pruned, seen, elem=None), feed)
    for name, as_rows in (("W0", True), ("W1t", True), ("W2f", False)):
        kept = result[name] != 0
        np.testing.assert_array_equal(result[name][kept], original[name][kept])
        check_row_counts(result[name].T if as_rows else result[name], 0.5)
    cosine = report.fidelity.outputs[0].cosine if report.fidelity else 0.0
    assert cosine > 0.5
    assert not np.array_equal(result["y"], original["y"])


def test_views_that_are_not_private_or_not_supported_are_skipped(tmp_path: Path) -> None:
    model = builders.shared_view()
    report, out, path = prune(tmp_path, model)
    reasons = {s.name: s.reason for s in report.skipped}
    assert "also feeds Add (add_a)" in reasons["fa"]
    assert "also feeds Add (add_b)" in reasons["fb"]
    assert "Reshape" in reasons["fc"]
    assert report.layers == []
    assert out.read_bytes() == path.read_bytes()


# ---------------------------------------------------------------------------------------------
# 2. Quantised models


@pytest.mark.parametrize("builder", [builders.qdq_mlp, builders.qlinear_mlp])
def test_quantised_weights_stay_byte_identical(tmp_path: Path, builder: Any) -> None:
    model = builder()
    report, out, _path = prune(tmp_path, model)
    assert [layer.weight for layer in report.layers] == ["W2"]  # the float Gemm only
    assert report.layers[0].sparsity == pytest.approx(0.5)
    skipped = {s.name: s.reason for s in report.skipped}
    if builder is builders.qdq_mlp:
        assert skipped == {"fc0": QUANTISED_WEIGHT, "fc1": QUANTISED_WEIGHT}
    else:
        assert set(skipped) == {"qfc0", "ifc1"}
        assert all("prune the float model before quantization" in r for r in skipped.values())
    pruned = assert_valid(out)
    before, after = stored(model), stored(pruned)
    for name, tensor in before.items():
        if name not in ("W2", "b2"):  # every quantised weight and quantisation parameter
            assert after[name].SerializeToString() == tensor.SerializeToString(), name
    feed = builders.random_inputs(model, 16, seed=4)
    y_before, y_after = run(model, feed)["y"], run(pruned, feed)["y"]
    assert np.isfinite(y_after).all() and y_after.shape == y_before.shape
    assert not np.array_equal(y_before, y_after)


# ---------------------------------------------------------------------------------------------
# 3. Control flow


def test_loop_body_layers_are_listed_not_pruned(tmp_path: Path) -> None:
    model = builders.loop_model()
    report, out, _path = prune(tmp_path, model, min_row_weights=2)
    assert [layer.weight for layer in report.layers] == ["W_out"]
    assert report.layers[0].sparsity == pytest.approx(0.5)
    reasons = {s.name: s.reason for s in report.skipped}
    assert reasons["loop/body/loop_fc"].startswith(SUBGRAPH_REASON)
    assert "runs once per iteration" in reasons["loop/body/loop_fc"]
    pruned = assert_valid(out)
    for name, tensor in stored(model).items():
        if name not in ("W_out", "b"):
            assert stored(pruned)[name].SerializeToString() == tensor.SerializeToString()
    feed = builders.random_inputs(model, 8, seed=5)
    before, after = run(model, feed), run(pruned, feed)
    assert np.array_equal(before["state"], after["state"])
    assert not np.array_equal(before["y"], after["y"])


def test_if_branch_layers_are_pruned_and_shared_outer_weights_left(tmp_path: Path) -> None:
    model = builders.if_model()
    report, out, _path = prune(tmp_path, model, min_row_weights=2)
    # The branches' outer-scope weights are pruned from the batches that take each branch.
    assert [layer.weight for layer in report.layers] == ["W_out", "W_then", "W_else"]
    reasons = {s.name: s.reason for s in report.skipped}
    assert reasons["side_fc"] == "weight is also read inside a subgraph"
    assert reasons["choose/then_branch/then_shared"].startswith(
        "weight W_shared is also read outside If choose then_branch"
    )
    pruned = assert_valid(out)
    assert [n.op_type for n in pruned.graph.node].count("If") == 1
    assert stored(pruned)["W_shared"].SerializeToString() == (
        stored(model)["W_shared"].SerializeToString()
    )
    for seed in (5, 6):  # a batch with a positive and one with a negative sum (If branches)
        feed = builders.random_inputs(model, 8, seed=seed)
        feed["x"] += 0.5 if seed == 5 else -0.5
        before, after = run(model, feed), run(pruned, feed)
        assert np.array_equal(before["side"], after["side"])
        assert not np.array_equal(before["branch"], after["branch"])
        assert not np.array_equal(before["y"], after["y"])


def test_initializer_listed_as_graph_input_is_pruned_consistently(tmp_path: Path) -> None:
    model = builders.initializer_as_input()
    report, out, _path = prune(tmp_path, model)
    assert {layer.weight for layer in report.layers} == {"W0", "W1"}
    pruned = assert_valid(out)
    inputs = {i.name: i for i in pruned.graph.input}
    weights = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    for name in ("W0", "W1", "b0", "b1"):
        dims = [d.dim_value for d in inputs[name].type.tensor_type.shape.dim]
        assert dims == list(weights[name].shape), name
    assert np.mean(weights["W0"] == 0) == pytest.approx(0.5, abs=0.02)
    feed = builders.random_inputs(model, 8, seed=2)
    default = run(pruned, feed)["y"]
    # Feeding the stored values through the graph inputs changes nothing: one model.
    explicit = run(pruned, {**feed, **weights})["y"]
    np.testing.assert_array_equal(default, explicit)
    assert not np.array_equal(default, run(model, feed)["y"])


def test_inspect_lists_views_and_subgraph_layers(cli: CliRunner, tmp_path: Path) -> None:
    viewed = builders.save(builders.viewed_weights(), tmp_path / "viewed.onnx")
    result = cli("inspect", viewed)
    assert result.code == 0, result.err
    rows = [line for line in result.out.splitlines() if line.startswith("fc")]
    assert len(rows) == 3
    for row in rows:  # the storage column never runs into the dtype column
        assert re.search(r"initializer via \S+\s{2,}float32", row), row
    looped = builders.save(builders.loop_model(), tmp_path / "loop.onnx")
    report = json.loads(cli("inspect", looped, "--json").out)
    assert [s["name"] for s in report["skipped"]] == ["loop/body/loop_fc"]
    assert report["skipped"][0]["reason"].startswith(SUBGRAPH_REASON)
