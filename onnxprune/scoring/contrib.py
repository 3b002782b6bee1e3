"""Relative-importance contribution pruning (``contrib``), the method brief's section 1
(summarised in docs/METHOD.md, "The method brief").

Our definition, built on Hussien et al. (arXiv 2410.16151): the contribution of weight (i, j) on
sample n is ``c_ij(n) = W_ij x_j(n)``, observed only where neuron i is outside its activation's
blind range (gate ``g_i(n)``, see ``calibrate/gates.py``). From the gated moments
``S0_i = sum g^2``, ``S1_ij = sum g^2 x_j``, ``S2_ij = sum g^2 x_j^2``:

    mu_ij  = W_ij S1_ij / S0_i          (mean visible contribution)
    m2_ij  = W_ij^2 S2_ij / S0_i        (its second moment)
    s_ij   = m2_ij - mu_ij^2            (with mean compensation: only the spread is lost)
             m2_ij                      (without compensation)
    r_ij   = s_ij / sum_k s_ik          (relative importance: share of neuron i's total)

Removed weights' mean contributions ``sum_{j pruned} mu_ij`` go into neuron i's bias. A neuron
never visible (``S0_i = 0``) scores 0 everywhere. See docs/METHOD.md for the variant chosen as
default and the measurements behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..calibrate.stats import LayerStats
from . import ScoringMethod, register


def contribution_moments(
    weight: np.ndarray, stats: LayerStats
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu, m2, mean), each [out, K].

    mu, m2: mean and second moment of each contribution over the samples where it is visible;
    mean: its plain mean over all samples (what compensation must preserve: the bias acts on
    every sample, visible or not).
    """
    rows = weight.shape[0]
    gated = stats.gated_or_identity(rows)
    s0 = gated.g2_sum[:, None]
    visible = s0 > 0
    safe = np.where(visible, s0, 1.0)
    mu = np.where(visible, weight * gated.gx_sum / safe, 0.0)
    m2 = np.where(visible, weight * weight * gated.gx_sq_sum / safe, 0.0)
    mean = weight * stats.row_expand(stats.inputs.mean, rows)
    return mu, m2, mean


def relative_to_row(scores: np.ndarray, normalise: str) -> np.ndarray:
    """``sum``: r_ij = s_ij / sum_k s_ik (each weight's share of its neuron's total);
    ``mean``: r_ij = s_ij / mean_k s_ik (1 = an average weight, comparable across widths)."""
    if normalise == "none":
        return scores
    if normalise == "layer":
        layer_mean = scores.mean()
        return scores / layer_mean if layer_mean > 0 else scores
    total = scores.sum(axis=1, keepdims=True)
    if normalise == "mean":
        total = total / scores.shape[1]
    return np.where(total > 0, scores / np.where(total > 0, total, 1.0), 0.0)


@dataclass(frozen=True)
class ContribVariant:
    gate: bool
    compensate: bool
    normalise: str  # "sum", "mean" or "none"
    # Score only the spread the bias cannot absorb (True) or the whole second moment (False).
    spread_only: bool = True

    def score(self, weight: np.ndarray, stats: LayerStats) -> np.ndarray:
        mu, m2, mean = contribution_moments(weight, stats)
        if self.compensate and self.spread_only:
            # What is lost at a visible sample once the plain mean sits in the bias:
            # E_g[(c - mean)^2] = m2 - 2 mu mean + mean^2.
            lost = np.maximum(m2 - 2.0 * mu * mean + mean * mean, 0.0)
        else:
            lost = m2
        return relative_to_row(lost, self.normalise)

    def compensation(self, weight: np.ndarray, stats: LayerStats, keep: np.ndarray) -> np.ndarray:
        _, _, mean = contribution_moments(weight, stats)
        return np.where(keep, 0.0, mean).sum(axis=1)


def _register(
    name: str,
    variant: ContribVariant,
    group: str,
    text: str,
    hidden: bool,
    auto_variants: tuple[str, ...] = (),
    default_update: bool = False,
    default_allocation: str = "group",
) -> None:
    register(
        ScoringMethod(
            name,
            variant.score,
            group,
            text,
            needs_gates=variant.gate,
            compensate=variant.compensation if variant.compensate else None,
            hidden=hidden,
            auto_variants=auto_variants,
            default_update=default_update,
            default_allocation=default_allocation,
        )
    )


_register(
    "contrib",
    ContribVariant(gate=True, compensate=True, normalise="none"),
    "auto",
    "gated contribution spread, mean folded into the bias, row/global chosen on data (default)",
    hidden=False,
    # Mean compensation helps up to high sparsity and can kill a small net beyond it (all
    # neurons pinned to their means); auto measures both on calibration samples.
    auto_variants=("contrib-nocomp",),
    # The default pipeline is the best measured one (BENCHMARKS.md, docs/METHOD.md): the OBS
    # update re-fits the kept weights, and sensitivity moves the budget between layers.
    default_update=True,
    default_allocation="sensitivity",
)
# Ablations, measured side by side in benchmarks/run_benchmarks.py.
_register(
    "contrib-nogate", ContribVariant(False, True, "none"), "auto", "no blind-range gate", True
)
_register("contrib-nocomp", ContribVariant(True, False, "none"), "auto", "no compensation", True)
_register(
    "contrib-sumnorm",
    ContribVariant(True, True, "sum"),
    "auto",
    "r = s / sum_k s (as in the method brief)",
    True,
)
_register(
    "contrib-m2comp",
    ContribVariant(True, True, "none", False),
    "auto",
    "score m2, compensate",
    True,
)
_register("contrib-plain", ContribVariant(False, False, "none"), "row", "Wanda-equivalent", True)
