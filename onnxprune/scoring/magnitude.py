"""Magnitude pruning: ``s_ij = |W_ij|``, compared over the whole layer."""

from __future__ import annotations

import numpy as np

from ..calibrate.stats import LayerStats
from . import ScoringMethod, register


def magnitude_score(weight: np.ndarray, stats: LayerStats) -> np.ndarray:
    return np.abs(weight)


register(ScoringMethod("magnitude", magnitude_score, "layer", "|W| (no data)"))
