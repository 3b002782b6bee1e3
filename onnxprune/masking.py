"""Scores -> keep masks. Pure functions on ``(out, K)`` arrays; ``True`` means the weight stays.

Counting is exact: a layer (or, globally, the set of layers) loses ``round(s * n)`` weights, so
rows with few weights (a depthwise 3x3 filter has 9) do not make rounding miss the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .config import NMPattern

# In layer-wide and global selection every row keeps at least this share of the layer's average
# kept fraction: without a floor, single neurons of a transformer lost 97-100% of their weights
# (the method brief's section 6, docs/METHOD.md).
ROW_KEEP_FLOOR = 0.25


def pruned_count(size: int, sparsity: float) -> int:
    return round(sparsity * size)


def row_cap(columns: int, sparsity: float, min_row_weights: int = 0) -> int:
    """Most weights one row may lose under layer/global selection."""
    floor_keep = math.ceil(ROW_KEEP_FLOOR * (1.0 - sparsity) * columns)
    cap = max(math.ceil(sparsity * columns), columns - max(floor_keep, 1))
    return min(cap, columns - min(columns, min_row_weights))


def floor_cap(columns: int, min_row_weights: int) -> float:
    """The largest share of a layer with rows of ``columns`` weights that the row floor lets
    go (0 when every row has at most ``min_row_weights``)."""
    return 1.0 - min(columns, min_row_weights) / columns


def allocate(shapes: list[tuple[int, int]], sparsity: float, min_row_weights: int) -> list[float]:
    """Per-layer sparsity for an overall target over all layers' weights.

    Every row keeps at least ``min(K, min_row_weights)`` weights (a depthwise 3x3 filter or a
    stem conv over 1-3 channels has only 9-27, and loses its function long before a wide layer
    does); what such layers cannot give up is taken from the others, evenly (water-filling),
    so the total still matches the request wherever the caps allow it.
    """
    sizes = np.array([rows * cols for rows, cols in shapes], dtype=np.float64)
    caps = np.array([floor_cap(cols, min_row_weights) for _, cols in shapes], dtype=np.float64)
    target = sparsity * sizes.sum()
    if np.minimum(caps, sparsity) @ sizes >= target - 0.5:
        return [float(min(c, sparsity)) for c in caps]
    low, high = sparsity, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        if np.minimum(caps, mid) @ sizes < target:
            low = mid
        else:
            high = mid
    return [float(min(c, high)) for c in caps]


# Above this many entries the count-th smallest is found without partitioning a copy of the
# whole array (``kth_smallest``): global selection over MiniLM's 10.6M scores copied 81 MB
# for it, at the run's peak of Python-held memory.
KTH_COPY_LIMIT = 1 << 20
# ... from a sample of one entry in KTH_SAMPLE_STRIDE first, which brackets the value. The
# sample's positions are drawn at random (a fixed seed: the answer never depends on them, only
# the time): every 64th entry of rows whose length is a multiple of 64 saw the same columns of
# every row, and on EfficientNet-Lite0's global selection that bracket missed, so 4.6M scores
# were partitioned whole (the selection took 0.50 s of the run, now 0.085 s).
KTH_SAMPLE_STRIDE = 64


def kth_smallest(flat: np.ndarray, count: int, copy_limit: int = KTH_COPY_LIMIT) -> np.generic:
    """The ``count``-th smallest entry of ``flat`` (1-based, 1 <= count <= size; NaN-free):
    what ``np.partition(flat, count - 1)[count - 1]`` gives. Large arrays: a random sample's
    quantiles bracket it, and only the entries inside the bracket are partitioned; the
    bracket is widened to the whole range if the sample was misleading."""
    if flat.size <= copy_limit:
        return np.partition(flat, count - 1)[count - 1]
    positions = np.random.default_rng(0).integers(0, flat.size, flat.size // KTH_SAMPLE_STRIDE + 1)
    sample = flat[positions]
    rank = count / flat.size * sample.size
    margin = 4 * math.isqrt(sample.size) + 8
    low_rank = max(0, math.floor(rank) - margin)
    high_rank = min(sample.size - 1, math.ceil(rank) + margin)
    sample.partition([low_rank, high_rank])
    bounds = [(sample[low_rank], sample[high_rank]), (-np.inf, np.inf)]
    del sample
    for low, high in bounds:
        below = int(np.count_nonzero(flat < low))
        if below >= count:
            continue
        inside = flat[(flat >= low) & (flat <= high)]
        if below + inside.size >= count:
            return np.partition(inside, count - 1 - below)[count - 1 - below]
    raise AssertionError("unreachable: the whole range holds every entry")


def _smallest(flat: np.ndarray, count: int) -> np.ndarray:
    """Indices (in no particular order) of the ``count`` smallest entries, ties going to the
    lower index: the set a stable sort's first ``count`` would give, by partition, not sort."""
    if count <= 0:
        return np.empty(0, dtype=np.int64)
    if count >= flat.size:
        return np.arange(flat.size)
    kth = kth_smallest(flat, count)
    below = np.flatnonzero(flat < kth)
    ties = np.flatnonzero(flat == kth)[: count - below.size]
    return np.concatenate([below, ties])


def _smallest_mask(flat: np.ndarray, count: int) -> np.ndarray:
    """[flat.size] bool: ``_smallest(flat, count)`` as a mask, without its index arrays (for
    the tens of millions of scores of global selection)."""
    if count <= 0:
        return np.zeros(flat.size, dtype=bool)
    if count >= flat.size:
        return np.ones(flat.size, dtype=bool)
    kth = kth_smallest(flat, count)
    chosen = flat < kth
    ties = np.flatnonzero(flat == kth)[: count - int(chosen.sum())]
    chosen[ties] = True
    return chosen


def _row_smallest(scores: np.ndarray, count: int, kth: np.ndarray | None = None) -> np.ndarray:
    """[out, K] bool: the ``count`` smallest entries of each row, ties to the lower column
    (a stable sort's first ``count`` per row, by partition). ``kth`` [out, 1]: each row's
    ``count``-th smallest value when the caller has it (``sorted_rows``)."""
    columns = scores.shape[1]
    if count <= 0:
        return np.zeros(scores.shape, dtype=bool)
    if count >= columns:
        return np.ones(scores.shape, dtype=bool)
    if kth is None:
        kth = np.partition(scores, count - 1, axis=1)[:, count - 1 : count]  # [out, 1]
    below = scores < kth
    ties = scores == kth
    taken = below | ties
    # Only rows with more ties at their threshold than places left need the running count
    # (real-valued scores rarely tie; a row of zeros does).
    needed = count - below.sum(axis=1)  # [out]
    crowded = np.flatnonzero(ties.sum(axis=1) > needed)
    if crowded.size:
        crowded_ties = ties[crowded]
        first = np.cumsum(crowded_ties, axis=1) <= needed[crowded, None]
        taken[crowded] = below[crowded] | (crowded_ties & first)
    return taken


def sorted_rows(scores: np.ndarray) -> np.ndarray:
    """[out, K]: each row of ``scores`` in ascending order, from which ``row_mask`` and
    ``layer_mask`` read their thresholds (one sort serves every level of a layer)."""
    return np.sort(scores, axis=1)


def row_mask(scores: np.ndarray, sparsity: float, ordered: np.ndarray | None = None) -> np.ndarray:
    """Each row loses floor(s*K) or one more; the layer loses exactly round(s * size).
    ``ordered``: ``sorted_rows(scores)`` when the caller has it."""
    rows, columns = scores.shape
    total = pruned_count(scores.size, sparsity)
    base = min(total // rows, columns)
    extra = total - rows * base
    if extra <= 0 or base >= columns:
        kth = None if ordered is None or not 0 < base < columns else ordered[:, base - 1 : base]
        return ~_row_smallest(scores, base, kth)
    if ordered is None:
        ordered = sorted_rows(scores)
    prune = _row_smallest(scores, base, ordered[:, base - 1 : base] if base > 0 else None)
    # The rows whose next-weakest weight is weakest lose one more.
    next_weakest = ordered[:, base]
    rows_losing_more = _smallest(next_weakest, extra)
    prune[rows_losing_more] = _row_smallest(
        scores[rows_losing_more], base + 1, ordered[rows_losing_more, base : base + 1]
    )
    return ~prune


def layer_mask(
    scores: np.ndarray,
    sparsity: float,
    min_row_weights: int = 0,
    ordered: np.ndarray | None = None,
) -> np.ndarray:
    """The layer's weakest round(s*size) weights, no row losing more than ``row_cap``.
    ``ordered``: ``sorted_rows(scores)`` when the caller has it."""
    return global_masks(
        [scores],
        sparsity,
        layer_cap=1.0,
        min_row_weights=min_row_weights,
        ordered=None if ordered is None else [ordered],
    )[0]


def global_masks(
    scores: list[np.ndarray],
    sparsity: float,
    layer_cap: float,
    min_row_weights: int = 0,
    ordered: list[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """The weakest weights over all layers together, capped per layer and per row.

    Scores must be comparable across layers (the method's responsibility). ``ordered``: each
    layer's ``sorted_rows`` when the caller has them.
    """
    # One flat [sum of layer sizes] array of the eligible scores (inf where a weight may not
    # go), filled in place: MiniLM's 22M scores take 88 MB per copy.
    flat = np.empty(sum(s.size for s in scores), dtype=np.result_type(*scores))
    offset = 0
    for k, layer_scores in enumerate(scores):
        cap = row_cap(layer_scores.shape[1], sparsity, min_row_weights)
        kth = None
        if ordered is not None and 0 < cap < layer_scores.shape[1]:
            kth = ordered[k][:, cap - 1 : cap]
        capped = _row_smallest(layer_scores, cap, kth)
        masked = flat[offset : offset + layer_scores.size]
        masked[...] = layer_scores.ravel()
        masked[~capped.ravel()] = np.inf
        del capped
        layer_limit = math.floor(layer_cap * masked.size)
        # The layer cap binds only when more weights are eligible than it allows (the row caps
        # usually see to that already): otherwise the selection below would keep every
        # eligible weight and change nothing (EfficientNet-Lite0: 51 selections per call).
        if layer_limit < int(np.isfinite(masked).sum()):
            masked[~_smallest_mask(masked, layer_limit)] = np.inf
        offset += layer_scores.size
    total = min(pruned_count(flat.size, sparsity), int(np.isfinite(flat).sum()))
    prune = _smallest_mask(flat, total)
    del flat
    masks, offset = [], 0
    for layer_scores in scores:
        size = layer_scores.size
        masks.append(~prune[offset : offset + size].reshape(layer_scores.shape))
        offset += size
    return masks


def nm_mask(scores: np.ndarray, pattern: NMPattern) -> np.ndarray:
    """Keep the ``n`` strongest of every ``m`` consecutive columns of each row.

    A trailing group shorter than ``m`` keeps min(n, its length).
    """
    rows, columns = scores.shape
    n, m = pattern.n, pattern.m
    keep = np.zeros(scores.shape, dtype=bool)
    full = columns - columns % m
    if full:
        grouped = scores[:, :full].reshape(rows, full // m, m)
        rank = np.argsort(np.argsort(-grouped, axis=2, kind="stable"), axis=2, kind="stable")
        keep[:, :full] = (rank < n).reshape(rows, full)
    if full < columns:
        tail = scores[:, full:]
        rank = np.argsort(np.argsort(-tail, axis=1, kind="stable"), axis=1, kind="stable")
        keep[:, full:] = rank < n
    return keep


def shared_sparsity(
    fixed: list[tuple[int, float]], shared_size: int, sparsity: float
) -> tuple[float, float]:
    """(sparsity the layers without a --layer override share, the overall sparsity it implies).

    ``fixed``: (size, sparsity) of every overridden layer. The shared value makes the total
    over all layers ``sparsity`` when it lies in [0, MAX_SHARED]; outside that it is clipped
    (the overrides alone remove too much, or leave too little to the others) and the second
    value says what the overall sparsity then is.
    """
    fixed_pruned = sum(pruned_count(size, s) for size, s in fixed)
    total = shared_size + sum(size for size, _ in fixed)
    if shared_size == 0:
        return 0.0, fixed_pruned / total if total else 0.0
    needed = (sparsity * total - fixed_pruned) / shared_size
    shared = min(max(needed, 0.0), MAX_SHARED)
    return shared, (fixed_pruned + shared * shared_size) / total


# The layers without an override never lose more than this share between them.
MAX_SHARED = 0.99


def layer_select(
    scores: np.ndarray,
    sparsity: float,
    group: str,
    pattern: NMPattern | None,
    min_row_weights: int,
    ordered: np.ndarray | None = None,
) -> np.ndarray:
    """The keep mask of one layer pruned on its own to ``sparsity`` (exact count): ``row``
    selection per row, ``layer`` / ``global`` over the layer (with the row floors).
    ``ordered``: ``sorted_rows(scores)``, for a caller selecting several levels."""
    if pattern is not None:
        return nm_mask(scores, pattern)
    if group == "row":
        return row_mask(scores, sparsity, ordered)
    return layer_mask(scores, sparsity, min_row_weights, ordered)


@dataclass(frozen=True)
class Selection:
    """How a run chooses its masks, as explicit values: the selection ``group`` (``row``,
    ``layer`` or ``global``), an N:M ``pattern`` (it overrides the group), the largest share
    ``layer_cap`` global selection may take from one layer, and the row floors."""

    group: str
    pattern: NMPattern | None = None
    layer_cap: float = 1.0
    min_row_weights: int = 0


def _select_row(scores: list[np.ndarray], target: float, how: Selection) -> list[np.ndarray]:
    targets = allocate([s.shape for s in scores], target, how.min_row_weights)
    return [row_mask(s, t) for s, t in zip(scores, targets, strict=True)]


def _select_layer(scores: list[np.ndarray], target: float, how: Selection) -> list[np.ndarray]:
    targets = allocate([s.shape for s in scores], target, how.min_row_weights)
    floor = how.min_row_weights
    return [layer_mask(s, t, floor) for s, t in zip(scores, targets, strict=True)]


def _select_global(scores: list[np.ndarray], target: float, how: Selection) -> list[np.ndarray]:
    return global_masks(scores, target, how.layer_cap, how.min_row_weights)


# One entry per selection group (``--group``): all layers' keep masks at once.
SELECTIONS: dict[str, Callable[[list[np.ndarray], float, Selection], list[np.ndarray]]] = {
    "row": _select_row,
    "layer": _select_layer,
    "global": _select_global,
}


def select_masks(scores: list[np.ndarray], how: Selection, target: float) -> list[np.ndarray]:
    """Keep masks for every layer, removing ``target`` of their weights together under
    ``how``'s pattern or selection group."""
    if how.pattern is not None:
        return [nm_mask(s, how.pattern) for s in scores]
    return SELECTIONS[how.group](scores, target, how)
