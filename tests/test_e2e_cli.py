"""End-to-end runs of the ``onnxprune`` command on small generated graphs and the digits example.

Every test goes through ``onnxprune.cli.main`` (the console entry point) and checks the written
model with the ONNX full checker and onnxruntime, not only the report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import builders
import numpy as np
import onnx
import pytest
from conftest import EXAMPLE_CALIB, EXAMPLE_CNN, REPO, CliRunner, run_and_report
from onnx import numpy_helper
from ort_run import run_model

import onnxprune
from onnxprune.scoring import get_method

BUILDERS: dict[str, Callable[[], onnx.ModelProto]] = {
    "mlp_gemm": builders.mlp_gemm,
    "mlp_matmul": builders.mlp_matmul,
    "cnn_bn": builders.cnn_bn,
    "transformer_block": builders.transformer_block,
    "constant_node_mlp": builders.constant_node_mlp,
    "shared_weight_mlp": builders.shared_weight_mlp,
    "fp16_mlp": builders.fp16_mlp,
}
# Weights each model has that onnxprune must prune (and nothing else).
PRUNABLE = {
    "mlp_gemm": {"W0", "W1", "W2"},
    "mlp_matmul": {"W0", "W1", "W2"},
    "cnn_bn": {"conv1_w", "dw_w", "pw_w", "fc_w"},
    "transformer_block": {"q_w", "k_w", "v_w", "o_w", "ffn1_w", "ffn2_w"},
    "constant_node_mlp": {"W0", "W1", "W2"},
    "shared_weight_mlp": {"W_shared", "W_out"},
    "fp16_mlp": {"W0", "W1", "W2"},
}
METHODS = onnxprune.available_methods()
CALIB_SAMPLES = 64


# ---------------------------------------------------------------------------------------------
# Helpers


def prepare(
    tmp_path: Path, name: str, samples: int = CALIB_SAMPLES
) -> tuple[onnx.ModelProto, Path, Path]:
    """(model, model file, calibration .npz) for the builder ``name``."""
    model = BUILDERS[name]()
    model_path, calib = builders.save_with_calibration(
        model, tmp_path, samples, name=f"{name}.onnx"
    )
    return model, model_path, calib


def matrix_view(model: onnx.ModelProto, weight: str, value: np.ndarray) -> np.ndarray:
    """``value`` as the ``(out, K)`` matrix the layer reads: one row per output neuron/filter.

    Within a row the column order does not matter here (only per-row counts are taken).
    """
    node = next(n for n in model.graph.node if len(n.input) > 1 and n.input[1] == weight)
    if node.op_type == "MatMul":
        return value.T
    if node.op_type == "Gemm":
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        return value if attrs.get("transB", 0) else value.T
    assert node.op_type == "Conv", node.op_type
    return value.reshape(value.shape[0], -1)


def check_reported_sparsity(report: dict[str, Any], pruned: onnx.ModelProto, target: float) -> None:
    """The report's per-layer counts match the written weights, and the target is met.

    Every output row keeps at least ``min(K, min_row_weights)`` weights (the run's row floor,
    0 when the report has none). The prunable weights together reach ``target`` within one
    weight per row, or, when the floor leaves fewer prunable, exactly what it leaves. With
    per-layer selection (group row/layer), group allocation (not sensitivity, which moves the
    budget between layers) and no layer held back by the floor, every pruned layer is at
    ``target`` within one weight per row.
    """
    floor = int(report["arguments"].get("min_row_weights") or 0)
    weights = builders.stored_weights(pruned)
    counts = []  # (zeros, size, rows, most zeros the row floor allows)
    for layer in report["layers"]:
        name = layer["weight"]
        weight = weights[name]
        assert list(weight.shape) == layer["shape"], name
        nonzero = int(np.count_nonzero(weight))
        assert layer["nonzero_after"] == nonzero, name
        assert layer["params"] == weight.size, name
        assert layer["sparsity"] == pytest.approx(1.0 - nonzero / weight.size), name
        matrix = matrix_view(pruned, name, weight)
        rows, columns = matrix.shape
        keep_at_least = min(columns, floor)
        assert np.count_nonzero(matrix, axis=1).min() >= keep_at_least, name
        room = weight.size - rows * keep_at_least
        counts.append((weight.size - nonzero, weight.size, rows, room))
    assert counts, "no layer was pruned"
    zeros, sizes, rows, room = (np.array(column) for column in zip(*counts, strict=True))
    assert report["achieved_sparsity"] == pytest.approx(zeros.sum() / sizes.sum())
    expected_total = min(target * sizes.sum(), room.sum())
    assert abs(zeros.sum() - expected_total) <= rows.sum(), (zeros, sizes, room)
    held_back = room < target * sizes
    per_layer = report["arguments"]["allocation"] == "group"
    if report["group"] in ("row", "layer") and per_layer and not held_back.any():
        assert np.all(np.abs(zeros - target * sizes) <= rows), (zeros, sizes, rows)


def assert_fidelity(report: dict[str, Any], outputs: list[str]) -> None:
    fidelity = report["fidelity"]
    assert fidelity is not None
    assert fidelity["samples"] > 0
    assert [o["name"] for o in fidelity["outputs"]] == outputs
    for out in fidelity["outputs"]:
        assert -1.0 <= out["cosine"] <= 1.0 + 1e-9
        assert np.isfinite(out["max_abs_error"]) and out["max_abs_error"] >= 0.0


def replace_weight(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    """Set the initializer or Constant-node tensor ``name`` to ``value`` in place."""
    for tensor in model.graph.initializer:
        if tensor.name == name:
            tensor.CopyFrom(numpy_helper.from_array(value, name))
            return
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            for attr in node.attribute:
                if attr.name == "value":
                    attr.t.CopyFrom(numpy_helper.from_array(value, name))
                    return
    raise KeyError(name)


def node_structure(model: onnx.ModelProto) -> list[tuple[Any, ...]]:
    """Nodes without Constant payloads: (op, name, inputs, outputs, attributes)."""
    rows = []
    for node in model.graph.node:
        payload = node.op_type == "Constant"
        attrs = [] if payload else [a.SerializeToString() for a in node.attribute]
        rows.append((node.op_type, node.name, list(node.input), list(node.output), attrs))
    return rows


# ---------------------------------------------------------------------------------------------
# One full run per model


@pytest.mark.parametrize("name", list(BUILDERS))
def test_prune_model_end_to_end(cli: CliRunner, tmp_path: Path, name: str) -> None:
    model, model_path, calib = prepare(tmp_path, name)
    original_bytes = model_path.read_bytes()
    output = tmp_path / "out" / "pruned.onnx"
    output.parent.mkdir()
    report_path = tmp_path / "report.json"

    result = cli(
        model_path, "--calib", calib, "--sparsity", 0.5, "-o", output,
        "--report", report_path, "--json",
    )  # fmt: skip

    assert result.code == 0, result.err
    assert "error" not in result.err
    assert model_path.read_bytes() == original_bytes
    assert output.is_file()
    assert not list(output.parent.glob(".onnxprune-*"))
    onnx.checker.check_model(str(output), full_check=True)

    printed = json.loads(result.out)
    report = json.loads(report_path.read_text())
    assert printed == report
    assert report["status"] == "pruned"
    assert report["exit_code"] == 0
    assert report["target_sparsity"] == 0.5
    assert {layer["weight"] for layer in report["layers"]} == PRUNABLE[name]
    assert_fidelity(report, [o.name for o in model.graph.output])

    pruned = onnx.load(str(output))
    check_reported_sparsity(report, pruned, 0.5)

    feed = builders.random_inputs(model, 5, seed=7)
    expected = run_model(model_path, feed)
    got = run_model(output, feed)
    for a, b in zip(expected, got, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert np.isfinite(b).all()
        assert not np.array_equal(a, b), "a 50% pruned model should change the outputs"


@pytest.mark.parametrize("group", ["layer", "row"])
@pytest.mark.parametrize("name", list(BUILDERS))
def test_layer_and_row_groups_meet_target(
    cli: CliRunner, tmp_path: Path, name: str, group: str
) -> None:
    _, model_path, calib = prepare(tmp_path, name)
    output, report_path = tmp_path / "pruned.onnx", tmp_path / "report.json"

    result = cli(
        model_path, "--calib", calib, "--sparsity", 0.5, "--group", group, "--allocation",
        "group", "-o", output, "--report", report_path, "-q",
    )  # fmt: skip

    assert result.code == 0, result.err
    assert result.out == ""  # --quiet
    report = json.loads(report_path.read_text())
    assert report["group"] == group
    check_reported_sparsity(report, onnx.load(str(output)), 0.5)


# ---------------------------------------------------------------------------------------------
# Differential checks in onnxruntime


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(BUILDERS))
def test_zero_sparsity_changes_nothing(
    cli: CliRunner, tmp_path: Path, name: str, method: str
) -> None:
    model, model_path, calib = prepare(tmp_path, name)
    output = tmp_path / "pruned.onnx"
    report = run_and_report(cli, model_path, calib, output, "--sparsity", 0, "--method", method)
    assert report["nonzero_after"] == report["nonzero_before"]
    assert all(layer["nonzero_after"] == layer["nonzero_before"] for layer in report["layers"])
    before, after = builders.stored_weights(model), builders.stored_weights(onnx.load(str(output)))
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert after[key].dtype == value.dtype and np.array_equal(after[key], value), key

    feed = builders.random_inputs(model, 16, seed=3)
    for a, b in zip(run_model(model_path, feed), run_model(output, feed), strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_magnitude_only_zeroes_weights(cli: CliRunner, tmp_path: Path, name: str) -> None:
    """No compensation: the output is the input with some weight entries set to exactly 0."""
    model, model_path, calib = prepare(tmp_path, name)
    output = tmp_path / "pruned.onnx"
    args = ("--sparsity", 0.5, "--method", "magnitude")
    report = run_and_report(cli, model_path, calib, output, *args)
    nonzero_after = {layer["weight"]: layer["nonzero_after"] for layer in report["layers"]}
    pruned_names = set(nonzero_after)
    assert pruned_names == PRUNABLE[name]
    assert report["nonzero_after"] < report["nonzero_before"]
    pruned = onnx.load(str(output))
    assert node_structure(pruned) == node_structure(model)
    before, after = builders.stored_weights(model), builders.stored_weights(pruned)
    assert before.keys() == after.keys()
    expected = onnx.ModelProto()
    expected.CopyFrom(model)
    for key, old in before.items():
        new = after[key]
        assert new.dtype == old.dtype and new.shape == old.shape, key
        if key not in pruned_names:
            assert np.array_equal(new, old), key
            continue
        assert np.all((new == old) | (new == 0)), f"{key}: an entry changed to a non-zero value"
        assert np.count_nonzero(new) == nonzero_after[key], key
        replace_weight(expected, key, np.where(new == 0, 0, old).astype(old.dtype))

    expected_path = builders.save(expected, tmp_path / "expected.onnx")
    feed = builders.random_inputs(model, 16, seed=3)
    for a, b in zip(run_model(expected_path, feed), run_model(output, feed), strict=True):
        assert np.array_equal(a, b)


# Layers to leave alone so that only the last linear layer (no activation after it) is pruned.
ALL_BUT_LAST = {
    "mlp_gemm": ["^W0$", "^W1$"],
    "mlp_matmul": ["^W0$", "^W1$"],
    "constant_node_mlp": ["^W0$", "^W1$"],
    "fp16_mlp": ["^W0$", "^W1$"],
    "cnn_bn": ["^conv1_w$", "^dw_w$", "^pw_w$"],
    "shared_weight_mlp": ["^W_shared$"],
}
COMPENSATING = [m for m in METHODS if get_method(m).compensate is not None]


@pytest.mark.parametrize("name", list(ALL_BUT_LAST))
def test_bias_compensation_keeps_mean_output(cli: CliRunner, tmp_path: Path, name: str) -> None:
    """Pruning only the last (linear) layer with a compensating method keeps the mean output
    over the calibration samples; magnitude (no compensation) visibly shifts it."""
    assert COMPENSATING, "no method folds the pruned mean into the bias"
    model, model_path, calib = prepare(tmp_path, name)
    eval_data = builders.write_npz(tmp_path / "eval.npz", builders.random_inputs(model, 8, seed=9))
    with np.load(calib) as data:
        feed = {key: data[key] for key in data.files}
    reference = run_model(model_path, feed)[0].astype(np.float64)
    scale = float(np.abs(reference).mean())
    tolerance = (1e-3 if name == "fp16_mlp" else 1e-6) * scale  # float16 sums round early
    excludes = [arg for pattern in ALL_BUT_LAST[name] for arg in ("--exclude", pattern)]
    shifts = {}
    for method in [*COMPENSATING, "magnitude"]:
        output = tmp_path / f"{method}.onnx"
        # --eval: every calibration sample feeds the statistics (no held-out share).
        result = cli(
            model_path, "--calib", calib, "--eval", eval_data, "--sparsity", 0.5,
            "--method", method, "-o", output, "-q", *excludes,
        )  # fmt: skip
        assert result.code == 0, result.err
        pruned = run_model(output, feed)[0].astype(np.float64)
        assert not np.array_equal(pruned, reference), method
        shifts[method] = float(np.abs(pruned.mean(axis=0) - reference.mean(axis=0)).max())
    for method in COMPENSATING:
        assert shifts[method] <= tolerance, (method, shifts)
    assert shifts["magnitude"] > 100 * tolerance, shifts


# ---------------------------------------------------------------------------------------------
# Methods and patterns


@pytest.mark.parametrize("method", METHODS)
def test_every_method_prunes_cnn(cli: CliRunner, tmp_path: Path, method: str) -> None:
    model, model_path, calib = prepare(tmp_path, "cnn_bn")
    output, report_path = tmp_path / "pruned.onnx", tmp_path / "report.json"

    result = cli(
        model_path, "--calib", calib, "--sparsity", 0.5, "--method", method, "-o", output,
        "--report", report_path,
    )  # fmt: skip

    assert result.code == 0, result.err
    assert f"method {method}" in result.out
    onnx.checker.check_model(str(output), full_check=True)
    report = json.loads(report_path.read_text())
    assert report["method"] == method
    assert {layer["weight"] for layer in report["layers"]} == PRUNABLE["cnn_bn"]
    check_reported_sparsity(report, onnx.load(str(output)), 0.5)
    got = run_model(output, builders.random_inputs(model, 4, seed=5))
    assert got[0].shape == (4, 5) and np.isfinite(got[0]).all()


@pytest.mark.parametrize("method", METHODS)
def test_two_four_pattern_on_matmul(cli: CliRunner, tmp_path: Path, method: str) -> None:
    """MatMul B[K, N]: every 4 consecutive entries along K (axis 0) keep exactly 2."""
    model, model_path, calib = prepare(tmp_path, "mlp_matmul")
    output, report_path = tmp_path / "pruned.onnx", tmp_path / "report.json"

    result = cli(
        model_path, "--calib", calib, "--pattern", "2:4", "--method", method, "-o", output,
        "--report", report_path, "-q",
    )  # fmt: skip

    assert result.code == 0, result.err
    report = json.loads(report_path.read_text())
    assert report["pattern"] == "2:4"
    assert report["target_sparsity"] == 0.5
    before, after = builders.stored_weights(model), builders.stored_weights(onnx.load(str(output)))
    assert {layer["weight"] for layer in report["layers"]} == PRUNABLE["mlp_matmul"]
    for name in PRUNABLE["mlp_matmul"]:
        weight = after[name]
        k, n = weight.shape
        groups = weight.reshape(k // 4, 4, n)
        assert np.all(np.count_nonzero(groups, axis=1) == 2), name
        kept = weight != 0
        method_info = get_method(method)
        # Reconstruction (sparsegpt; contrib's default --update) re-fits what it keeps.
        if not (method_info.adaptive_mask or method_info.default_update):
            assert np.array_equal(weight[kept], before[name][kept]), name


def test_two_four_pattern_on_gemm_transposed(cli: CliRunner, tmp_path: Path) -> None:
    """Gemm transB=1 stores W[N, K]: the groups of 4 run along axis 1."""
    _, model_path, calib = prepare(tmp_path, "mlp_gemm")
    output = tmp_path / "pruned.onnx"

    result = cli(model_path, "--calib", calib, "--pattern", "2:4", "-o", output, "-q")

    assert result.code == 0, result.err
    after = builders.stored_weights(onnx.load(str(output)))
    for name in PRUNABLE["mlp_gemm"]:
        n, k = after[name].shape
        groups = after[name].reshape(n, k // 4, 4)
        assert np.all(np.count_nonzero(groups, axis=2) == 2), name


def test_two_four_keeps_layers_with_short_channel_runs_dense(
    cli: CliRunner, tmp_path: Path
) -> None:
    """cnn_bn: conv1 reads 3 channels, the depthwise conv 1 per filter: no group of 4 input
    channels exists, so 2:4 leaves them dense (and says so); the pointwise conv (8 channels) and
    the Gemm (16) keep exactly 2 of every 4 input channels at every kernel position."""
    model, model_path, calib = prepare(tmp_path, "cnn_bn")
    output = tmp_path / "pruned.onnx"
    result = cli(model_path, "--calib", calib, "--pattern", "2:4", "-o", output, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    skipped = {s["name"]: s["reason"] for s in report["skipped"]}
    assert (
        "kept dense under 2:4" in skipped["conv1"] and "kept dense under 2:4" in skipped["dwconv"]
    )
    assert {layer["weight"] for layer in report["layers"]} == {"pw_w", "fc_w"}
    assert abs(report["achieved_sparsity"] - 0.5) < 1e-9
    before, after = builders.stored_weights(model), builders.stored_weights(onnx.load(str(output)))
    assert np.array_equal(after["conv1_w"], before["conv1_w"])
    assert np.array_equal(after["dw_w"], before["dw_w"])
    pointwise = after["pw_w"]  # [Cout=16, Cin=8, 1, 1]: groups of 4 input channels
    assert np.all(np.count_nonzero(pointwise.reshape(16, 2, 4), axis=2) == 2)
    check = cli("check-pattern", output, "--json")
    assert check.code == 0, check.out
    rows = {layer["name"]: layer for layer in json.loads(check.out)["layers"]}
    assert rows["dwconv"]["not_applicable"] and rows["conv1"]["not_applicable"]
    assert rows["pwconv"]["ok"] and rows["pwconv"]["groups"] > 0
    assert "n/a (kept dense)" in cli("check-pattern", output).out


def test_digits_example_reports_accuracy(cli: CliRunner, tmp_path: Path) -> None:
    output = tmp_path / "digits.pruned.onnx"

    result = cli(
        EXAMPLE_CNN,
        "--calib", EXAMPLE_CALIB,
        "--eval", REPO / "calibration_data" / "digits_test.npz",
        "--sparsity", 0.5, "-o", output,
    )  # fmt: skip

    assert result.code == 0, result.err
    assert "accuracy: original" in result.out
    match = re.search(r"accuracy: original ([0-9.]+), pruned ([0-9.]+)", result.out)
    assert match is not None, result.out
    original, pruned = float(match.group(1)), float(match.group(2))
    assert original > 0.9  # the example is a trained digits classifier
    assert 0.0 <= pruned <= 1.0
    assert "450 --eval samples" in result.out
    onnx.checker.check_model(str(output), full_check=True)


# ---------------------------------------------------------------------------------------------
# Calibration data layouts


def _one_npz(directory: Path, x: np.ndarray) -> Path:
    return builders.write_npz(directory / "calib.npz", {"x": x})


def _npz_directory(directory: Path, x: np.ndarray) -> Path:
    folder = directory / "chunks"
    folder.mkdir()
    builders.write_npz(folder / "part0.npz", {"x": x[:32]})
    builders.write_npz(folder / "part1.npz", {"x": x[32:]})
    return folder


def _npy_directory(directory: Path, x: np.ndarray) -> Path:
    folder = directory / "arrays"
    folder.mkdir()
    np.save(folder / "x.npy", x)
    return folder


def _test_data_sets(directory: Path, x: np.ndarray) -> Path:
    folder = directory / "sets"
    for i in range(3):
        one = folder / f"test_data_set_{i}"
        one.mkdir(parents=True)
        tensor = numpy_helper.from_array(x[i : i + 1])
        (one / "input_0.pb").write_bytes(tensor.SerializeToString())
    return folder


def _stacked(directory: Path, x: np.ndarray) -> Path:
    # 20 complete feeds of batch 2 each: one more axis than the model's input.
    return builders.write_npz(directory / "stacked.npz", {"x": x[:40].reshape(20, 2, 16)})


LAYOUTS: dict[str, tuple[Callable[[Path, np.ndarray], Path], int]] = {
    "one-npz": (_one_npz, 64),
    "npz-directory": (_npz_directory, 64),
    "npy-directory": (_npy_directory, 64),
    "test-data-sets": (_test_data_sets, 3),
    "stacked-feeds": (_stacked, 20),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_calibration_layouts(cli: CliRunner, tmp_path: Path, layout: str) -> None:
    model = builders.mlp_gemm()
    model_path = builders.save(model, tmp_path / "model.onnx")
    x = builders.random_inputs(model, 64, seed=1)["x"]
    write, total = LAYOUTS[layout]
    calib = write(tmp_path, x)
    output = tmp_path / "pruned.onnx"

    result = cli(model_path, "--calib", calib, "--sparsity", 0.5, "-o", output, "--json")

    assert result.code == 0, result.err
    report = json.loads(result.out)
    verified = report["fidelity"]["samples"]
    if total >= 10:  # a held-out share verifies, the rest calibrates
        assert 0 < verified < total
        assert report["calibration_samples"] + verified == total
    else:  # too few to hold out: verification reuses the calibration samples
        assert report["calibration_samples"] == verified == total
    onnx.checker.check_model(str(output), full_check=True)


def test_npz_and_npy_layouts_prune_identically(cli: CliRunner, tmp_path: Path) -> None:
    model = builders.mlp_gemm()
    model_path = builders.save(model, tmp_path / "model.onnx")
    x = builders.random_inputs(model, 64, seed=1)["x"]
    results = []
    for write in (_one_npz, _npy_directory):
        output = tmp_path / f"{write.__name__}.onnx"
        result = cli(model_path, "--calib", write(tmp_path, x), "--sparsity", 0.5, "-o", output)
        assert result.code == 0, result.err
        results.append(builders.stored_weights(onnx.load(str(output))))
    assert results[0].keys() == results[1].keys()
    for key in results[0]:
        assert np.array_equal(results[0][key], results[1][key]), key


def test_unreachable_sparsity_is_not_silent(cli: CliRunner, tmp_path: Path) -> None:
    """A narrow MLP (K = 8 everywhere): if the request cannot be met, the report must say so."""
    model = builders.mlp_matmul(sizes=(8, 8, 4))
    model_path, calib = builders.save_with_calibration(model, tmp_path, 64, name="narrow.onnx")

    output = tmp_path / "narrow.pruned.onnx"

    result = cli(model_path, "--calib", calib, "--sparsity", 0.5, "-o", output, "--json")

    assert result.code == 0, result.err
    report = json.loads(result.out)
    params = report["prunable_params"]
    zeros = params - sum(layer["nonzero_after"] for layer in report["layers"])
    rows = sum(layer["shape"][1] for layer in report["layers"])  # MatMul B[K, N]: N rows
    if 0.5 * params - zeros > rows:  # more than one weight per row short of the request
        assert any("sparsity" in w.lower() for w in report["warnings"]), report["warnings"]


def test_model_without_prunable_layer_is_copied(cli: CliRunner, tmp_path: Path) -> None:
    model = builders.no_prunable()
    model_path, calib = builders.save_with_calibration(model, tmp_path, 16, name="plain.onnx")
    output = tmp_path / "plain.out.onnx"

    result = cli(model_path, "--calib", calib, "--sparsity", 0.5, "-o", output)

    assert result.code == 0, result.err
    assert "no prunable layer" in result.out
    assert output.read_bytes() == model_path.read_bytes()
    assert not list(tmp_path.glob(".onnxprune-*"))
