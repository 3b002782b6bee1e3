"""OWL's outlier-weighted layer shares (the experiment behind ``onnxprune.owl.OWL_PRIOR``)."""

from __future__ import annotations

from pathlib import Path

import builders
import numpy as np
import pytest

from onnxprune import owl
from onnxprune.config import PruneConfig
from onnxprune.owl import outlier_ratio, owl_shares
from onnxprune.pipeline import Pruner
from onnxprune.scoring import get_method


def test_outlier_ratio_counts_scores_above_multiple_of_mean() -> None:
    score = np.ones(100)
    score[:2] = 1000.0  # mean ~ 20.98: only these two exceed 5x the mean
    assert outlier_ratio(score, 5.0) == pytest.approx(0.02)
    assert outlier_ratio(np.zeros(10)) == 0.0


def test_more_outliers_get_less_sparsity_and_the_total_holds() -> None:
    sizes = [100, 300, 200]
    shares = owl_shares([0.01, 0.05, 0.03], sizes, [1.0, 1.0, 1.0], 0.6, band=0.08)
    assert shares[1] < shares[2] < shares[0]
    assert shares[0] - shares[1] == pytest.approx(0.16)  # the whole band 2 * lambda
    assert np.dot(shares, sizes) == pytest.approx(0.6 * sum(sizes))


def test_caps_hold_and_the_rest_is_taken_elsewhere() -> None:
    sizes = [100, 100, 100]
    shares = owl_shares([0.0, 0.02, 0.01], sizes, [0.3, 1.0, 1.0], 0.7, band=0.08)
    assert shares[0] == pytest.approx(0.3)
    assert np.dot(shares, sizes) == pytest.approx(0.7 * 300)
    # Equal ratios: the uniform share.
    assert owl_shares([0.1, 0.1], [5, 7], [1.0, 1.0], 0.5) == pytest.approx([0.5, 0.5])


def test_owl_prior_is_where_the_sensitivity_curves_are_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the switch on, the sensitivity allocation starts from ``prior_shares`` (the base
    each curve is measured around), and the total removed is unchanged."""
    model = builders.mlp_matmul(seed=3)
    path, calib = builders.save_with_calibration(model, tmp_path, 64)
    config = PruneConfig(sparsity=0.6)
    pruner = Pruner(path, calib, config)
    chosen = list(range(len(pruner.layers)))
    stats = pruner.statistics()
    matrices = [pruner.matrices()[i] for i in chosen]
    expected = owl.prior_shares(
        matrices, [stats[pruner.layers[i].weight_name] for i in chosen], 0.6, 8
    )
    seen: list[list[float]] = []
    original = Pruner.sensitivity_curves

    def spy(self: Pruner, *args: object) -> object:
        seen.append(list(args[2]))  # type: ignore[call-overload]
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Pruner, "sensitivity_curves", spy)
    scorer = get_method("contrib")
    off = pruner.sensitivity_targets(config, chosen, 0.6, scorer, "row")
    monkeypatch.setattr(owl, "OWL_PRIOR", True)
    on = pruner.sensitivity_targets(config, chosen, 0.6, scorer, "row")
    assert seen[1] == pytest.approx(expected)
    assert seen[0] != pytest.approx(expected)  # the group's own shares differ from OWL's
    sizes = [m.size for m in matrices]
    assert np.dot(on, sizes) == pytest.approx(np.dot(off, sizes), rel=1e-6)
