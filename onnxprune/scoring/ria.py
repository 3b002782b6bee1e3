"""RIA (Zhang et al., ICLR 2024): relative importance times activation norm, over the layer.

``s_ij = (|W_ij| / sum_k |W_kj| + |W_ij| / sum_k |W_ik|) * ||X_j||_2 ^ 0.5``; the column sum
runs over the rows of the same conv group (rows of other groups never read column ``j``).
"""

from __future__ import annotations

import numpy as np

from ..calibrate.stats import LayerStats
from . import ScoringMethod, input_rms, register


def ria_score(weight: np.ndarray, stats: LayerStats) -> np.ndarray:
    magnitude = np.abs(weight)
    rows, columns = weight.shape
    groups = stats.inputs.x_sum.shape[0]
    per_group = magnitude.reshape(groups, rows // groups, columns)
    column_sums = np.repeat(per_group.sum(axis=1), rows // groups, axis=0)  # [rows, K]
    row_sums = magnitude.sum(axis=1, keepdims=True)
    relative = magnitude / np.maximum(column_sums, 1e-30) + magnitude / np.maximum(row_sums, 1e-30)
    return relative * np.sqrt(input_rms(stats, rows))


register(ScoringMethod("ria", ria_score, "layer", "relative importance * ||X_j||^0.5 (RIA)"))
