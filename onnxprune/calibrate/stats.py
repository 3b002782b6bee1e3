"""Running statistics: float64 sums folded per batch, mergeable, never raw activations.

Shapes: ``K`` is the number of columns of a layer's weight matrix view (see ``layers.py``),
``G`` the number of conv groups (1 for MatMul/Gemm), ``out`` the number of rows (neurons).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class InputMoments:
    """Per-column moments of a layer's input, summed over samples (tokens, pixels, rows)."""

    count: float
    x_sum: np.ndarray  # (G, K)
    x_sq_sum: np.ndarray  # (G, K)
    # sum_n x(n) x(n)^T per group, (G, K, K): the layer Hessian of ||W x - W' x||^2, up to 2/N
    xtx: np.ndarray | None = None
    # update_target "dense" (--sequential --update): the same layer's input in the dense model
    # on the same samples, x_ref. ``cross`` = sum_n x_ref(n) x(n)^T (G, K, K); ``ref_sum`` =
    # sum_n x_ref(n) (G, K). None otherwise.
    cross: np.ndarray | None = None
    ref_sum: np.ndarray | None = None

    def merge(self, other: InputMoments) -> InputMoments:
        return InputMoments(
            self.count + other.count,
            self.x_sum + other.x_sum,
            self.x_sq_sum + other.x_sq_sum,
            _add(self.xtx, other.xtx),
            _add(self.cross, other.cross),
            _add(self.ref_sum, other.ref_sum),
        )

    def merge_into(self, other: InputMoments) -> InputMoments:
        """``merge`` that adds ``other`` into this object's arrays (same sums, no new copy)."""
        self.count += other.count
        self.x_sum += other.x_sum
        self.x_sq_sum += other.x_sq_sum
        self.xtx = _add_into(self.xtx, other.xtx)
        self.cross = _add_into(self.cross, other.cross)
        self.ref_sum = _add_into(self.ref_sum, other.ref_sum)
        return self

    @property
    def mean(self) -> np.ndarray:
        return self.x_sum / max(self.count, 1.0)

    @property
    def mean_square(self) -> np.ndarray:
        return self.x_sq_sum / max(self.count, 1.0)


def _add(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    return a + b if a is not None and b is not None else None


def _add_into(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """``_add`` into ``a``'s array (no copy); None when either side was not gathered."""
    if a is None or b is None:
        return None
    a += b
    return a


@dataclass
class GatedMoments:
    """Moments weighted by each neuron's squared blind-range gate ``g_i(n)^2`` (the method
    brief, 1.3)."""

    g2_sum: np.ndarray  # (out,)          S0_i
    gx_sum: np.ndarray  # (out, K)        S1_ij
    gx_sq_sum: np.ndarray  # (out, K)     S2_ij

    def merge(self, other: GatedMoments) -> GatedMoments:
        return GatedMoments(
            self.g2_sum + other.g2_sum,
            self.gx_sum + other.gx_sum,
            self.gx_sq_sum + other.gx_sq_sum,
        )

    def merge_into(self, other: GatedMoments) -> GatedMoments:
        self.g2_sum += other.g2_sum
        self.gx_sum += other.gx_sum
        self.gx_sq_sum += other.gx_sq_sum
        return self


@dataclass
class LayerStats:
    """Everything the scoring methods may read about one layer's input."""

    inputs: InputMoments
    # None when the layer has no gate we can see through (g = 1): derived on demand.
    gated: GatedMoments | None
    gate_kind: str

    def row_expand(self, per_group: np.ndarray, rows: int) -> np.ndarray:
        """(G, K) -> (rows, K): each row reads its own conv group's columns."""
        groups = per_group.shape[0]
        return np.repeat(per_group, rows // groups, axis=0)

    def gated_or_identity(self, rows: int) -> GatedMoments:
        if self.gated is not None:
            return self.gated
        x_sum = self.row_expand(self.inputs.x_sum, rows)
        x_sq_sum = self.row_expand(self.inputs.x_sq_sum, rows)
        return GatedMoments(np.full(rows, self.inputs.count), x_sum, x_sq_sum)


class StatsOnDisk(Mapping[str, LayerStats]):
    """Layer statistics kept as one ``.npz`` file per layer, read back on each access
    (big-model mode: the gated moments of every layer together are twice the model in float64).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, Path] = {}

    def store(self, name: str, stats: LayerStats) -> None:
        arrays = {
            "count": np.array(stats.inputs.count),
            "x_sum": stats.inputs.x_sum,
            "x_sq_sum": stats.inputs.x_sq_sum,
            "gate_kind": np.array(stats.gate_kind),
        }
        if stats.inputs.xtx is not None:
            arrays["xtx"] = stats.inputs.xtx
        if stats.gated is not None:
            arrays["g2_sum"] = stats.gated.g2_sum
            arrays["gx_sum"] = stats.gated.gx_sum
            arrays["gx_sq_sum"] = stats.gated.gx_sq_sum
        path = self.directory / f"{len(self._files)}.npz"
        np.savez(path, **arrays)  # type: ignore[arg-type]
        self._files[name] = path

    def __getitem__(self, name: str) -> LayerStats:
        with np.load(self._files[name]) as data:
            inputs = InputMoments(
                float(data["count"]),
                data["x_sum"],
                data["x_sq_sum"],
                data.get("xtx"),
            )
            gated = None
            if "gx_sum" in data:
                gated = GatedMoments(data["g2_sum"], data["gx_sum"], data["gx_sq_sum"])
            return LayerStats(inputs, gated, str(data["gate_kind"]))

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


def dense_moments(
    x2d: np.ndarray, g2: np.ndarray | None, hessian: bool = False
) -> tuple[InputMoments, GatedMoments | None]:
    """Moments of one batch: ``x2d`` [R, K] layer inputs, ``g2`` [R, out] squared gates."""
    x = x2d.astype(np.float64)
    xtx = (x.T @ x)[None] if hessian else None
    inputs = InputMoments(float(x.shape[0]), x.sum(0)[None], (x * x).sum(0)[None], xtx)
    if g2 is None:
        return inputs, None
    g = g2.astype(np.float64)
    gated = GatedMoments(g.sum(0), g.T @ x, g.T @ (x * x))
    return inputs, gated
