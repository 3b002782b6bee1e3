"""Where a part's features are (the feature axis, sequence outputs) and its tensors reshaped
to the rows or per-sample vectors the kinds fold."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .selectors import OutputSelector


def _is_sequence(shape: tuple[int, ...], feed: Mapping[str, np.ndarray]) -> bool:
    """[B, S, ..., H] whose (B, S) is the shape of a rank-2 integer input (tokens, mask)."""
    if len(shape) < 3:
        return False
    return any(
        v.ndim == 2
        and (np.issubdtype(v.dtype, np.integer) or v.dtype == np.bool_)
        and v.shape == shape[:2]
        for v in feed.values()
    )


@dataclass(frozen=True)
class _Layout:
    """How a part's [B, ...] tensor is read: which axis holds the features, and whether it is a
    sequence output (positions masked by the sample mask)."""

    feature_axis: int | None  # None: one feature (rank <= 1)
    sequence: bool


def _layout(
    shape: tuple[int, ...],
    feed: Mapping[str, np.ndarray],
    declared: Sequence[int | str | None] | None = None,
) -> _Layout:
    """Where the features are. ``declared``: the output's shape in the model (symbolic dims as
    str/None), when known; a dynamic axis (sequence length, anchors of a dynamic-size image)
    is never the feature axis, since its size changes from batch to batch."""
    if len(shape) <= 1:
        return _Layout(None, False)
    if _is_sequence(shape, feed):
        return _Layout(len(shape) - 1, True)

    def static(axis: int) -> bool:
        return declared is None or len(declared) != len(shape) or isinstance(declared[axis], int)

    for axis in (1, len(shape) - 1):
        if static(axis):
            return _Layout(axis, False)
    return _Layout(None, False)


def _declared_part(
    selector: OutputSelector, declared: Sequence[int | str | None] | None
) -> Sequence[int | str | None] | None:
    """The declared shape of a selected part, when the selection keeps every axis (slices
    only): a slice of a static axis is static, of a dynamic one dynamic."""
    if declared is None or selector.index is None:
        return declared
    if all(isinstance(item, slice) for item in selector.index):
        return declared
    return None


def _feature_count(shape: tuple[int, ...], layout: _Layout) -> int:
    return 1 if layout.feature_axis is None else shape[layout.feature_axis]


def _rows_of(array: np.ndarray, layout: _Layout) -> np.ndarray:
    """[N, F]: every position a row, the features last."""
    if layout.feature_axis is None:
        return array.reshape(-1, 1)
    moved = np.moveaxis(array, layout.feature_axis, -1)
    return moved.reshape(-1, moved.shape[-1])


def _row_mask(
    shape: tuple[int, ...], layout: _Layout, mask: np.ndarray | None
) -> np.ndarray | None:
    """[N] keep mask matching ``_rows_of`` (positions of a sequence output whose mask is 1)."""
    if mask is None or not layout.sequence or mask.shape != shape[:2]:
        return None
    inner = int(np.prod(shape[2:-1], dtype=np.int64))  # axes between S and the features
    return np.repeat(mask.reshape(-1) != 0, inner)


def _per_sample(array: np.ndarray, mask: np.ndarray | None, layout: _Layout) -> np.ndarray:
    """[B, D]: each sample flattened, padded positions zeroed (so they add nothing)."""
    if mask is not None and layout.sequence and mask.shape == array.shape[:2]:
        keep = (mask != 0).reshape(mask.shape + (1,) * (array.ndim - 2))
        array = np.where(keep, array, 0)
    return array.reshape(array.shape[0], -1) if array.ndim else array.reshape(1, 1)


def _pooled(array: np.ndarray, mask: np.ndarray | None, layout: _Layout) -> np.ndarray:
    """[B, H]: mean over the positions (real tokens only for a masked sequence output)."""
    a = array.astype(np.float64)
    if a.ndim <= 2 or layout.feature_axis is None:
        return a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1)
    a = np.moveaxis(a, layout.feature_axis, -1)  # [B, ..., H]
    flat = a.reshape(a.shape[0], -1, a.shape[-1])  # [B, P, H]
    if mask is not None and layout.sequence and mask.shape == array.shape[:2]:
        inner = int(np.prod(array.shape[2:-1], dtype=np.int64))
        weights = np.repeat((mask != 0).astype(np.float64), inner, axis=1)  # [B, P]
    else:
        weights = np.ones(flat.shape[:2])
    counts = np.maximum(weights.sum(axis=1, keepdims=True), 1.0)
    return np.einsum("bp,bph->bh", weights, flat) / counts
