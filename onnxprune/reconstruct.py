"""SparseGPT-style weight reconstruction (Frantar & Alistarh 2023), pure numpy, one layer.

Minimises ``||W x - W' x||^2`` over the calibration inputs for a pruned ``W'``: walking the
columns in blocks, each removed weight's error is pushed onto the columns not yet processed
through the inverse Hessian ``H^-1`` of that objective (``H = 2 X X^T / N``, here from
``xtx = sum_n x x^T``). With ``keep`` given, the mask is fixed in advance (chosen by any scoring
method); without it, SparseGPT's own saliency ``w^2 / [H^-1]_jj^2`` picks the mask block by block
from the already-updated weights. Shapes: ``W`` (out, K), ``xtx`` (K, K).
"""

from __future__ import annotations

import numpy as np

from .config import NMPattern

BLOCK = 128
# A fixed mask's result does not depend on the block size (the lazy update is exact); the
# walk's rank-1 updates touch [block, out] per column, so a smaller block moves less memory
# (about 30% faster on [384, 1536] and [1536, 384] layers). The adaptive selection keeps
# SparseGPT's 128: its mask is chosen per block.
FIXED_MASK_BLOCK = 64


def reselect_block(block: np.ndarray, u_diag: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """``--reselect-mask``: the [B, out] prune mask of a block of columns chosen again on the
    updated weights ``block`` [B, out], each row removing as many as it does in ``previous``
    ([B, out]): the lowest SparseGPT saliency ``w^2 / [U]_jj^2`` (``u_diag`` (B,) the factor's
    diagonal there). The method's mask decides how many go per row and block; this, which."""
    counts = previous.sum(axis=0)  # (out,)
    if not counts.any():
        return previous
    saliency = block.T**2 / u_diag[None, :] ** 2  # [out, B]
    ranks = np.argsort(np.argsort(saliency, axis=1, kind="stable"), axis=1)
    chosen: np.ndarray = (ranks < counts[:, None]).T
    return chosen


def reconstruct(
    weight: np.ndarray,
    factor: tuple[np.ndarray, np.ndarray],
    keep: np.ndarray | None = None,
    sparsity: float = 0.0,
    pattern: NMPattern | None = None,
    row_cap: float = 1.0,
    reselect: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(updated weight with the pruned entries exactly 0, keep mask), both (out, K).

    ``factor`` is ``inverse_hessian_factor(xtx, count)``: it depends only on the layer's
    inputs, so callers compute it once and reuse it for every candidate mask. ``row_cap``: the
    largest share of a row the adaptive selection may remove, applied in every block.
    ``reselect`` (with ``keep``): the mask is chosen again block by block (N:M: group by group)
    on the updated weights, each row removing in each block as many weights as ``keep`` does
    there (``reselect_block``).
    """
    # Worked on transposed, [K, out]: a column of W is a contiguous row, and each step's
    # update of the remaining columns is a contiguous block (about 25% faster than [out, K]).
    w = weight.astype(np.float64).T.copy()
    # Inputs that were 0 on every calibration sample (``dead``) carry no evidence: a mask that
    # keeps their weights keeps them unchanged (their H row is the identity's, so no error
    # flows through them), and the adaptive selection removes them first, at no cost.
    upper, dead = factor
    columns = w.shape[0]
    mask = np.zeros_like(w, dtype=bool) if keep is None else ~keep.T  # True = prune, [K, out]
    step = BLOCK if keep is None or reselect else FIXED_MASK_BLOCK
    for start in range(0, columns, step):
        end = min(start + step, columns)
        block = w[start:end].copy()  # [B, out]
        errors = np.zeros_like(block)
        u_block = upper[start:end, start:end]
        diagonal = np.diag(u_block)
        dead_block = dead[start:end]
        if reselect and pattern is None:
            mask[start:end] = reselect_block(block, diagonal, mask[start:end])
        if keep is None and pattern is None:
            chosen = _adaptive_block_mask(block, diagonal, dead_block, sparsity, row_cap)
            if chosen is not None:
                mask[start:end] = chosen
        for i in range(end - start):
            column = start + i
            if pattern is not None and i % pattern.m == 0:
                _choose_nm_group(
                    mask, block, diagonal, dead_block, (start, i), pattern, keep is None, reselect
                )
            error = np.where(mask[column], block[i], 0.0) / u_block[i, i]
            block[i:] -= u_block[i, i:, None] * error[None, :]
            errors[i] = error
        w[start:end] = block
        w[end:] -= upper[start:end, end:].T @ errors
    w[mask] = 0.0
    return w.T.copy(), ~mask.T


def _choose_nm_group(
    mask: np.ndarray,
    block: np.ndarray,
    diagonal: np.ndarray,
    dead_block: np.ndarray,
    at: tuple[int, int],
    pattern: NMPattern,
    adaptive: bool,
    reselect: bool,
) -> None:
    """Choose, in place in ``mask`` [K, out], the N:M mask of the group of M columns that
    starts at column ``i`` of the block starting at ``start`` (``at = (start, i)``), from the
    updated weights ``block`` [B, out]: SparseGPT's saliency when ``adaptive`` (no fixed
    mask), then, with ``reselect``, the method's own choice with the same counts."""
    start, i = at
    group = slice(i, min(i + pattern.m, block.shape[0]))
    rows = slice(start + group.start, start + group.stop)
    if adaptive:
        mask[rows] = _nm_group_mask(block[group], diagonal[group], dead_block[group], pattern.n)
    if reselect:
        mask[rows] = reselect_block(block[group], diagonal[group], mask[rows])


def _adaptive_block_mask(
    block: np.ndarray,
    diagonal: np.ndarray,
    dead_block: np.ndarray,
    sparsity: float,
    row_cap: float,
) -> np.ndarray | None:
    """SparseGPT's adaptive selection in one block of columns ``block`` [B, out]: the
    ``sparsity`` share of the block with the least saliency ``w^2 / [U]_jj^2`` (dead inputs
    first), each row losing at most ``row_cap`` of the block; the mask [B, out] (True =
    prune), or None when nothing goes."""
    saliency = np.where(dead_block[None, :], 0.0, block.T**2 / diagonal[None, :] ** 2)
    # Each row may lose at most its cap within the block (the row floor overall).
    limit = int(np.floor(row_cap * saliency.shape[1] + 1e-9))
    ranks = np.argsort(np.argsort(saliency, axis=1, kind="stable"), axis=1)
    saliency = np.where(ranks < limit, saliency, np.inf)
    count_pruned = min(round(sparsity * saliency.size), int(np.isfinite(saliency).sum()))
    if not count_pruned:
        return None
    order = np.argsort(saliency, axis=None, kind="stable")[:count_pruned]
    block_mask = np.zeros(saliency.size, dtype=bool)
    block_mask[order] = True
    return block_mask.reshape(saliency.shape).T


def _nm_group_mask(
    group: np.ndarray, diagonal: np.ndarray, dead: np.ndarray, keep_count: int
) -> np.ndarray:
    """N:M in one group of M columns ``group`` [M, out]: each row keeps its ``keep_count``
    most salient weights; the mask [M, out] (True = prune)."""
    saliency = np.where(dead[None, :], 0.0, group.T**2 / diagonal[None, :] ** 2)
    ranks = np.argsort(np.argsort(saliency, axis=1, kind="stable"), axis=1)
    width = saliency.shape[1]
    return (ranks < width - min(keep_count, width)).T


def reconstruct_groups(
    weights: np.ndarray, factors: list[tuple[np.ndarray, np.ndarray]], keep: np.ndarray
) -> np.ndarray:
    """``reconstruct`` with a fixed mask for G conv groups at once: ``weights`` and ``keep``
    (G, Rg, K), one factor per group. The column walk is the same; every step is batched over
    the groups, so a depthwise conv (hundreds of groups of a few columns) costs K numpy steps
    instead of G * K. Returns the updated weights (G, Rg, K), pruned entries exactly 0."""
    w = weights.astype(np.float64).copy()
    upper = np.stack([f[0] for f in factors])  # (G, K, K)
    prune = ~keep
    columns = w.shape[2]
    for start in range(0, columns, BLOCK):
        end = min(start + BLOCK, columns)
        block = w[:, :, start:end].copy()  # (G, Rg, B)
        errors = np.zeros_like(block)
        u_block = upper[:, start:end, start:end]  # (G, B, B)
        for i in range(end - start):
            w_column = block[:, :, i]  # (G, Rg)
            quantised = np.where(prune[:, :, start + i], 0.0, w_column)
            error = (w_column - quantised) / u_block[:, i, i][:, None]
            block[:, :, i:] -= error[:, :, None] * u_block[:, None, i, i:]
            block[:, :, i] = quantised
            errors[:, :, i] = error
        w[:, :, start:end] = block
        w[:, :, end:] -= errors @ upper[:, start:end, end:]
    w[prune] = 0.0
    return w


def refit_to_reference(
    weight: np.ndarray, cross: np.ndarray, count: float, factor: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """The unpruned least-squares fit of ``W x_ref`` from the inputs ``x``, (out, K) float64.

    Minimises ``||W X_ref - W0 X||^2`` over the calibration samples: ``W0 = W C H^-1`` with
    ``C = sum_n x_ref x^T`` (``cross``, (K, K)) and ``H = sum_n x x^T``, both scaled like
    ``inverse_hessian_factor`` (``2 / N``) and ``H`` damped the same way, through its factor
    ``U`` (``H^-1 = U^T U``). Then ``||W X_ref - W' X||^2 = ||W X_ref - W0 X||^2 +
    tr((W0 - W') H (W0 - W')^T)``: running ``reconstruct`` on ``W0`` with the same factor
    minimises the second term, so the whole fit targets the reference outputs.
    """
    upper, dead = factor
    scaled = 2.0 * cross / max(count, 1.0)
    scaled[:, dead] = 0.0  # dead inputs are always 0 in x: no column of C
    w = weight.astype(np.float64)
    fitted: np.ndarray = ((w @ scaled) @ upper.T) @ upper
    # Dead inputs carry no evidence: their weights stay as they were (see ``reconstruct``).
    fitted[:, dead] = w[:, dead]
    return fitted
