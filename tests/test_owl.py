"""OWL's outlier-weighted layer shares (the experiment behind ``onnxprune.owl.OWL_PRIOR``)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.owl import outlier_ratio, owl_shares


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
