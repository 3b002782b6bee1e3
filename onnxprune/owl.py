"""Outlier-weighted layer-wise shares (OWL, Yin et al. 2024) as a prior for the sensitivity
allocation. An experiment (``OWL_PRIOR``), off by default: see BENCHMARKS.md, "Quality round 3,
the untried leads".

OWL counts, per layer, the share of weights whose Wanda score ``|W_ij| * ||x_j||`` exceeds
``M`` times the layer's mean score (its outlier ratio ``D_l``), and gives layers with more
outliers less sparsity: the ratios are rescaled linearly onto a band of width ``2 * lambda``
and shifted so the total number of removed weights is the requested one. Here the shift is
size-weighted (the paper's layers are equal-sized transformer blocks; ours are not) and the
shares respect each layer's cap (the row floor), the excess going to the others.
"""

from __future__ import annotations

import numpy as np

from .calibrate.stats import LayerStats
from .masking import floor_cap
from .scoring.wanda import wanda_score

# EXPERIMENT switch (benchmarks): replace the selection group's shares, the starting point of
# the sensitivity allocation, with OWL's.
OWL_PRIOR = False
# The paper's defaults for LLaMA: M = 5, lambda = 0.08.
OUTLIER_MULTIPLE = 5.0
BAND = 0.08


def outlier_ratio(score: np.ndarray, multiple: float = OUTLIER_MULTIPLE) -> float:
    """Share of a layer's entries whose score exceeds ``multiple`` times their mean."""
    flat = np.asarray(score, dtype=np.float64).ravel()
    mean = float(flat.mean()) if flat.size else 0.0
    if mean <= 0.0:
        return 0.0
    return float(np.count_nonzero(flat > multiple * mean)) / flat.size


def owl_shares(
    ratios: list[float],
    sizes: list[int],
    caps: list[float],
    sparsity: float,
    band: float = BAND,
) -> list[float]:
    """Per-layer sparsity: density ``(D_l - min D) / (max D - min D) * 2 band`` plus one shift
    chosen (by bisection) so that ``sum size_l * share_l = sparsity * sum size_l`` with every
    share clipped to ``[0, cap_l]``. Equal ratios give every layer the same share (the uniform
    allocation, capped). When the caps cannot hold the total, every layer gets its cap."""
    d = np.asarray(ratios, dtype=np.float64)
    n = np.asarray(sizes, dtype=np.float64)
    c = np.asarray(caps, dtype=np.float64)
    spread = float(d.max() - d.min()) if d.size else 0.0
    # Higher outlier ratio -> higher density -> lower sparsity: share = shift - offset.
    offset = (d - d.min()) / spread * 2.0 * band if spread > 0 else np.zeros_like(d)
    target = sparsity * float(n.sum())

    def removed(shift: float) -> float:
        return float(np.clip(shift - offset, 0.0, c) @ n)

    if removed(1.0 + 2.0 * band) <= target:
        return [float(x) for x in c]
    low, high = 0.0, 1.0 + 2.0 * band
    for _ in range(100):
        middle = (low + high) / 2.0
        if removed(middle) < target:
            low = middle
        else:
            high = middle
    return [float(x) for x in np.clip(high - offset, 0.0, c)]


def prior_shares(
    matrices: list[np.ndarray], stats: list[LayerStats], sparsity: float, min_row_weights: int
) -> list[float]:
    """``owl_shares`` of layers given as [out, K] matrices and their statistics, with the row
    floors' caps (``floor_cap``)."""
    ratios = [outlier_ratio(wanda_score(m, s)) for m, s in zip(matrices, stats, strict=True)]
    sizes = [m.size for m in matrices]
    caps = [floor_cap(m.shape[1], min_row_weights) for m in matrices]
    return owl_shares(ratios, sizes, caps, sparsity)
