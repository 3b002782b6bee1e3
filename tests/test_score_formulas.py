"""Every score against its formula, computed by hand on four samples of a 3 x 3 layer.

The statistics are built from explicit samples ``X`` [n=4, K=3] and blind-range gates ``G``
[n=4, out=3] the way calibration folds them (sums over samples); the expected scores are
written out from the definitions (module docstrings, docs/METHOD.md), sample by sample, not
through the vectorised code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from onnxprune.calibrate.stats import GatedMoments, InputMoments, LayerStats
from onnxprune.scoring import get_method

# W [out=3, K=3]; row 2 belongs to a neuron whose gate is never open on these samples.
W = np.array([[1.0, -2.0, 0.5], [-1.0, 3.0, 2.0], [4.0, -1.0, 1.0]])
# X [n=4, K=3]: column means [1, 1, 1], mean squares [3, 1.5, 2], variances [2, 0.5, 1].
X = np.array([[1.0, 0.0, 2.0], [3.0, 1.0, 0.0], [-1.0, 2.0, 2.0], [1.0, 1.0, 0.0]])
# G [n=4, out=3]: ReLU-style 0/1 gates (neuron 0 open on samples 0, 2, 3; neuron 1 on 1, 2).
G = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def _stats(gated: bool = True) -> LayerStats:
    inputs = InputMoments(
        count=float(len(X)), x_sum=X.sum(axis=0)[None], x_sq_sum=(X * X).sum(axis=0)[None]
    )
    g2 = G * G
    moments = GatedMoments(g2.sum(axis=0), g2.T @ X, g2.T @ (X * X)) if gated else None
    return LayerStats(inputs, moments, "relu" if gated else "none")


def _per_weight(formula: object) -> np.ndarray:
    return np.array([[formula(i, j) for j in range(3)] for i in range(3)])  # type: ignore[operator]


MEAN = [1.0, 1.0, 1.0]
MEAN_SQUARE = [3.0, 1.5, 2.0]
VARIANCE = [2.0, 0.5, 1.0]


def test_the_hand_statistics() -> None:
    assert np.allclose(X.mean(axis=0), MEAN)
    assert np.allclose((X * X).mean(axis=0), MEAN_SQUARE)
    assert np.allclose(X.var(axis=0), VARIANCE)


def test_magnitude() -> None:
    assert np.array_equal(get_method("magnitude").score(W, _stats()), np.abs(W))


def test_wanda() -> None:
    expected = _per_weight(lambda i, j: abs(W[i, j]) * math.sqrt(MEAN_SQUARE[j]))
    assert np.allclose(get_method("wanda").score(W, _stats()), expected)
    # One entry by hand: |3| * sqrt(1.5).
    assert get_method("wanda").score(W, _stats())[1, 1] == pytest.approx(3.674234614)


def test_ria() -> None:
    # |W| column sums [6, 6, 3.5], row sums [3.5, 6, 6]; the activation norm is the RMS
    # (a per-layer constant factor sqrt(n) away from the L2 norm: same order within a layer).
    columns, rows = np.abs(W).sum(axis=0), np.abs(W).sum(axis=1)
    assert np.allclose(columns, [6.0, 6.0, 3.5]) and np.allclose(rows, [3.5, 6.0, 6.0])
    expected = _per_weight(
        lambda i, j: (abs(W[i, j]) / columns[j] + abs(W[i, j]) / rows[i]) * MEAN_SQUARE[j] ** 0.25
    )
    assert np.allclose(get_method("ria").score(W, _stats()), expected)
    # (0, 0) by hand: (1/6 + 1/3.5) * 3^0.25.
    assert get_method("ria").score(W, _stats())[0, 0] == pytest.approx(0.5953668, rel=1e-6)


def test_stade_score_and_compensation() -> None:
    method = get_method("stade")
    expected = _per_weight(lambda i, j: W[i, j] ** 2 * VARIANCE[j])
    assert np.allclose(method.score(W, _stats()), expected)
    keep = np.array([[True, False, True], [False, True, False], [True, True, True]])
    # The pruned weights' mean contribution W_ij * E[x_j]: row 0 -2; row 1 -1 + 2; row 2 none.
    assert method.compensate is not None
    assert np.allclose(method.compensate(W, _stats(), keep), [-2.0, 1.0, 0.0])


def _visible_mean(i: int, value: object) -> float:
    """The mean of ``value(n)`` over the samples where neuron i is visible, weighted g^2."""
    weights = [G[n, i] ** 2 for n in range(len(X))]
    if sum(weights) == 0:
        return 0.0
    return sum(w * value(n) for n, w in enumerate(weights)) / sum(weights)  # type: ignore[operator]


def test_contrib_scores_the_spread_left_after_mean_compensation() -> None:
    # s_ij = E_g[(W_ij x_j - W_ij E[x_j])^2]: what removing the weight loses at the samples
    # where neuron i is visible, once its plain mean is in the bias.
    expected = _per_weight(
        lambda i, j: _visible_mean(i, lambda n: (W[i, j] * X[n, j] - W[i, j] * MEAN[j]) ** 2)
    )
    scores = get_method("contrib").score(W, _stats())
    assert np.allclose(scores[:2], expected[:2])
    # (0, 0) by hand: visible samples 0, 2, 3 give x = 1, -1, 1; (x - 1)^2 = 0, 4, 0 -> 4/3.
    assert scores[0, 0] == pytest.approx(4.0 / 3.0)
    # A neuron never visible (S0 = 0): mu = m2 = 0, so m2 - 2 mu c + c^2 leaves c^2 =
    # (W_ij E[x_j])^2, the squared mean the compensation moves, not the 0 that contrib.py's
    # docstring states (the contribution is never seen). Recorded as the code behaves today.
    assert np.allclose(scores[2], (W[2] * MEAN) ** 2)


def test_contrib_compensation_adds_the_plain_mean() -> None:
    method = get_method("contrib")
    keep = np.array([[False, True, True], [True, False, False], [True, True, False]])
    assert method.compensate is not None
    # Row 0: 1 * 1; row 1: 3 * 1 + 2 * 1; row 2: 1 * 1 (the plain mean, gate or not).
    assert np.allclose(method.compensate(W, _stats(), keep), [1.0, 5.0, 1.0])


def test_contrib_variants() -> None:
    second_moment = _per_weight(lambda i, j: _visible_mean(i, lambda n: (W[i, j] * X[n, j]) ** 2))
    assert np.allclose(get_method("contrib-nocomp").score(W, _stats()), second_moment)
    assert np.allclose(get_method("contrib-m2comp").score(W, _stats()), second_moment)
    spread = get_method("contrib").score(W, _stats())
    shares = spread / spread.sum(axis=1, keepdims=True)
    assert np.allclose(get_method("contrib-sumnorm").score(W, _stats()), shares)
    # Without a gate every sample counts: the spread is STADE's W^2 Var(x), the second moment
    # is Wanda's score squared.
    ungated = _stats(gated=False)
    assert np.allclose(
        get_method("contrib-nogate").score(W, ungated), get_method("stade").score(W, ungated)
    )
    assert np.allclose(
        get_method("contrib-plain").score(W, ungated), get_method("wanda").score(W, ungated) ** 2
    )
