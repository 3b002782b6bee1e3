"""Reconstruction (--update, sparsegpt) and padding-aware statistics."""

from __future__ import annotations

from pathlib import Path

import builders
import numpy as np
import onnx
import pytest
from calib_stats import layer_statistics

import onnxprune
from onnxprune.config import NMPattern
from onnxprune.hessian import inverse_hessian_factor, inverse_hessian_factors
from onnxprune.reconstruct import reconstruct, reconstruct_groups


def test_inverse_hessian_factor_is_the_upper_cholesky_factor_of_the_damped_inverse() -> None:
    x = builders.correlated_inputs(300, 24, 0)
    upper, dead = inverse_hessian_factor(x.T @ x, 300)
    hessian = 2 * x.T @ x / 300
    hessian += 0.01 * np.mean(np.diag(hessian)) * np.eye(24)
    assert np.allclose(upper, np.triu(upper)) and not dead.any()
    np.testing.assert_allclose(upper.T @ upper, np.linalg.inv(hessian), rtol=1e-8, atol=1e-10)


def test_blocked_update_equals_sequential_obs_with_explicit_inverses() -> None:
    """The Cholesky/block form must equal the textbook sequence: for column q, the OBS step
    over the not-yet-processed columns F = {q, ..., K-1} with (H_F)^-1 computed directly."""
    x = builders.correlated_inputs(500, 40, 9)
    weight = np.random.default_rng(10).normal(size=(3, 40))
    keep = np.abs(weight) > np.quantile(np.abs(weight), 0.5)
    import onnxprune.reconstruct as module

    block = module.BLOCK
    module.BLOCK = 16  # several blocks, so the between-block update is exercised
    try:
        updated, _ = reconstruct(weight, inverse_hessian_factor(x.T @ x, 500), keep)
    finally:
        module.BLOCK = block
    hessian = 2 * x.T @ x / 500
    hessian += 0.01 * np.mean(np.diag(hessian)) * np.eye(40)
    expected = weight.copy()
    for q in range(40):
        rest = list(range(q, 40))
        inverse = np.linalg.inv(hessian[np.ix_(rest, rest)])
        target = np.where(keep[:, q], expected[:, q], 0.0)
        error = (expected[:, q] - target) / inverse[0, 0]
        expected[:, rest] -= np.outer(error, inverse[0, :])
    np.testing.assert_allclose(updated, expected, atol=1e-10)


@pytest.mark.parametrize("sparsity", [0.5, 0.8])
def test_reconstruction_beats_plain_masking_on_the_layer_output(sparsity: float) -> None:
    rng = np.random.default_rng(1)
    # Inputs with a realistic, full-rank correlation structure.
    x = rng.normal(size=(2000, 64)) @ (np.eye(64) + 0.3 * rng.normal(size=(64, 64)))
    weight = rng.normal(size=(16, 64))
    factor = inverse_hessian_factor(x.T @ x, 2000)
    keep = np.abs(weight) > np.quantile(np.abs(weight), sparsity)
    updated, kept = reconstruct(weight, factor, keep)
    assert np.array_equal(kept, keep) and np.all(updated[~keep] == 0)
    plain_error = np.linalg.norm(x @ (weight * keep).T - x @ weight.T)
    updated_error = np.linalg.norm(x @ updated.T - x @ weight.T)
    assert updated_error < plain_error


def test_adaptive_mask_meets_the_sparsity_and_the_row_cap() -> None:
    x = builders.correlated_inputs(1000, 256, 3)
    weight = np.random.default_rng(4).normal(size=(8, 256))
    updated, keep = reconstruct(
        weight, inverse_hessian_factor(x.T @ x, 1000), None, 0.75, None, 0.9
    )
    assert (~keep).sum() == pytest.approx(0.75 * keep.size, abs=8)
    assert keep.sum(axis=1).min() >= int(0.1 * 256) - 2
    assert np.all(updated[~keep] == 0)


def test_adaptive_nm_pattern_keeps_n_of_every_m() -> None:
    x = builders.correlated_inputs(500, 32, 5)
    weight = np.random.default_rng(6).normal(size=(6, 32))
    updated, keep = reconstruct(
        weight, inverse_hessian_factor(x.T @ x, 500), None, pattern=NMPattern(2, 4)
    )
    assert (keep.reshape(6, 8, 4).sum(axis=2) == 2).all()
    assert np.all(updated[~keep] == 0)


def test_dead_inputs_keep_their_weights_and_do_not_break_the_factor() -> None:
    x = builders.correlated_inputs(400, 16, 7)
    x[:, 3] = 0.0
    weight = np.random.default_rng(8).normal(size=(4, 16))
    factor = inverse_hessian_factor(x.T @ x, 400)
    assert factor[1][3] and factor[1].sum() == 1
    updated, keep = reconstruct(weight, factor, np.ones_like(weight, dtype=bool))
    # A kept weight on an input never seen active stays as it was: the mask (and the row
    # floors behind it) decide what goes, never the data's silence.
    np.testing.assert_array_equal(updated[:, 3], weight[:, 3])
    assert keep.all()
    np.testing.assert_allclose(x @ updated.T, x @ weight.T, atol=1e-9)


def test_adaptive_selection_removes_dead_inputs_first() -> None:
    x = builders.correlated_inputs(400, 16, 7)
    x[:, [3, 9]] = 0.0
    weight = np.random.default_rng(8).normal(size=(4, 16)) * 10.0  # large, but unused
    updated, keep = reconstruct(weight, inverse_hessian_factor(x.T @ x, 400), sparsity=0.125)
    assert (~keep).sum() == 8
    assert not keep[:, [3, 9]].any()
    assert np.all(updated[~keep] == 0)


@pytest.mark.parametrize("builder", ["mlp_matmul", "transformer_block"])
def test_update_improves_fidelity_end_to_end(tmp_path: Path, builder: str) -> None:
    model = getattr(builders, builder)()
    path, calib = builders.save_with_calibration(
        model, tmp_path, 256, seed=0, name="m.onnx", calib="c.npz"
    )
    plain = onnxprune.prune(path, calib, sparsity=0.7, method="wanda", output=tmp_path / "a.onnx")
    updated = onnxprune.prune(
        path, calib, sparsity=0.7, method="wanda", update=True, output=tmp_path / "b.onnx"
    )
    assert plain.fidelity is not None and updated.fidelity is not None
    assert updated.fidelity.outputs[0].cosine > plain.fidelity.outputs[0].cosine
    assert updated.achieved_sparsity == plain.achieved_sparsity > 0.6
    onnx.checker.check_model(str(tmp_path / "b.onnx"), full_check=True)


def test_sparsegpt_method_runs_and_reconstructs(tmp_path: Path) -> None:
    model = builders.mlp_matmul()
    path, calib = builders.save_with_calibration(model, tmp_path, 256, name="m.onnx", calib="c.npz")
    report = onnxprune.prune(
        path, calib, sparsity=0.6, method="sparsegpt", output=tmp_path / "o.onnx"
    )
    assert report.fidelity is not None and report.fidelity.outputs[0].cosine > 0.8
    assert abs(report.achieved_sparsity - 0.6) < 0.02


def test_padding_is_left_out_of_the_statistics(tmp_path: Path) -> None:
    model = builders.masked_sequence_mlp()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 5, 8)).astype(np.float32)
    mask = (rng.random((6, 5)) > 0.4).astype(np.int64)
    x[mask == 0] = 100.0  # padding that would dominate the sums
    stats = layer_statistics(
        model, {"x": x, "attention_mask": mask}, tmp_path, 4, gated=False, hessian=True,
        sample_mask="attention_mask", name="c.npz",
    )[1]["w"]  # fmt: skip
    real = x[mask == 1].astype(np.float64)  # [tokens, 8]
    assert stats.inputs.count == real.shape[0]
    np.testing.assert_allclose(stats.inputs.x_sum[0], real.sum(0), rtol=1e-5)
    np.testing.assert_allclose(stats.inputs.x_sq_sum[0], (real**2).sum(0), rtol=1e-5)
    assert stats.inputs.xtx is not None
    np.testing.assert_allclose(stats.inputs.xtx[0], real.T @ real, rtol=1e-5, atol=1e-4)


def test_sample_mask_is_detected_and_reported(tmp_path: Path) -> None:
    model = builders.masked_sequence_mlp()
    path = builders.save(model, tmp_path / "m.onnx")
    rng = np.random.default_rng(2)
    np.savez(
        tmp_path / "c.npz",
        x=rng.normal(size=(40, 5, 8)).astype(np.float32),
        attention_mask=np.ones((40, 5), dtype=np.int64),
    )
    report = onnxprune.prune(path, tmp_path / "c.npz", sparsity=0.5, output=tmp_path / "o.onnx")
    assert report.sample_mask == "attention_mask"
    off = onnxprune.prune(
        path, tmp_path / "c.npz", sparsity=0.5, sample_mask="none", output=tmp_path / "p.onnx"
    )
    assert off.sample_mask is None
    with pytest.raises(onnxprune.UsageError, match="not a model input"):
        onnxprune.prune(path, tmp_path / "c.npz", sparsity=0.5, sample_mask="nope")


def test_batched_group_reconstruction_equals_one_group_at_a_time() -> None:
    """``reconstruct_groups`` (a depthwise conv's groups in one column walk) gives the same
    weights as ``reconstruct`` run on each group alone, dead inputs included."""
    rng = np.random.default_rng(7)
    groups, rows, columns = 5, 2, 9
    weights = rng.normal(size=(groups, rows, columns))
    factors = []
    for g in range(groups):
        x = rng.normal(size=(200, columns))
        x[:, g % columns] = 0.0  # one dead input per group
        factors.append(inverse_hessian_factor(x.T @ x, 200))
    keep = rng.random((groups, rows, columns)) > 0.5
    batched = reconstruct_groups(weights, factors, keep)
    for g in range(groups):
        alone, _ = reconstruct(weights[g], factors[g], keep[g])
        np.testing.assert_allclose(batched[g], alone, rtol=1e-10, atol=1e-12)
    assert np.all(batched[~keep] == 0.0)


def test_batched_factors_equal_the_per_group_ones() -> None:
    """``inverse_hessian_factors`` (one batched Cholesky; blocked triangular inverse for a
    wide layer) gives each group's ``inverse_hessian_factor``, dead inputs included."""
    rng = np.random.default_rng(4)
    for groups, width in [(12, 9), (1, 600)]:
        x = rng.standard_normal((groups, 3 * width, width))
        x[:, :, 2] = 0.0  # an input that is never on
        xtx = np.einsum("gnk,gnj->gkj", x, x)
        batched = inverse_hessian_factors(xtx, 3 * width)
        for g in range(groups):
            upper, dead = inverse_hessian_factor(xtx[g], 3 * width)
            np.testing.assert_allclose(batched[g][0], upper, rtol=1e-9, atol=1e-12)
            np.testing.assert_array_equal(batched[g][1], dead)
            assert dead[2] and dead.sum() == 1
