"""Layer scores computed once per method and layer in a run (``Decisions.layer_scores``),
with the same model written as without the cache."""

from __future__ import annotations

from pathlib import Path

import builders
import numpy as np
import pytest

from onnxprune.calibrate.stats import LayerStats
from onnxprune.config import PruneConfig
from onnxprune.masking import Selection, select_masks
from onnxprune.pipeline import Pruner, decisions
from onnxprune.scoring import ScoringMethod


def _build(tmp_path: Path, limit: int) -> tuple[bytes, dict[str, int], int]:
    """The default run's model, computations per method (a computation replaces the last
    scores held), and the number of layers; scores kept up to ``limit`` bytes."""
    counts: dict[str, int] = {}
    real = decisions.Decisions.layer_scores

    def counting(
        self: decisions.Decisions, scorer: ScoringMethod, matrix: np.ndarray, stats: LayerStats
    ) -> np.ndarray:
        before = self._last_scores
        scores = real(self, scorer, matrix, stats)
        computed = self._last_scores is not before
        counts[scorer.name] = counts.get(scorer.name, 0) + int(computed)
        return scores

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decisions, "SCORE_CACHE_BYTES", limit)
        patch.setattr(decisions.Decisions, "layer_scores", counting)
        model = builders.mlp_matmul((16, 32, 32, 32, 4), seed=4)
        tmp_path.mkdir()
        path = builders.save(model, tmp_path / "model.onnx")
        inputs = builders.random_inputs(model, 96, seed=1)
        calib = builders.write_npz(tmp_path / "calib.npz", inputs)
        pruner = Pruner(path, calib, PruneConfig(sparsity=0.6, group="auto"))
        candidate = pruner.build()
        return candidate.model.SerializeToString(), counts, len(pruner.layers)


def test_each_layer_is_scored_once_per_method_and_the_model_is_unchanged(
    tmp_path: Path,
) -> None:
    cached, counts, layers = _build(tmp_path / "cached", decisions.SCORE_CACHE_BYTES)
    # The default (contrib, --group auto, sensitivity allocation): contrib's row and global
    # trials, its sensitivity curves and the re-allocated candidate share one computation
    # per layer; contrib-nocomp's trial computes its own (not kept).
    assert counts == {"contrib": layers, "contrib-nocomp": layers}
    uncached, counts, _ = _build(tmp_path / "uncached", 0)
    assert counts["contrib"] > 2 * layers
    assert cached == uncached


def test_a_selection_over_the_same_scores_is_made_once(tmp_path: Path) -> None:
    """``selected_masks`` hands back the masks it made for the same score arrays, selection
    and target (the global trial and the sensitivity base shares), equal to a fresh
    ``select_masks``, read-only; other scores or targets select again."""
    model = builders.mlp_matmul((16, 32, 32, 4), seed=5)
    path, calib = builders.save_with_calibration(model, tmp_path, 64)
    pruner = Pruner(path, calib, PruneConfig(sparsity=0.5))
    rng = np.random.default_rng(0)
    scores = [rng.random((32, 16)), rng.random((32, 32)), rng.random((4, 32))]
    how = Selection("global", min_row_weights=1)
    first = pruner.selected_masks(scores, how, 0.5)
    again = pruner.selected_masks(list(scores), how, 0.5)
    assert again is first
    for got, want in zip(first, select_masks(scores, how, 0.5), strict=True):
        np.testing.assert_array_equal(got, want)
        assert not got.flags.writeable
    copies = [s.copy() for s in scores]
    assert pruner.selected_masks(copies, how, 0.5) is not first, "other arrays: selected anew"
    assert pruner.selected_masks(scores, how, 0.6) is not first
    # The two latest selections are kept: the first one has now been replaced.
    assert pruner.selected_masks(scores, how, 0.5) is not first
