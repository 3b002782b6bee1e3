"""Relative-importance contribution pruning (``contrib``), METHODS.md section 1.

Our definition, built on Hussien et al. (arXiv 2410.16151): the contribution of weight (i, j) on
sample n is ``c_ij(n) = W_ij x_j(n)``, observed only where neuron i is outside its activation's
blind range (gate ``g_i(n)``, see ``calibrate/gates.py``). From the gated moments
``S0_i = sum g^2``, ``S1_ij = sum g^2 x_j``, ``S2_ij = sum g^2 x_j^2``:

    mu_ij  = W_ij S1_ij / S0_i          (mean visible contribution)
    m2_ij  = W_ij^2 S2_ij / S0_i        (its second moment)
    s_ij   = m2_ij - mu_ij^2            (with mean compensation: only the spread is lost)
             m2_ij                      (without compensation)
    r_ij   = s_ij / mean_k s_ik         (relative importance within neuron i)

Removed weights' mean contributions ``sum_{j pruned} mu_ij`` go into neuron i's bias. A neuron
never visible (``S0_i = 0``) scores 0 everywhere. See docs/METHOD.md for the variant chosen as
default and the measurements behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..calibrate.stats import LayerStats
from . import ScoringMethod, register


def contribution_moments(weight: np.ndarray, stats: LayerStats) -> tuple[np.ndarray, np.ndarray]:
    """(mu, m2), each [out, K]: the mean and second moment of each visible contribution."""
    gated = stats.gated_or_identity(weight.shape[0])
    s0 = gated.g2_sum[:, None]
    visible = s0 > 0
    safe = np.where(visible, s0, 1.0)
    mu = np.where(visible, weight * gated.gx_sum / safe, 0.0)
    m2 = np.where(visible, weight * weight * gated.gx_sq_sum / safe, 0.0)
    return mu, m2


def relative_to_row(scores: np.ndarray) -> np.ndarray:
    """Divide each row by its mean, so 1 means 'an average weight of this neuron'."""
    row_mean = scores.mean(axis=1, keepdims=True)
    return np.where(row_mean > 0, scores / np.where(row_mean > 0, row_mean, 1.0), 0.0)


@dataclass(frozen=True)
class ContribVariant:
    gate: bool
    compensate: bool
    relative: bool

    def score(self, weight: np.ndarray, stats: LayerStats) -> np.ndarray:
        mu, m2 = contribution_moments(weight, stats)
        spread = np.maximum(m2 - mu * mu, 0.0) if self.compensate else m2
        return relative_to_row(spread) if self.relative else spread

    def compensation(self, weight: np.ndarray, stats: LayerStats, keep: np.ndarray) -> np.ndarray:
        mu, _ = contribution_moments(weight, stats)
        return np.where(keep, 0.0, mu).sum(axis=1)


def _register(name: str, variant: ContribVariant, group: str, text: str, hidden: bool) -> None:
    register(
        ScoringMethod(
            name,
            variant.score,
            group,
            text,
            needs_gates=variant.gate,
            compensate=variant.compensation if variant.compensate else None,
            hidden=hidden,
        )
    )


_register(
    "contrib",
    ContribVariant(gate=True, compensate=True, relative=True),
    "layer",
    "relative importance of gated contributions, mean folded into the bias (default)",
    hidden=False,
)
# Ablations measured in benchmarks/run_benchmarks.py.
_register("contrib-nogate", ContribVariant(False, True, True), "layer", "no blind-range gate", True)
_register("contrib-nocomp", ContribVariant(True, False, True), "layer", "no compensation", True)
_register("contrib-absolute", ContribVariant(True, True, False), "layer", "no row norm", True)
_register("contrib-plain", ContribVariant(False, False, False), "row", "Wanda-equivalent", True)
