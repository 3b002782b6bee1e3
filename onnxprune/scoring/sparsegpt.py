"""SparseGPT (Frantar & Alistarh 2023) as a baseline: the mask is chosen block by block inside the
reconstruction from the OBS saliency ``w^2 / [H^-1]_jj^2`` of the already-updated weights
(``reconstruct.py``); ``score`` is that saliency on the original weights, used only where the
update cannot run."""

from __future__ import annotations

import numpy as np

from ..calibrate.stats import LayerStats
from ..hessian import inverse_hessian_factor
from . import ScoringMethod, register


def sparsegpt_score(weight: np.ndarray, stats: LayerStats) -> np.ndarray:
    xtx = stats.inputs.xtx
    if xtx is None:
        return np.abs(weight)
    rows = weight.shape[0]
    groups = xtx.shape[0]
    per_group = rows // groups
    scores = np.empty_like(weight)
    for g in range(groups):
        upper, _ = inverse_hessian_factor(xtx[g], stats.inputs.count)
        part = slice(g * per_group, (g + 1) * per_group)
        scores[part] = weight[part] ** 2 / np.diag(upper)[None, :] ** 2
    return scores


register(
    ScoringMethod(
        "sparsegpt",
        sparsegpt_score,
        "layer",
        "OBS saliency with reconstruction, mask chosen during the update (SparseGPT)",
        adaptive_mask=True,
    )
)
