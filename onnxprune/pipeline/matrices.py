"""The per-layer maths the pipeline runs between statistics and a written model: pruning
one matrix (scores, mask, OBS update, corrections), writing it back, and the sample split."""

from __future__ import annotations

import logging

import numpy as np

from .. import correction
from ..apply import add_bias, write_weight
from ..calibrate.stats import LayerStats
from ..config import PruneConfig
from ..correction import damped_hessians, refit_on_support, stat_correct
from ..graph import GraphView
from ..hessian import ReconstructionError, inverse_hessian_factors
from ..layers import Layer
from ..masking import Selection, row_cap, select_masks
from ..obs_fast import walk_fixed_mask
from ..reconstruct import (
    reconstruct,
    reconstruct_groups,
    refit_to_reference,
)
from ..report import LayerReport
from ..scoring import ScoringMethod
from ..threads import one_blas_thread
from ..verify import Fidelity

log = logging.getLogger(__name__)


def _inverse_factors(stats: LayerStats) -> list[tuple[np.ndarray, np.ndarray]] | None:
    if stats.inputs.xtx is None:
        return None
    try:
        # One BLAS thread (``onnxprune.threads``): MiniLM's 36 factors took 22.9 s with two
        # on a loaded 2-core machine, 6 of them K = 1536 Cholesky factorisations and inverses.
        with one_blas_thread():
            factors = inverse_hessian_factors(stats.inputs.xtx, stats.inputs.count)
    except ReconstructionError:
        return None
    if len(factors) > 1:
        return factors
    # A run keeps every layer's factor while it judges candidates; the fixed-mask walk reads
    # it in float32 anyway, so it is kept in float32 (MiniLM: 141 -> 70 MB). The float64
    # walks (adaptive masks, --reselect-mask) read the rounded factor (about 6e-8 relative).
    # Grouped convs keep float64: their factors are small.
    return [(upper.astype(np.float32), dead) for upper, dead in factors]


def selection_of(config: PruneConfig, group: str) -> Selection:
    """The run's mask selection as the explicit values ``masking`` takes."""
    return Selection(group, config.nm, config.layer_cap, config.min_row_weights)


def input_weights(
    stats: LayerStats, factors: list[tuple[np.ndarray, np.ndarray]] | None, rows: int
) -> np.ndarray:
    """[out, K]: what removing one weight w_ij costs the layer's output, per unit w_ij^2.
    With the inverse-Hessian factors (reconstruction) the OBS cost 1 / [H^-1]_jj (the error
    left after the remaining weights are re-fitted), else E[x_j^2] (nothing re-fitted)."""
    if factors is not None:
        inverse_diagonal = np.stack(  # [G, K], accumulated in float64
            [np.square(upper, dtype=np.float64).sum(axis=0) for upper, _ in factors]
        )
        return stats.row_expand(1.0 / inverse_diagonal, rows)
    mean_square = stats.inputs.x_sq_sum / max(stats.inputs.count, 1.0)
    return stats.row_expand(mean_square, rows)


def local_error(cost: np.ndarray, keep: np.ndarray) -> float:
    """The layer's output error proxy when the weights outside ``keep`` are removed: the
    removed weights' costs summed independently, ``cost`` [out, K] = ``W**2 * weights`` (each
    weight's cost per unit w^2, see ``input_weights``; computed once for a layer's levels)."""
    return float(cost[~keep].sum())


def mean_cosine(fidelity: Fidelity) -> float:
    """Plain cosine over the outputs (the report's continuity column; decisions use
    ``metric.decision_score``)."""
    return float(np.mean([o.cosine for o in fidelity.outputs]))


def prune_matrix(
    matrix: np.ndarray,
    keep: np.ndarray | None,
    stats: LayerStats,
    scorer: ScoringMethod,
    config: PruneConfig,
    target: float,
    factors: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """(pruned matrix [out, K], bias change [out] or None, a problem worth reporting).

    Without reconstruction: zero the masked weights; the method's compensation goes to the bias.
    With it (``--update`` or a method that selects its mask during the update): the remaining
    weights are re-fitted to the layer's calibration outputs, and the bias absorbs the residual
    mean ``(W - W') E[x]`` (adding the pruned mean on top would count it twice).
    """
    reconstructing = config.update or scorer.adaptive_mask
    if reconstructing and factors is None:
        problem = "no reconstruction (input correlation too wide or not positive definite)"
        if keep is None:  # the method needs the update to choose a mask: fall back to |W|
            keep = select_masks([np.abs(matrix)], selection_of(config, "row"), target)[0]
        reconstructing = False
    else:
        problem = None
    if not reconstructing:
        assert keep is not None
        pruned = np.where(keep, matrix, 0.0)
        delta = scorer.compensate(matrix, stats, keep) if scorer.compensate else None
        return (*corrected(matrix, pruned, delta, stats, config), problem)
    assert factors is not None
    pruned = _reconstructed(matrix, keep, stats, config, target, factors)
    return (
        *corrected(matrix, pruned, _residual_mean(matrix, pruned, stats), stats, config),
        problem,
    )


def _reconstructed(
    matrix: np.ndarray,
    keep: np.ndarray | None,
    stats: LayerStats,
    config: PruneConfig,
    target: float,
    factors: list[tuple[np.ndarray, np.ndarray]],
) -> np.ndarray:
    """The OBS update of ``prune_matrix`` (per conv group; batched for a fixed mask over many
    groups), then the --refit-steps re-fit: the pruned matrix [out, K]."""
    rows = matrix.shape[0]
    groups = len(factors)
    per_group = rows // groups
    kept = np.ones(matrix.shape, dtype=bool) if keep is None else keep.copy()
    pattern = config.nm
    # update_target "dense": fit the dense model's outputs W x_ref, not W x (the method brief,
    # section 3).
    cross = stats.inputs.cross
    reselect = reselects(stats, config, keep)
    # The float32 walk's results are kept in float32 (the same values; half the memory of the
    # pruned layers a run holds between candidates: MiniLM 81 -> 40 MB per candidate).
    walked = keep is not None and not reselect and (groups == 1 or cross is not None)
    pruned = np.empty(matrix.shape, dtype=np.float32 if walked else matrix.dtype)
    if groups > 1 and keep is not None and cross is None:
        # A fixed mask over many conv groups (depthwise): one batched column walk.
        shape = (groups, per_group, matrix.shape[1])
        pruned = reconstruct_groups(matrix.reshape(shape), factors, keep.reshape(shape)).reshape(
            matrix.shape
        )
        groups = 0  # done
    for g in range(groups):
        part = slice(g * per_group, (g + 1) * per_group)
        start = matrix[part]
        if cross is not None:
            start = refit_to_reference(start, cross[g], stats.inputs.count, factors[g])
        if keep is not None and not reselect:
            # A fixed mask: the float32 walk (``obs_fast``); ``kept`` is the mask.
            pruned[part] = walk_fixed_mask(start, factors[g], keep[part])
            continue
        pruned[part], kept[part] = reconstruct(
            start,
            factors[g],
            None if keep is None else keep[part],
            sparsity=target,
            pattern=pattern,
            row_cap=row_cap(matrix.shape[1], target, config.min_row_weights) / matrix.shape[1],
            reselect=reselect,
        )
    inputs = stats.inputs
    if config.refit_steps and inputs.xtx is not None and cross is None:
        # --refit-steps: conjugate-gradient steps on the layer objective over the kept weights.
        hessians = damped_hessians(inputs.mean, inputs.xtx, inputs.count, correction.CG_CENTERED)
        pruned = refit_on_support(matrix, pruned, kept, hessians, config.refit_steps)
    return pruned


def _per_row(stats: LayerStats, per_group: np.ndarray, rows: int) -> np.ndarray:
    """``per_group`` (G, K) for rows [out, K]: broadcast as (1, K) when there is one group
    (the same products as ``row_expand``'s copy, without the copy)."""
    return per_group if per_group.shape[0] == 1 else stats.row_expand(per_group, rows)


def _residual_mean(matrix: np.ndarray, pruned: np.ndarray, stats: LayerStats) -> np.ndarray:
    """The bias change [out] that keeps each output's mean: ``(W - W') E[x]``, or against the
    dense model's outputs ``W E[x_ref] - W' E[x]`` (update_target "dense")."""
    rows = matrix.shape[0]
    cross = stats.inputs.cross
    mean = _per_row(stats, stats.inputs.mean, rows)
    if cross is not None and stats.inputs.ref_sum is not None:
        # The residual mean against the dense outputs: W E[x_ref] - W' E[x].
        ref_mean = _per_row(stats, stats.inputs.ref_sum / max(stats.inputs.count, 1.0), rows)
        delta = (matrix * ref_mean).sum(axis=1) - (pruned * mean).sum(axis=1)
    else:
        delta = ((matrix - pruned) * mean).sum(axis=1)
    return delta


def reselects(stats: LayerStats, config: PruneConfig, keep: np.ndarray | None) -> bool:
    """Whether ``reconstruct`` chooses a fixed mask again on the updated weights
    (``--reselect-mask``): only with a fixed mask and the layer's own input correlation (not
    under update_target "dense")."""
    inputs = stats.inputs
    return bool(
        config.reselect_mask
        and keep is not None
        and inputs.xtx is not None
        and inputs.cross is None
    )


def corrected(
    matrix: np.ndarray,
    pruned: np.ndarray,
    delta: np.ndarray | None,
    stats: LayerStats,
    config: PruneConfig,
) -> tuple[np.ndarray, np.ndarray | None]:
    """--stat-correction: each output channel's mean and variance over the calibration
    inputs set back to the dense layer's (``onnxprune.correction``); otherwise unchanged.
    Not with update_target "dense", whose dense-model inputs have no second moments here."""
    inputs = stats.inputs
    if not config.stat_correction or inputs.xtx is None or inputs.cross is not None:
        return pruned, delta
    return stat_correct(matrix, pruned, inputs.mean, inputs.xtx, inputs.count)


def write_matrices(
    view: GraphView,
    layers: list[Layer],
    matrices: list[np.ndarray],
    deltas: list[np.ndarray | None],
    stats: list[LayerStats],
) -> tuple[list[LayerReport], list[str]]:
    """Write the pruned weights, add the bias changes, describe each layer."""
    reports, warnings = [], []
    for layer, pruned, delta, layer_stats in zip(layers, matrices, deltas, stats, strict=True):
        report, written = write_layer(view, layer, pruned, delta, layer_stats)
        reports.append(report)
        warnings += written
    view.flush_inserts()
    return reports, warnings


def write_layer(
    view: GraphView,
    layer: Layer,
    pruned: np.ndarray,
    delta: np.ndarray | None,
    layer_stats: LayerStats,
) -> tuple[LayerReport, list[str]]:
    """Write one layer's pruned weight and bias change; the caller flushes the view's inserts."""
    warnings: list[str] = []
    nonzero_before = int(np.count_nonzero(layer.weight))
    write_weight(view, layer, pruned)
    if delta is not None:
        warnings += add_bias(view, layer, delta)
    written = layer.from_matrix(pruned)
    report = LayerReport(
        name=layer.name,
        op_type=layer.op.op_type,
        weight=layer.weight_name,
        shape=list(layer.shape),
        storage=layer.storage,
        gate=layer_stats.gate_kind,
        params=layer.size,
        nonzero_before=nonzero_before,
        nonzero_after=int(np.count_nonzero(written)),
        override=layer.override.text if layer.override is not None else None,
    )
    return report, warnings
