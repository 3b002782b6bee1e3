"""Per-channel statistics correction (--stat-correction) and the support re-fit."""

from __future__ import annotations

from pathlib import Path

import builders
import numpy as np
import onnx
import pytest
from ort_run import first_output

import onnxprune
from onnxprune.correction import (
    MAX_SCALE,
    damped_hessians,
    refit_on_support,
    row_variances,
    stat_correct,
)


def _inputs(samples: int, columns: int, seed: int) -> np.ndarray:
    """Correlated inputs with a non-zero mean, (samples, K)."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(columns, columns))
    return rng.normal(size=(samples, columns)) @ mix + rng.uniform(-2, 3, size=columns)


def test_stat_correct_matches_a_hand_computation_on_the_samples() -> None:
    """Scale and bias against numpy's mean and variance of the layer outputs themselves."""
    x = _inputs(400, 10, 0)  # (N, K)
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(6, 10))
    bias = rng.normal(size=6)
    pruned = np.where(rng.random((6, 10)) > 0.3, weight * 0.9, 0.0)
    corrected, delta = stat_correct(weight, pruned, x.mean(0)[None], (x.T @ x)[None], 400)

    dense_out = x @ weight.T + bias  # (N, out)
    pruned_out = x @ pruned.T + bias
    scale = np.clip(np.sqrt(dense_out.var(0) / pruned_out.var(0)), 1 / MAX_SCALE, MAX_SCALE)
    np.testing.assert_allclose(corrected, pruned * scale[:, None], rtol=1e-5)
    assert np.all(corrected[pruned == 0] == 0)
    # The bias change is from the original bias: the corrected layer's mean is the dense one.
    out = x @ corrected.T + bias + delta
    np.testing.assert_allclose(out.mean(0), dense_out.mean(0), atol=1e-6)
    unclipped = (scale > 1 / MAX_SCALE) & (scale < MAX_SCALE)
    assert unclipped.sum() >= 3  # the case this test is about
    np.testing.assert_allclose(out.std(0)[unclipped], dense_out.std(0)[unclipped], rtol=1e-4)


def test_conv_groups_read_their_own_statistics() -> None:
    """Two groups: rows 0-2 read group 0's inputs, rows 3-5 group 1's."""
    xs = [_inputs(300, 5, 2), 3.0 * _inputs(300, 5, 3)]
    rng = np.random.default_rng(4)
    weight = rng.normal(size=(6, 5))
    pruned = np.where(rng.random((6, 5)) > 0.5, weight, 0.0)
    mean = np.stack([x.mean(0) for x in xs])
    xtx = np.stack([x.T @ x for x in xs])
    corrected, delta = stat_correct(weight, pruned, mean, xtx, 300)
    for g, x in enumerate(xs):
        rows = slice(3 * g, 3 * g + 3)
        one, one_delta = stat_correct(
            weight[rows], pruned[rows], mean[g : g + 1], xtx[g][None], 300
        )
        np.testing.assert_allclose(corrected[rows], one, rtol=1e-6)
        np.testing.assert_allclose(delta[rows], one_delta, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(
            row_variances(weight[rows], mean[g : g + 1], xtx[g][None], 300),
            (x @ weight[rows].T).var(0),
            rtol=1e-4,
        )


def test_collapsed_and_emptied_rows_are_clipped_or_left_alone() -> None:
    x = _inputs(200, 8, 5)
    weight = np.random.default_rng(6).normal(size=(3, 8))
    pruned = weight.copy()
    pruned[0] = 0.0  # every weight gone: nothing to scale, the bias keeps the mean
    pruned[1, 1:] = 0.0
    pruned[1, 0] *= 1e-3  # almost nothing left: the scale stops at MAX_SCALE
    corrected, delta = stat_correct(weight, pruned, x.mean(0)[None], (x.T @ x)[None], 200)
    assert np.all(corrected[0] == 0)
    np.testing.assert_allclose(delta[0], weight[0] @ x.mean(0))
    np.testing.assert_allclose(corrected[1], pruned[1] * MAX_SCALE)
    np.testing.assert_allclose(corrected[2], weight[2], rtol=1e-5)  # unpruned: scale 1
    np.testing.assert_allclose(delta[2], 0.0, atol=1e-5)


def test_support_refit_reaches_the_least_squares_solution_on_the_support() -> None:
    x = _inputs(300, 12, 7)
    rng = np.random.default_rng(8)
    weight = rng.normal(size=(5, 12))
    keep = rng.random((5, 12)) > 0.5
    hessian = damped_hessians(x.mean(0)[None], (x.T @ x)[None], 300, centered=False)
    refit = refit_on_support(weight, np.where(keep, weight, 0.0), keep, hessian, steps=40)
    assert np.all(refit[~keep] == 0)
    for i in range(5):
        s = keep[i]
        exact = np.linalg.solve(hessian[0][np.ix_(s, s)], hessian[0][s] @ weight[i])
        np.testing.assert_allclose(refit[i, s], exact, rtol=1e-6, atol=1e-8)


def _with_output(path: Path, name: str, tmp_path: Path, tag: str) -> Path:
    exposed = builders.with_outputs(onnx.load(str(path)), [name], elem=None)
    return builders.save(exposed, tmp_path / f"{tag}.onnx")


@pytest.mark.parametrize(
    ("method", "stat_correction"), [("contrib", True), ("contrib", False), ("wanda", True)]
)
def test_first_conv_channels_keep_their_dense_moments_end_to_end(
    tmp_path: Path, method: str, stat_correction: bool
) -> None:
    """The first layer reads the model input, so its corrected output channels must have the
    dense conv's mean and standard deviation over the calibration images (all positions,
    padding included) in onnxruntime; without the correction the spread is lost."""
    model = builders.cnn_bn()
    path = builders.save(model, tmp_path / "m.onnx")
    feeds = builders.random_inputs(model, 64, seed=0)
    calib = builders.write_npz(tmp_path / "c.npz", feeds)
    out = tmp_path / "p.onnx"
    onnxprune.prune(
        path,
        calib,
        sparsity=0.6,
        method=method,
        output=out,
        eval_data=calib,  # every sample calibrates
        stat_correction=stat_correction,
        group="row",
        allocation="group",
    )
    channels = []
    for source, tag in ((path, "dense"), (out, "pruned")):
        probe = _with_output(source, "c1", tmp_path, tag)
        c1 = first_output(probe, feeds, "c1")  # (N, 8, H, W); a bias Add may follow the Conv
        channels.append(c1.transpose(1, 0, 2, 3).reshape(8, -1).astype(np.float64))
    dense, pruned = channels
    weight = onnx.numpy_helper.to_array(
        next(t for t in onnx.load(str(out)).graph.initializer if t.name == "conv1_w")
    )
    assert float((weight == 0).mean()) > 0.5  # pruned (the dense depthwise conv gives more)
    np.testing.assert_allclose(pruned.mean(1), dense.mean(1), atol=1e-4)
    ratio = pruned.std(1) / dense.std(1)
    if stat_correction:
        np.testing.assert_allclose(ratio, 1.0, rtol=1e-3)
    else:
        assert ratio.min() < 0.99


def test_refit_steps_lower_the_layer_error_after_the_update() -> None:
    """prune_matrix with --refit-steps: same mask, smaller output error (with the bias
    change) on the calibration inputs than the OBS update alone."""
    from onnxprune.calibrate.stats import InputMoments, LayerStats
    from onnxprune.config import PruneConfig
    from onnxprune.pipeline import _inverse_factors, prune_matrix
    from onnxprune.scoring import get_method

    x = _inputs(500, 32, 9)
    weight = np.random.default_rng(10).normal(size=(16, 32))
    moments = InputMoments(500.0, x.sum(0)[None], (x * x).sum(0)[None], (x.T @ x)[None])
    stats = LayerStats(moments, None, "none")
    keep = np.abs(weight) > np.quantile(np.abs(weight), 0.7)
    factors = _inverse_factors(stats)
    errors = []
    for steps in (0, 20):
        config = PruneConfig(sparsity=0.7, update=True, refit_steps=steps)
        scorer = get_method("contrib")
        pruned, delta, problem = prune_matrix(weight, keep, stats, scorer, config, 0.7, factors)
        assert problem is None and delta is not None
        assert np.all(pruned[~keep] == 0)
        errors.append(float(((x @ (weight - pruned).T - delta) ** 2).mean()))
    assert errors[1] < 0.9 * errors[0]


def test_repairs_refuse_what_they_cannot_do() -> None:
    from onnxprune.config import PruneConfig
    from onnxprune.errors import UsageError

    with pytest.raises(UsageError, match="--refit-steps"):
        PruneConfig(sparsity=0.5, method="wanda", refit_steps=5)
    with pytest.raises(UsageError, match="--refit-steps"):
        PruneConfig(sparsity=0.5, refit_steps=-1)
    assert PruneConfig(sparsity=0.5, method="sparsegpt", refit_steps=5).refit_steps == 5
    with pytest.raises(UsageError, match="--stat-correction"):
        PruneConfig(sparsity=0.5, sequential=True, update_target="dense", stat_correction=True)


def test_recipe_replays_the_repairs_and_old_recipes_replay_without_them(tmp_path: Path) -> None:
    import json

    model = builders.mlp_matmul()
    path, calib = builders.save_with_calibration(
        model, tmp_path, 128, seed=2, name="m.onnx", calib="c.npz"
    )
    first = tmp_path / "a.onnx"
    onnxprune.prune(path, calib, sparsity=0.6, output=first, stat_correction=True, refit_steps=5)
    recipe = json.loads((tmp_path / "a.onnx.recipe.json").read_text())
    assert recipe["stat_correction"] is True and recipe["refit_steps"] == 5
    replay = tmp_path / "b.onnx"
    onnxprune.prune(path, calib, output=replay, recipe=tmp_path / "a.onnx.recipe.json")
    assert replay.read_bytes() == first.read_bytes()
    # The same decisions without the repairs, stated outright and left out (an older recipe).
    (tmp_path / "off.json").write_text(
        json.dumps({**recipe, "stat_correction": False, "refit_steps": 0})
    )
    plain = tmp_path / "c.onnx"
    onnxprune.prune(path, calib, output=plain, recipe=tmp_path / "off.json")
    older = {k: v for k, v in recipe.items() if k not in ("stat_correction", "refit_steps")}
    (tmp_path / "old.json").write_text(json.dumps(older))
    again = tmp_path / "d.onnx"
    onnxprune.prune(path, calib, output=again, recipe=tmp_path / "old.json")
    assert again.read_bytes() == plain.read_bytes() != first.read_bytes()
