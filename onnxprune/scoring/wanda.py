"""Wanda (Sun et al. 2023): ``s_ij = |W_ij| * ||X_j||_2``, compared per output row."""

from __future__ import annotations

import numpy as np

from ..calibrate.stats import LayerStats
from . import ScoringMethod, input_rms, register


def wanda_score(weight: np.ndarray, stats: LayerStats) -> np.ndarray:
    return np.abs(weight) * input_rms(stats, weight.shape[0])


register(ScoringMethod("wanda", wanda_score, "row", "|W| * ||X_j|| per row (Wanda)"))
