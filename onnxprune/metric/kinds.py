"""The parts' accumulators: one per kind, each folding batches of [N, F] rows or [B, D]
per-sample arrays into one score in [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .selectors import DEFAULT_CELL_THRESHOLD


def _kept(
    reference: np.ndarray, candidate: np.ndarray, rows: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The rows a part scores: all of them, or those the [N] bool mask ``rows`` keeps."""
    return (reference, candidate) if rows is None else (reference[rows], candidate[rows])


class _Part(Protocol):
    def add(self, reference: np.ndarray, candidate: np.ndarray, rows: np.ndarray | None) -> None:
        """Fold one batch. ``reference``/``candidate``: [N, F] (features last) or [B, ...]
        per-sample layouts as the kind needs; ``rows``: [N] bool keep mask or None."""

    def value(self) -> float: ...


@dataclass
class _Standardized:
    """Per feature f (columns of [N, F]): shifted sums of the original and its square, and the
    squared error, so Var_f and MSE_f come out at the end without buffering any output.
    The shift (the first batch's mean) keeps ``E[a^2] - E[a]^2`` exact for features with a
    large mean and a small spread (pixel coordinates)."""

    shift: np.ndarray | None = None
    count: int = 0
    sum_a: np.ndarray | None = None
    sum_a2: np.ndarray | None = None
    sum_e2: np.ndarray | None = None

    def add(self, reference: np.ndarray, candidate: np.ndarray, rows: np.ndarray | None) -> None:
        a = reference.astype(np.float64)
        e = candidate.astype(np.float64) - a
        a, e = _kept(a, e, rows)
        if a.shape[0] == 0:
            return
        if self.shift is None:
            self.shift = a.mean(axis=0)
            self.sum_a = np.zeros(a.shape[1])
            self.sum_a2 = np.zeros(a.shape[1])
            self.sum_e2 = np.zeros(a.shape[1])
        assert self.sum_a is not None and self.sum_a2 is not None and self.sum_e2 is not None
        d = a - self.shift
        self.count += a.shape[0]
        self.sum_a += d.sum(axis=0)
        self.sum_a2 += (d * d).sum(axis=0)
        self.sum_e2 += (e * e).sum(axis=0)

    def value(self) -> float:
        if self.count == 0 or self.shift is None:
            return 1.0
        assert self.sum_a is not None and self.sum_a2 is not None and self.sum_e2 is not None
        mean_d = self.sum_a / self.count
        variance = np.maximum(self.sum_a2 / self.count - mean_d**2, 0.0)
        second = variance + (self.shift + mean_d) ** 2  # E[a_f^2]
        # A feature that barely varies is compared on a scale set by its own magnitude (float32
        # noise is ~1e-7 of it) and by the output's typical size, never on zero.
        floor = 1e-10 * second + 1e-12 * float(second.mean()) + 1e-30
        nmse = self.sum_e2 / self.count / np.maximum(variance, floor)
        # fmin: a NaN error counts as a lost feature (1), not as a NaN score.
        return float(1.0 - np.fmin(nmse, 1.0).mean())


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row pair of ``a``, ``b`` [N, D] (float64); two zero rows count as 1."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    norms = na * nb
    both_zero = (na == 0) & (nb == 0)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), both_zero * 1.0)


@dataclass
class _Cosine:
    """Per-sample cosine; ``reference``/``candidate`` are [B, D] (masked positions zeroed)."""

    total: float = 0.0
    samples: int = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray, rows: np.ndarray | None) -> None:
        a = reference.astype(np.float64)
        b = candidate.astype(np.float64)
        a, b = _kept(a, b, rows)
        self.total += float(np.nan_to_num(row_cosines(a, b), nan=0.0).sum())
        self.samples += a.shape[0]

    def value(self) -> float:
        return self.total / self.samples if self.samples else 1.0


@dataclass(kw_only=True)
class _Share:
    """A share of counted items: ``hits`` out of ``total`` (1 when nothing was counted)."""

    hits: int = 0
    total: int = 0

    def value(self) -> float:
        return self.hits / self.total if self.total else 1.0


@dataclass
class _TopK(_Share):
    """Share of rows of [N, F] where the original's argmax is among the candidate's k largest."""

    k: int

    def add(self, reference: np.ndarray, candidate: np.ndarray, rows: np.ndarray | None) -> None:
        reference, candidate = _kept(reference, candidate, rows)
        top = reference.argmax(axis=1)
        at_top = np.take_along_axis(candidate, top[:, None], axis=1)
        # Rank of the original's class among the candidate's values (0 = highest).
        rank = (candidate > at_top).sum(axis=1)
        self.hits += int((rank < self.k).sum())
        self.total += reference.shape[0]


@dataclass
class _Agreement(_Share):
    """Share of elements that are exactly equal."""

    def add(self, reference: np.ndarray, candidate: np.ndarray, rows: np.ndarray | None) -> None:
        reference, candidate = _kept(reference, candidate, rows)
        self.hits += int((reference == candidate).sum())
        self.total += reference.size


@dataclass
class _Cells(_Share):
    """Intersection over union of the cells above ``threshold``, summed over all samples
    (``hits``: the intersection, ``total``: the union)."""

    threshold: float

    def add(self, reference: np.ndarray, candidate: np.ndarray, rows: np.ndarray | None) -> None:
        reference, candidate = _kept(reference, candidate, rows)
        on_a, on_b = reference > self.threshold, candidate > self.threshold
        self.hits += int((on_a & on_b).sum())
        self.total += int((on_a | on_b).sum())


def _new_accumulator(kind: str) -> _Part:
    if kind == "standardized":
        return _Standardized()
    if kind in ("cosine", "pooled"):
        return _Cosine()
    if kind == "agreement":
        return _Agreement()
    if kind.startswith("top"):
        return _TopK(int(kind[3:]))
    if kind.startswith("cells"):
        _, _, threshold = kind.partition("@")
        return _Cells(float(threshold) if threshold else DEFAULT_CELL_THRESHOLD)
    raise AssertionError(kind)
