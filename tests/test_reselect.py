"""Re-choosing a fixed mask during the OBS update (``--reselect-mask``, ``reselect_block``)."""

from __future__ import annotations

import copy
from pathlib import Path

import builders
import numpy as np
import onnx
import pytest
from conftest import CliRunner, run_and_report
from ort_run import first_output

import onnxprune.reconstruct as module
from onnxprune.config import NMPattern, PruneConfig
from onnxprune.hessian import inverse_hessian_factor
from onnxprune.pipeline import Pruner
from onnxprune.reconstruct import reconstruct, reselect_block
from onnxprune.refit_final import refit_written


def test_reselect_block_keeps_each_rows_count_and_removes_the_lowest_saliency() -> None:
    rng = np.random.default_rng(0)
    block = rng.normal(size=(6, 4))  # [B, out]
    u_diag = rng.uniform(0.5, 2.0, size=6)
    previous = np.zeros((6, 4), dtype=bool)
    previous[:3, 0] = True  # row 0 removes 3, row 1 none, row 2 one, row 3 five
    previous[5, 2] = True
    previous[1:, 3] = True
    chosen = reselect_block(block, u_diag, previous)
    np.testing.assert_array_equal(chosen.sum(axis=0), previous.sum(axis=0))
    saliency = block.T**2 / u_diag[None, :] ** 2  # [out, B], SparseGPT's w^2 / [U]_jj^2
    for row in range(4):
        removed = np.sort(saliency[row][chosen[:, row]])
        np.testing.assert_allclose(removed, np.sort(saliency[row])[: previous[:, row].sum()])


def test_obs_reselection_of_an_nm_mask_is_sparsegpts_adaptive_nm() -> None:
    """Every row removes n of every m under any N:M mask, so re-choosing with SparseGPT's
    saliency must give exactly SparseGPT's own N:M selection and update."""
    x = builders.correlated_inputs(400, 32, 1)
    weight = np.random.default_rng(2).normal(size=(5, 32))
    factor = inverse_hessian_factor(x.T @ x, 400)
    pattern = NMPattern(2, 4)
    fixed = np.tile([True, True, False, False], (5, 8))  # any 2:4 mask
    ours, kept = reconstruct(weight, factor, fixed, pattern=pattern, reselect=True)
    theirs, adaptive = reconstruct(weight, factor, None, sparsity=0.5, pattern=pattern)
    np.testing.assert_array_equal(kept, adaptive)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    assert not np.array_equal(kept, fixed)


def test_reselection_keeps_every_rows_count_in_every_block(monkeypatch: pytest.MonkeyPatch) -> None:
    x = builders.correlated_inputs(600, 48, 3)
    weight = np.random.default_rng(4).normal(size=(8, 48))
    keep = np.abs(weight) >= np.quantile(np.abs(weight), 0.6, axis=1, keepdims=True)
    factor = inverse_hessian_factor(x.T @ x, 600)
    # three blocks, each re-chosen on weights the earlier ones updated
    monkeypatch.setattr(module, "BLOCK", 16)
    again, kept = reconstruct(weight, factor, keep, reselect=True)
    for start in range(0, 48, 16):
        part = slice(start, start + 16)
        np.testing.assert_array_equal(kept[:, part].sum(axis=1), keep[:, part].sum(axis=1))
    assert not np.array_equal(kept, keep)
    assert np.all(again[~kept] == 0) and np.all(again[kept] != 0)


@pytest.mark.parametrize("builder", ["mlp_gemm", "cnn_bn"])
def test_final_only_refit_equals_the_per_layer_refit_under_a_fixed_selection(
    tmp_path: Path, builder: str
) -> None:
    """With the selection fixed (row, no allocation) the masks do not depend on the re-fit,
    so re-fitting the written model afterwards (``refit_written``) must give the weights and
    outputs of ``--refit-steps`` applied inside ``prune_matrix``."""
    model = getattr(builders, builder)()
    path = builders.save(model, tmp_path / "m.onnx")
    feeds = builders.random_inputs(model, 200, seed=1)
    calib = builders.write_npz(tmp_path / "c.npz", feeds)
    built = {}
    for steps in (0, 20):
        config = PruneConfig(sparsity=0.6, group="row", allocation="group", refit_steps=steps)
        pruner = Pruner(path, calib, config, eval_data=calib)
        # Copied before the build: a run without re-fits drops each x^T x once its factor
        # is made (``StatisticsStage.factors``).
        stats = copy.deepcopy(dict(pruner.statistics()))
        candidate = pruner.build()
        if steps == 0:
            assert refit_written(candidate.model, pruner.layers, stats, config, 20)
        built[steps] = candidate.model
    after, inside = (builders.stored_weights(built[s]) for s in (0, 20))
    for name, value in inside.items():
        np.testing.assert_array_equal(after[name] == 0, value == 0)
        np.testing.assert_allclose(after[name], value, rtol=1e-3, atol=1e-4 * np.abs(value).max())
    runs = [first_output(m, feeds) for m in (built[0], built[20])]
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-3, atol=1e-3 * np.abs(runs[1]).max())


def test_cli_reselect_mask_prunes_to_the_same_counts_and_refuses_without_update(
    cli: CliRunner, tmp_path: Path
) -> None:
    """--reselect-mask keeps every row's number of kept weights (N:M: the pattern) and
    differs from the plain mask somewhere; without --update it is a one-line usage error."""
    model = builders.mlp_gemm()
    path, calib = builders.save_with_calibration(model, tmp_path, 200, name="m.onnx", calib="c.npz")
    stored = {}
    for flag in ("--no-reselect-mask", "--reselect-mask"):
        out = tmp_path / f"{flag}.onnx"
        run_and_report(cli, path, calib, out, "--pattern", "2:4", flag)
        stored[flag] = builders.stored_weights(onnx.load(str(out)))
    changed = False
    for name, plain in stored["--no-reselect-mask"].items():
        again = stored["--reselect-mask"][name]
        if plain.ndim != 2 or np.array_equal(plain, builders.stored_weights(model)[name]):
            continue  # not pruned (a bias, or a layer the pattern leaves dense)
        np.testing.assert_array_equal((again != 0).sum(), (plain != 0).sum())
        changed |= not np.array_equal(again != 0, plain != 0)
    assert changed
    result = cli(
        path, "--calib", calib, "-o", tmp_path / "x.onnx", "--sparsity", 0.5, "--no-update",
        "--reselect-mask",
    )  # fmt: skip
    assert result.code != 0 and "--reselect-mask" in result.err
    assert "Traceback" not in result.err and not (tmp_path / "x.onnx").exists()


def test_refit_final_option_refits_the_chosen_model_and_lowers_its_error(
    cli: CliRunner, tmp_path: Path
) -> None:
    """--refit-final keeps the default run's masks and lowers the output error on the
    calibration samples; bad values are one-line usage errors."""
    model = builders.mlp_gemm()
    path = builders.save(model, tmp_path / "m.onnx")
    feeds = builders.random_inputs(model, 200, seed=1)
    calib = builders.write_npz(tmp_path / "c.npz", feeds)
    outs = {}
    for steps in (0, 20):
        outs[steps] = tmp_path / f"r{steps}.onnx"
        run_and_report(cli, path, calib, outs[steps], "--sparsity", 0.7, "--refit-final", steps)
    plain, refitted = (builders.stored_weights(onnx.load(str(outs[s]))) for s in (0, 20))
    assert any(not np.array_equal(plain[n], refitted[n]) for n in plain)
    for name, value in plain.items():
        np.testing.assert_array_equal(value == 0, refitted[name] == 0)

    def error(output: Path) -> float:
        runs = [first_output(p, feeds) for p in (path, output)]
        return float(((runs[0] - runs[1]) ** 2).mean())

    assert error(outs[20]) < error(outs[0])
    for bad in (("--refit-final", -1), ("--refit-final", 5, "--sequential")):
        result = cli(path, "--calib", calib, "-o", tmp_path / "x.onnx", "--sparsity", 0.5, *bad)
        assert result.code != 0 and "--refit-final" in result.err
        assert "Traceback" not in result.err and not (tmp_path / "x.onnx").exists()
