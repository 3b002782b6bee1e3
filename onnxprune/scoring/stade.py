"""STADE: ``s_ij = W_ij^2 * Var(x_j)``, with the pruned mean ``W_ij * E[x_j]`` kept in the bias."""

from __future__ import annotations

import numpy as np

from ..calibrate.stats import LayerStats
from . import ScoringMethod, register


def _column_mean(stats: LayerStats, rows: int) -> np.ndarray:
    return stats.row_expand(stats.inputs.mean, rows)


def stade_score(weight: np.ndarray, stats: LayerStats) -> np.ndarray:
    rows = weight.shape[0]
    mean = _column_mean(stats, rows)
    variance = np.maximum(stats.row_expand(stats.inputs.mean_square, rows) - mean * mean, 0.0)
    return weight * weight * variance


def stade_compensation(weight: np.ndarray, stats: LayerStats, keep: np.ndarray) -> np.ndarray:
    pruned = np.where(keep, 0.0, weight)
    return (pruned * _column_mean(stats, weight.shape[0])).sum(axis=1)


register(
    ScoringMethod(
        "stade",
        stade_score,
        "row",
        "W^2 * Var(x_j) with mean compensation (STADE)",
        compensate=stade_compensation,
    )
)
