"""Layer scores computed once per method and layer in a run (``Decisions.layer_scores``),
with the same model written as without the cache."""

from __future__ import annotations

from pathlib import Path

import builders
import numpy as np
import pytest

from onnxprune.calibrate.stats import LayerStats
from onnxprune.config import PruneConfig
from onnxprune.masking import select_masks
from onnxprune.pipeline import Pruner, decisions
from onnxprune.pipeline.matrices import selection_of
from onnxprune.scoring import ScoringMethod, get_method


def _build(tmp_path: Path, limit: int, thorough: bool = False) -> tuple[bytes, dict[str, int], int]:
    """The default run's model (``thorough``: with --thorough), computations per method (a
    computation replaces the last scores held), and the number of layers; scores kept up to
    ``limit`` bytes."""
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
        config = PruneConfig(sparsity=0.6, group="auto", thorough=thorough)
        pruner = Pruner(path, calib, config)
        candidate = pruner.build()
        return candidate.model.SerializeToString(), counts, len(pruner.layers)


@pytest.mark.parametrize("thorough", [False, True])
def test_each_layer_is_scored_once_per_method_and_the_model_is_unchanged(
    tmp_path: Path, thorough: bool
) -> None:
    cached, counts, layers = _build(tmp_path / "cached", decisions.SCORE_CACHE_BYTES, thorough)
    # The default (contrib, --group auto, sensitivity allocation): contrib's row and global
    # trials, its sensitivity curves and the re-allocated candidate share one computation
    # per layer; under --thorough, contrib-nocomp's trial computes its own (not kept).
    want = {"contrib": layers, "contrib-nocomp": layers} if thorough else {"contrib": layers}
    assert counts == want
    uncached, counts, _ = _build(tmp_path / "uncached", 0, thorough)
    assert counts["contrib"] > 2 * layers
    assert cached == uncached


def test_the_global_trials_shares_serve_the_sensitivity_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``group_shares``: each layer's share a selection removes, equal to a fresh
    ``select_masks``; the global selection made for --group auto's trial is not made again
    for the sensitivity allocation's base shares."""
    model = builders.mlp_matmul((16, 32, 32, 4), seed=5)
    path, calib = builders.save_with_calibration(model, tmp_path, 64)
    config = PruneConfig(sparsity=0.5, method="contrib", group="global", allocation="group")
    pruner = Pruner(path, calib, config)
    chosen = list(range(len(pruner.layers)))
    scorer = get_method("contrib")
    how = selection_of(config, "global")
    stats = pruner.statistics()
    scores = [
        scorer.score(pruner.matrices()[i], stats[x.weight_name])
        for i, x in enumerate(pruner.layers)
    ]
    want = [1.0 - float(mask.mean()) for mask in select_masks(scores, how, 0.5)]
    selections = []
    real = decisions.select_masks

    def counting(*args: object) -> list[np.ndarray]:
        selections.append(args)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(decisions, "select_masks", counting)
    pruner._shared_plans(config, scorer, "global", chosen, 0.5)  # the trial's selection
    assert len(selections) == 1
    assert pruner.group_shares(scorer, how, 0.5, chosen) == pytest.approx(want, abs=1e-12)
    assert len(selections) == 1, "the shares came from the trial's selection"
    assert pruner.group_shares(scorer, how, 0.6, chosen) != want
    assert len(selections) == 2
