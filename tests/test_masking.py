"""Masks: exact counts, row floors, N:M patterns (property tests over random score arrays)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxprune import masking
from onnxprune.config import NMPattern
from onnxprune.masking import (
    allocate,
    global_masks,
    layer_mask,
    nm_mask,
    pruned_count,
    row_cap,
    row_mask,
)

shapes = st.tuples(st.integers(1, 12), st.integers(1, 40))
sparsities = st.floats(0.0, 0.99)


def _scores(shape: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(shape)


def over_random_scores(test: Callable[..., None]) -> Callable[..., None]:
    """Run ``test(shape, sparsity, seed)`` on 150 drawn cases (scores: ``_scores``)."""
    cases = given(shapes, sparsities, st.integers(0, 2**16))(test)
    return settings(max_examples=150, deadline=None)(cases)  # type: ignore[no-any-return]


@over_random_scores
def test_row_mask_prunes_exactly_the_target_and_balances_rows(
    shape: tuple[int, int], sparsity: float, seed: int
) -> None:
    keep = row_mask(_scores(shape, seed), sparsity)
    assert (~keep).sum() == pruned_count(keep.size, sparsity)
    per_row = (~keep).sum(axis=1)
    assert per_row.max() - per_row.min() <= 1  # within one weight per group (row)


@over_random_scores
def test_row_mask_removes_the_weakest_of_each_row(
    shape: tuple[int, int], sparsity: float, seed: int
) -> None:
    scores = _scores(shape, seed)
    keep = row_mask(scores, sparsity)
    for row_scores, row_keep in zip(scores, keep, strict=True):
        if row_keep.all() or not row_keep.any():
            continue
        assert row_scores[~row_keep].max() <= row_scores[row_keep].min()


@over_random_scores
def test_layer_mask_exact_count_and_row_floor(
    shape: tuple[int, int], sparsity: float, seed: int
) -> None:
    keep = layer_mask(_scores(shape, seed), sparsity)
    assert (~keep).sum() == pruned_count(keep.size, sparsity)
    assert (~keep).sum(axis=1).max() <= row_cap(shape[1], sparsity)


def test_layer_mask_prefers_globally_weak_weights() -> None:
    scores = np.array([[1.0, 2.0, 3.0, 4.0], [100.0, 200.0, 300.0, 400.0]])
    keep = layer_mask(scores, 0.25)
    # Two weights go: both from the weak row, not one per row.
    assert keep.tolist() == [[False, False, True, True], [True, True, True, True]]


def test_layer_mask_row_floor_stops_a_row_from_dying() -> None:
    scores = np.vstack([np.full(8, 1e-6), np.arange(1.0, 9.0)])
    keep = layer_mask(scores, 0.5)
    assert keep[0].sum() >= 1  # the weak row keeps at least its floor
    assert (~keep).sum() == 8


@settings(max_examples=60, deadline=None)
@given(st.lists(shapes, min_size=1, max_size=4), st.floats(0.0, 0.95), st.integers(0, 2**16))
def test_global_masks_hit_the_total_and_respect_the_layer_cap(
    layer_shapes: list[tuple[int, int]], sparsity: float, seed: int
) -> None:
    scores = [_scores(s, seed + i) * (i + 1) for i, s in enumerate(layer_shapes)]
    cap = 0.9
    masks = global_masks(scores, sparsity, layer_cap=cap)
    total = sum(m.size for m in masks)
    pruned = sum(int((~m).sum()) for m in masks)
    eligible = sum(
        min(int(np.floor(cap * m.size)), m.shape[0] * row_cap(m.shape[1], sparsity)) for m in masks
    )
    assert pruned == min(pruned_count(total, sparsity), eligible)
    for m in masks:
        assert (~m).sum() <= np.floor(cap * m.size)


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 4)])
@settings(max_examples=60, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_nm_keeps_exactly_n_of_every_m(n: int, m: int, shape: tuple[int, int], seed: int) -> None:
    scores = _scores(shape, seed)
    keep = nm_mask(scores, NMPattern(n, m))
    rows, columns = shape
    full = columns - columns % m
    groups = keep[:, :full].reshape(rows, -1, m)
    assert (groups.sum(axis=2) == n).all()
    if full < columns:
        assert (keep[:, full:].sum(axis=1) == min(n, columns - full)).all()
    # Within each group the kept weights are the strongest.
    grouped_scores = scores[:, :full].reshape(rows, -1, m)
    kept_min = np.where(groups, grouped_scores, np.inf).min(axis=2)
    dropped_max = np.where(groups, -np.inf, grouped_scores).max(axis=2)
    assert (dropped_max <= kept_min).all()


def test_sparsity_zero_keeps_everything() -> None:
    scores = _scores((5, 7), 0)
    assert row_mask(scores, 0.0).all()
    assert layer_mask(scores, 0.0).all()
    assert all(m.all() for m in global_masks([scores], 0.0, 0.98))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 64), st.integers(1, 300)), min_size=1, max_size=6),
    st.floats(0.0, 0.95),
    st.integers(0, 16),
)
def test_allocate_meets_the_overall_target_within_the_row_floor(
    shapes: list[tuple[int, int]], sparsity: float, floor: int
) -> None:
    targets = allocate(shapes, sparsity, floor)
    sizes = np.array([r * c for r, c in shapes], dtype=np.float64)
    caps = np.array([1 - min(c, floor) / c for _, c in shapes])
    assert all(0.0 <= t <= cap + 1e-12 for t, cap in zip(targets, caps, strict=True))
    achieved = float(np.dot(targets, sizes))
    reachable = float(np.dot(caps, sizes))
    # The overall target is met whenever the floors leave enough weights to remove.
    assert achieved == pytest.approx(min(sparsity * sizes.sum(), reachable), abs=1.0)
    # Layers the floor does not bind are never pruned less than the request.
    for target, cap in zip(targets, caps, strict=True):
        if cap >= sparsity:
            assert target >= sparsity - 1e-12


def test_allocate_protects_a_depthwise_layer_and_shifts_its_share() -> None:
    # A 3x3 depthwise conv (K = 9) next to a wide pointwise layer (K = 256).
    targets = allocate([(64, 9), (128, 256)], 0.8, 8)
    assert targets[0] == pytest.approx(1 - 8 / 9)
    total = 64 * 9 + 128 * 256
    assert targets[0] * 64 * 9 + targets[1] * 128 * 256 == pytest.approx(0.8 * total, abs=1)
    assert targets[1] > 0.8


def _in_row_rank(scores: np.ndarray) -> np.ndarray:
    """rank[i, j] = position of scores[i, j] in its row, ascending (stable for ties)."""
    order = np.argsort(scores, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(scores.shape[1]), scores.shape), 1)
    return rank


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8), st.integers(1, 12), st.integers(0, 2**16))
def test_partition_selection_equals_the_stable_sort(rows: int, columns: int, seed: int) -> None:
    """The partition-based selections pick exactly what a stable sort picks, ties included
    (scores drawn from 4 values, so ties are everywhere)."""
    scores = np.random.default_rng(seed).integers(0, 4, size=(rows, columns)).astype(float)
    for count in range(columns + 2):
        np.testing.assert_array_equal(
            masking._row_smallest(scores, count), _in_row_rank(scores) < count
        )
    flat = scores.ravel()
    for count in range(flat.size + 2):
        chosen = set(masking._smallest(flat, count).tolist())
        assert chosen == set(np.argsort(flat, kind="stable")[:count].tolist())


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 3000),
    st.integers(0, 2**16),
    st.sampled_from(["ties", "spread", "sorted", "reversed"]),
    st.floats(0.0, 0.3),
)
def test_the_bracketed_kth_smallest_equals_a_full_partition(
    size: int, seed: int, kind: str, inf_share: float
) -> None:
    """``kth_smallest`` without the whole-array copy (``copy_limit=0`` forces the sampled
    bracket even on small arrays) gives the value ``np.partition`` gives, for every count:
    heavy ties, ordered inputs (the strided sample then sees one end only) and inf entries
    (ineligible weights in global selection)."""
    rng = np.random.default_rng(seed)
    flat = {
        "ties": rng.integers(0, 5, size).astype(np.float64),
        "spread": rng.normal(size=size),
        "sorted": np.sort(rng.normal(size=size)),
        "reversed": np.sort(rng.normal(size=size))[::-1].copy(),
    }[kind]
    flat[rng.random(size) < inf_share] = np.inf
    expected = np.sort(flat)
    for count in sorted({1, size, *rng.integers(1, size + 1, 20).tolist()}):
        got = masking.kth_smallest(flat, count, copy_limit=0)
        assert got == expected[count - 1]
        assert got.dtype == flat.dtype


def test_the_kth_smallest_bracket_holds_on_row_structured_scores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scores laid out row by row, each column on its own scale (rows 64 long, as a multiple-
    of-64 layer width gives): the sample still brackets the value, so only the entries
    inside the bracket are partitioned, never the whole array (every 64th entry saw one
    column only and missed)."""
    rng = np.random.default_rng(5)
    rows = rng.random((20_000, 64)) * np.geomspace(1e-3, 1e3, 64)  # column scales differ
    flat = rows.ravel()
    partitioned: list[int] = []
    real = np.partition

    def spy(array: np.ndarray, kth: object, *args: object, **kwargs: object) -> np.ndarray:
        partitioned.append(array.size)
        return real(array, kth, *args, **kwargs)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(masking.np, "partition", spy)
    count = flat.size // 2
    assert masking.kth_smallest(flat, count, copy_limit=0) == real(flat, count - 1)[count - 1]
    assert max(partitioned) < flat.size // 10
