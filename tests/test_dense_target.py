"""update_target "dense": --sequential --update fits the dense model's outputs (issue 6)."""

from __future__ import annotations

import json
from pathlib import Path

import builders
import numpy as np
import onnx
import pytest
from calib_stats import layer_statistics
from conftest import CliRunner
from onnx import numpy_helper
from ort_run import intermediates

import onnxprune
from onnxprune.config import PruneConfig
from onnxprune.errors import EXIT_USAGE, UsageError
from onnxprune.hessian import inverse_hessian_factor
from onnxprune.pipeline import Pruner
from onnxprune.reconstruct import refit_to_reference


def _tensors(model: onnx.ModelProto, names: list[str], feed: dict[str, np.ndarray]) -> list:
    """The named intermediate tensors of ``model`` on ``feed``, as float64."""
    return [v.astype(np.float64) for v in intermediates(model, feed, names)]


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float64) for k, v in builders.stored_weights(model).items()}


def test_refit_to_reference_is_the_damped_least_squares_fit() -> None:
    rng = np.random.default_rng(0)
    x_ref = rng.normal(size=(500, 12))
    x = x_ref + 0.3 * rng.normal(size=(500, 12))  # corrupted inputs
    weight = rng.normal(size=(5, 12))
    factor = inverse_hessian_factor(x.T @ x, 500)
    fitted = refit_to_reference(weight, x_ref.T @ x, 500, factor)
    hessian = 2 * x.T @ x / 500
    damped = hessian + 0.01 * np.mean(np.diag(hessian)) * np.eye(12)
    expected = weight @ (2 * x_ref.T @ x / 500) @ np.linalg.inv(damped)
    np.testing.assert_allclose(fitted, expected, rtol=1e-8, atol=1e-10)
    # Closer to the dense outputs than the weight itself on the corrupted inputs.
    target = x_ref @ weight.T
    assert np.linalg.norm(target - x @ fitted.T) < np.linalg.norm(target - x @ weight.T)


def test_cross_statistics_pair_dense_and_pruned_inputs_on_real_tokens(tmp_path: Path) -> None:
    dense = builders.masked_sequence_mlp(hidden=6)
    pruned = onnx.ModelProto()
    pruned.CopyFrom(dense)
    w1 = numpy_helper.to_array(pruned.graph.initializer[0]).copy()
    w1[np.abs(w1) < np.median(np.abs(w1))] = 0.0
    pruned.graph.initializer[0].CopyFrom(numpy_helper.from_array(w1, "w1"))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 5, 8)).astype(np.float32)
    mask = (rng.random((7, 5)) > 0.4).astype(np.int64)
    x[mask == 0] = 100.0  # padding that would dominate the sums
    arrays = {"x": x, "attention_mask": mask}
    _, stats = layer_statistics(
        pruned, arrays, tmp_path, 3, gated=False, hessian=True, sample_mask="attention_mask",
        reference=dense, name="c.npz",
    )  # fmt: skip
    feed = {"x": x, "attention_mask": mask}
    (h_dense,) = _tensors(dense, ["h"], feed)
    (h_pruned,) = _tensors(pruned, ["h"], feed)
    real = mask == 1
    x_ref, x_hat = h_dense[real], h_pruned[real]  # [tokens, 6]
    second = stats["w2"].inputs
    assert second.cross is not None and second.ref_sum is not None
    assert second.count == real.sum()
    np.testing.assert_allclose(second.cross[0], x_ref.T @ x_hat, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(second.ref_sum[0], x_ref.sum(0), rtol=1e-5, atol=1e-3)
    assert second.xtx is not None
    np.testing.assert_allclose(second.xtx[0], x_hat.T @ x_hat, rtol=1e-5, atol=1e-3)
    # The first layer reads the graph input: dense and pruned inputs are the same tensor.
    first = stats["w1"].inputs
    assert first.cross is not None and first.xtx is not None
    np.testing.assert_allclose(first.cross, first.xtx, rtol=1e-6)


def test_conv_cross_statistics_equal_the_correlation_for_the_same_model(tmp_path: Path) -> None:
    """im2col path: with the model as its own reference, sum x_ref x^T is sum x x^T."""
    model = builders.cnn_bn()
    layers, stats = layer_statistics(
        model, builders.random_inputs(model, 20, seed=2), tmp_path, 8, gated=False,
        hessian=True, reference=model, name="c.npz",
    )  # fmt: skip
    ops = {layer.op.op_type for layer in layers}
    assert "Conv" in ops
    for layer in layers:
        inputs = stats[layer.weight_name].inputs
        assert inputs.cross is not None and inputs.xtx is not None, layer.name
        assert inputs.ref_sum is not None
        np.testing.assert_allclose(inputs.cross, inputs.xtx, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(inputs.ref_sum, inputs.x_sum, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ["contrib", "sparsegpt"])
def test_dense_target_fits_the_dense_outputs_better(tmp_path: Path, method: str) -> None:
    """Three Gemm layers, one per stage. The first stage is pruned the same way under both
    targets; for the second layer, the dense-target fit W' (with its bias) reproduces the dense
    model's pre-activations W x + b from the pruned upstream's inputs x' better than the
    default fit does, on the calibration samples."""
    model = builders.mlp_gemm((16, 48, 48, 6), seed=3)
    path = builders.save(model, tmp_path / "m.onnx")
    data = builders.random_inputs(model, 400, seed=4)
    calib = builders.write_npz(tmp_path / "c.npz", data)
    built = {}
    for target in ("pruned", "dense"):
        config = PruneConfig(
            sparsity=0.7, method=method, update=method == "contrib", sequential=True,
            update_target=target, holdout_fraction=0.0,
        )  # fmt: skip
        pruner = Pruner(path, calib, config)
        assert [len(s) for s in pruner.stages()] == [1, 1, 1]
        built[target] = pruner.build().model
        if target == "dense":
            assert pruner.stage_statistics["W0"].inputs.cross is None  # stage 1: nothing upstream
            assert pruner.stage_statistics["W1"].inputs.cross is not None
        else:
            assert all(s.inputs.cross is None for s in pruner.stage_statistics.values())
    original = _weights(model)
    weights = {t: _weights(m) for t, m in built.items()}
    np.testing.assert_array_equal(weights["pruned"]["W0"], weights["dense"]["W0"])
    (x_dense,) = _tensors(model, ["h0"], data)
    (x_hat,) = _tensors(built["dense"], ["h0"], data)  # same W0 under both targets
    target = x_dense @ original["W1"].T + original["b1"]
    errors = {t: np.linalg.norm(target - (x_hat @ w["W1"].T + w["b1"])) for t, w in weights.items()}
    assert errors["dense"] < errors["pruned"], errors
    # Same share of weights removed under both targets.
    for name in ("W1", "W2"):
        assert np.count_nonzero(weights["dense"][name]) == np.count_nonzero(weights["pruned"][name])


def test_default_target_is_pruned_and_leaves_the_recipe_alone(tmp_path: Path) -> None:
    model = builders.mlp_matmul()
    path, calib = builders.save_with_calibration(model, tmp_path, 96, name="m.onnx", calib="c.npz")
    assert PruneConfig(sparsity=0.5).update_target == "pruned"
    outputs = {}
    for name, target in (("default", None), ("pruned", "pruned"), ("dense", "dense")):
        out = tmp_path / f"{name}.onnx"
        fields = {} if target is None else {"update_target": target}
        config = PruneConfig(sparsity=0.6, update=True, sequential=True, **fields)
        onnxprune.prune(path, calib, output=out, config=config)
        outputs[name] = out.read_bytes()
        recipe = json.loads(Path(str(out) + ".recipe.json").read_text())
        assert ("update_target" in recipe) == (target == "dense")
        if target == "dense":
            replayed = tmp_path / "replayed.onnx"
            onnxprune.prune(path, calib, output=replayed, recipe=Path(str(out) + ".recipe.json"))
            assert replayed.read_bytes() == out.read_bytes()
    assert outputs["default"] == outputs["pruned"]
    assert outputs["dense"] != outputs["pruned"]


def test_unknown_update_target_or_one_shot_dense_is_refused() -> None:
    with pytest.raises(UsageError, match="--update-target must be one of pruned, dense"):
        PruneConfig(sparsity=0.5, update_target="teacher")
    with pytest.raises(UsageError, match="needs --sequential"):
        PruneConfig(sparsity=0.5, update=True, update_target="dense")


def test_cli_update_target(cli: CliRunner, tmp_path: Path) -> None:
    model = builders.transformer_block()
    path, calib = builders.save_with_calibration(model, tmp_path, 96, name="m.onnx", calib="c.npz")
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    args = [path, "--calib", calib, "--sparsity", 0.6, "--update", "-q", "-o", out]
    refused = cli(*args, "--update-target", "dense")
    assert refused.code == EXIT_USAGE and "needs --sequential" in refused.err
    result = cli(*args, "--sequential", "--update-target", "dense", "--report", report)
    assert result.code == 0, result.err
    data = json.loads(report.read_text())
    assert data["calibration_passes"] == data["stages"] == 4
    assert abs(data["achieved_sparsity"] - 0.6) < 0.01
    onnx.checker.check_model(str(out), full_check=True)
    recipe = json.loads(Path(str(out) + ".recipe.json").read_text())
    assert recipe["update_target"] == "dense"
