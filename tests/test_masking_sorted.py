"""The masks read from rows sorted once (``masking.sorted_rows``, shared by a layer's levels)
equal the masks each level computes on its own, ties included."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxprune import masking


def _tied(rows: int, columns: int, seed: int) -> np.ndarray:
    """Scores from 4 values (ties everywhere) with one all-zero row (a dead neuron)."""
    scores = np.random.default_rng(seed).integers(0, 4, size=(rows, columns)).astype(float)
    scores[0] = 0.0
    return scores


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 9), st.integers(1, 14), st.integers(0, 2**16), st.booleans())
def test_sorted_rows_give_the_same_row_and_layer_masks(
    rows: int, columns: int, seed: int, tied: bool
) -> None:
    rng = np.random.default_rng(seed)
    scores = _tied(rows, columns, seed) if tied else rng.random((rows, columns))
    ordered = masking.sorted_rows(scores)
    for level in np.linspace(0.0, 0.99, 12):
        np.testing.assert_array_equal(
            masking.row_mask(scores, level, ordered), masking.row_mask(scores, level)
        )
        for floor in (0, 2):
            np.testing.assert_array_equal(
                masking.layer_mask(scores, level, floor, ordered),
                masking.layer_mask(scores, level, floor),
            )


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 9), st.integers(1, 14), st.integers(0, 2**16))
def test_row_mask_is_a_stable_sort_per_row(rows: int, columns: int, seed: int) -> None:
    """Each row loses its weakest weights in stable-sort order (ties to the lower column),
    and the rows losing one more are those whose next weight is weakest (ties: lower row)."""
    scores = _tied(rows, columns, seed)
    order = np.argsort(scores, axis=1, kind="stable")
    rank = np.argsort(order, axis=1, kind="stable")
    for level in np.linspace(0.0, 0.99, 12):
        total = masking.pruned_count(scores.size, level)
        base = min(total // rows, columns)
        extra = total - rows * base
        counts = np.full(rows, base)
        if extra > 0 and base < columns:
            next_weakest = np.take_along_axis(scores, order[:, base : base + 1], axis=1)[:, 0]
            counts[np.argsort(next_weakest, kind="stable")[:extra]] += 1
        expected = rank < counts[:, None]
        np.testing.assert_array_equal(~masking.row_mask(scores, level), expected)
