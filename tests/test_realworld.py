"""Real-world graph shapes: weight views, quantised models, control flow, dtypes, opsets, I/O.

Every test prunes through ``onnxprune.prune`` and then checks the written model against the
input model in onnxruntime (differential), not only the report.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import ml_dtypes
import models
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import realworld_models as rw
from conftest import CliRunner
from onnx import numpy_helper

import onnxprune
from onnxprune.layers import QUANTISED_WEIGHT, SUBGRAPH_REASON

SAMPLES = 48


def prepare(tmp_path: Path, model: onnx.ModelProto, samples: int = SAMPLES) -> tuple[Path, Path]:
    path = models.save(model, tmp_path / f"{model.graph.name}.onnx")
    calib = models.write_npz(tmp_path / "calib.npz", models.random_inputs(model, samples, seed=1))
    return path, calib


def session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto | Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = session(model)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feed), strict=True))


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns the intermediate tensors ``names``."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    return copy


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
    model = rw.viewed_weights()
    path, calib = prepare(tmp_path, model)
    out = tmp_path / "out.onnx"
    report = onnxprune.prune(
        path, calib, sparsity=0.5, method="wanda", group="row", min_row_weights=0, output=out
    )
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
    feed = models.random_inputs(model, 8, seed=3)
    original = run(with_outputs(model, seen), feed)
    result = run(with_outputs(pruned, seen), feed)
    for name, as_rows in (("W0", True), ("W1t", True), ("W2f", False)):
        kept = result[name] != 0
        np.testing.assert_array_equal(result[name][kept], original[name][kept])
        check_row_counts(result[name].T if as_rows else result[name], 0.5)
    cosine = report.fidelity.outputs[0].cosine if report.fidelity else 0.0
    assert cosine > 0.5
    assert not np.array_equal(result["y"], original["y"])


def test_views_that_are_not_private_or_not_supported_are_skipped(tmp_path: Path) -> None:
    model = rw.shared_view()
    path, calib = prepare(tmp_path, model)
    out = tmp_path / "out.onnx"
    report = onnxprune.prune(path, calib, sparsity=0.5, output=out)
    reasons = {s.name: s.reason for s in report.skipped}
    assert "also feeds Add (add_a)" in reasons["fa"]
    assert "also feeds Add (add_b)" in reasons["fb"]
    assert "Reshape" in reasons["fc"]
    assert report.layers == []
    assert out.read_bytes() == path.read_bytes()


# ---------------------------------------------------------------------------------------------
# 2. Quantised models


@pytest.mark.parametrize("builder", [rw.qdq_mlp, rw.qlinear_mlp])
def test_quantised_weights_stay_byte_identical(tmp_path: Path, builder: Any) -> None:
    model = builder()
    path, calib = prepare(tmp_path, model)
    out = tmp_path / "out.onnx"
    report = onnxprune.prune(path, calib, sparsity=0.5, output=out)
    assert [layer.weight for layer in report.layers] == ["W2"]  # the float Gemm only
    assert report.layers[0].sparsity == pytest.approx(0.5)
    skipped = {s.name: s.reason for s in report.skipped}
    if builder is rw.qdq_mlp:
        assert skipped == {"fc0": QUANTISED_WEIGHT, "fc1": QUANTISED_WEIGHT}
    else:
        assert set(skipped) == {"qfc0", "ifc1"}
        assert all("prune the float model before quantization" in r for r in skipped.values())
    pruned = assert_valid(out)
    before, after = stored(model), stored(pruned)
    for name, tensor in before.items():
        if name not in ("W2", "b2"):  # every quantised weight and quantisation parameter
            assert after[name].SerializeToString() == tensor.SerializeToString(), name
    feed = models.random_inputs(model, 16, seed=4)
    y_before, y_after = run(model, feed)["y"], run(pruned, feed)["y"]
    assert np.isfinite(y_after).all() and y_after.shape == y_before.shape
    assert not np.array_equal(y_before, y_after)


# ---------------------------------------------------------------------------------------------
# 3. Control flow


@pytest.mark.parametrize(
    ("builder", "untouched", "inner"),
    [
        (
            rw.if_model,
            ["branch", "side"],
            {"choose/then_branch/then_fc", "choose/then_branch/then_shared",
             "choose/else_branch/else_fc"},
        ),
        (rw.loop_model, ["state"], {"loop/body/loop_fc"}),
    ],
)  # fmt: skip
def test_subgraph_layers_are_listed_not_pruned(
    tmp_path: Path, builder: Any, untouched: list[str], inner: set[str]
) -> None:
    model = builder()
    path, calib = prepare(tmp_path, model)
    out = tmp_path / "out.onnx"
    report = onnxprune.prune(path, calib, sparsity=0.5, min_row_weights=2, output=out)
    assert [layer.weight for layer in report.layers] == ["W_out"]
    assert report.layers[0].sparsity == pytest.approx(0.5)
    reasons = {s.name: s.reason for s in report.skipped}
    assert inner <= set(reasons)
    assert all(reasons[name].startswith(SUBGRAPH_REASON) for name in inner)
    if builder is rw.if_model:
        assert reasons["side_fc"] == "weight is also read inside a subgraph"
    pruned = assert_valid(out)
    for name, tensor in stored(model).items():
        if name not in ("W_out", "b"):
            assert stored(pruned)[name].SerializeToString() == tensor.SerializeToString()
    for seed in (5, 6):  # a batch with a positive and one with a negative sum (If branches)
        feed = models.random_inputs(model, 8, seed=seed)
        feed["x"] += 0.5 if seed == 5 else -0.5
        before, after = run(model, feed), run(pruned, feed)
        for name in untouched:
            assert np.array_equal(before[name], after[name]), name
        assert not np.array_equal(before["y"], after["y"])


# ---------------------------------------------------------------------------------------------
# 4. dtypes, opsets, inputs and outputs


def test_bf16_compute_is_skipped_with_a_reason(tmp_path: Path) -> None:
    model = rw.bf16_matmul()
    path = models.save(model, tmp_path / "bf16.onnx")
    x = np.random.default_rng(0).standard_normal((16, 8)).astype(ml_dtypes.bfloat16)
    out = tmp_path / "out.onnx"
    report = onnxprune.prune(path, [{"x": x}], sparsity=0.5, output=out)
    assert report.layers == []
    assert len(report.skipped) == 1
    assert "bfloat16" in report.skipped[0].reason
    assert "onnxruntime" in report.skipped[0].reason
    assert out.read_bytes() == path.read_bytes()


@pytest.mark.parametrize("opset", sorted({11, 13, 17, 18, 21, rw.NEWEST_OPSET}))
def test_every_opset_end_to_end(tmp_path: Path, opset: int) -> None:
    model = rw.opset_model(opset)
    path, calib = prepare(tmp_path, model)
    out = tmp_path / "out.onnx"
    # contrib with its gated statistics: the calibration graph uses ReduceSum and
    # ReduceSumSquare, whose axes moved from attribute to input at opsets 13 and 18.
    report = onnxprune.prune(path, calib, sparsity=0.5, group="row", output=out)
    assert {layer.weight for layer in report.layers} == {"C", "G", "M"}
    assert {layer.gate for layer in report.layers} == {"relu", "none"}
    pruned = assert_valid(out)
    assert pruned.opset_import[0].version == opset
    assert pruned.ir_version == model.ir_version
    assert report.achieved_sparsity == pytest.approx(0.5, abs=0.02)
    feed = models.random_inputs(model, 8, seed=2)
    before, after = run(model, feed)["y"], run(pruned, feed)["y"]
    cosine = float((before * after).sum() / np.linalg.norm(before) / np.linalg.norm(after))
    assert 0.5 < cosine < 1.0


def test_several_inputs_outputs_dynamic_dims_and_optional_inputs(tmp_path: Path) -> None:
    model = rw.multi_io()
    path = models.save(model, tmp_path / "multi.onnx")
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for part, (batch, seq) in enumerate([(12, 3), (20, 7), (16, 5)]):  # batch and seq vary
        models.write_npz(
            calib / f"part{part}.npz",
            {
                "tokens": rng.standard_normal((batch, seq, 8)).astype(np.float32),
                "image": rng.standard_normal((batch, 2, 5, 5)).astype(np.float32),
            },
        )
    out = tmp_path / "out.onnx"
    report = onnxprune.prune(path, calib, sparsity=0.5, min_row_weights=1, output=out)
    assert {layer.weight for layer in report.layers} == {"Wt", "Wo", "Wc", "Wg"}
    assert all(layer.sparsity > 0.3 for layer in report.layers)
    assert report.fidelity is not None
    assert [o.name for o in report.fidelity.outputs] == ["seq_out", "img_out"]
    pruned = assert_valid(out)
    clip = next(n for n in pruned.graph.node if n.op_type == "Clip")
    assert list(clip.input) == ["tokens", "", "hi"]  # the optional input stays omitted
    feed = {
        "tokens": rng.standard_normal((3, 11, 8)).astype(np.float32),  # a length never seen
        "image": rng.standard_normal((3, 2, 5, 5)).astype(np.float32),
    }
    before, after = run(model, feed), run(pruned, feed)
    for name in ("seq_out", "img_out"):
        assert after[name].shape == before[name].shape
        assert not np.array_equal(before[name], after[name])


def test_initializer_listed_as_graph_input_is_pruned_consistently(tmp_path: Path) -> None:
    model = rw.initializer_as_input()
    path, calib = prepare(tmp_path, model)
    out = tmp_path / "out.onnx"
    report = onnxprune.prune(path, calib, sparsity=0.5, output=out)
    assert {layer.weight for layer in report.layers} == {"W0", "W1"}
    pruned = assert_valid(out)
    inputs = {i.name: i for i in pruned.graph.input}
    weights = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    for name in ("W0", "W1", "b0", "b1"):
        dims = [d.dim_value for d in inputs[name].type.tensor_type.shape.dim]
        assert dims == list(weights[name].shape), name
    assert np.mean(weights["W0"] == 0) == pytest.approx(0.5, abs=0.02)
    feed = models.random_inputs(model, 8, seed=2)
    default = run(pruned, feed)["y"]
    # Feeding the stored values through the graph inputs changes nothing: one model.
    explicit = run(pruned, {**feed, **weights})["y"]
    np.testing.assert_array_equal(default, explicit)
    assert not np.array_equal(default, run(model, feed)["y"])


def test_inspect_lists_views_and_subgraph_layers(cli: CliRunner, tmp_path: Path) -> None:
    viewed = models.save(rw.viewed_weights(), tmp_path / "viewed.onnx")
    result = cli("inspect", viewed)
    assert result.code == 0, result.err
    rows = [line for line in result.out.splitlines() if line.startswith("fc")]
    assert len(rows) == 3
    for row in rows:  # the storage column never runs into the dtype column
        assert re.search(r"initializer via \S+\s{2,}float32", row), row
    looped = models.save(rw.loop_model(), tmp_path / "loop.onnx")
    report = json.loads(cli("inspect", looped, "--json").out)
    assert [s["name"] for s in report["skipped"]] == ["loop/body/loop_fc"]
    assert report["skipped"][0]["reason"].startswith(SUBGRAPH_REASON)
