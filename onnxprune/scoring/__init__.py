"""Scoring methods: one registry; the CLI's --method choices and what calibration gathers come
from it. A method is a pure function ``score(W, stats) -> scores`` on the ``(out, K)`` matrix
view (higher = more important), plus an optional bias compensation for what it removes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..calibrate.stats import LayerStats

ScoreFn = Callable[[np.ndarray, LayerStats], np.ndarray]
# (W [out, K], stats, keep mask [out, K]) -> bias change [out] in units of W @ x
CompensateFn = Callable[[np.ndarray, LayerStats, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ScoringMethod:
    name: str
    score: ScoreFn
    default_group: str
    description: str
    needs_gates: bool = False
    compensate: CompensateFn | None = None
    # Ablation variants: reachable from the Python API and the benchmark, not the CLI.
    hidden: bool = False
    # --group auto also tries these registered methods (same statistics) in place of this one.
    auto_variants: tuple[str, ...] = ()
    # The mask is chosen during reconstruction (SparseGPT), not from ``score`` up front.
    adaptive_mask: bool = False
    # What the method does when --update / --allocation are not given.
    default_update: bool = False
    default_stat_correction: bool = False
    default_allocation: str = "group"


METHODS: dict[str, ScoringMethod] = {}


def register(method: ScoringMethod) -> ScoringMethod:
    if method.name in METHODS:
        raise ValueError(f"scoring method {method.name!r} registered twice")
    METHODS[method.name] = method
    return method


def available_methods(include_hidden: bool = False) -> list[str]:
    return [name for name, m in METHODS.items() if include_hidden or not m.hidden]


def get_method(name: str) -> ScoringMethod:
    return METHODS[name]


def input_rms(stats: LayerStats, rows: int) -> np.ndarray:
    """||X_j|| per column as a root mean square over samples, expanded to [rows, K]."""
    return np.sqrt(stats.row_expand(stats.inputs.mean_square, rows))


# Registration happens on import; the order here is the order of the CLI's choices.
from . import contrib, magnitude, ria, sparsegpt, stade, wanda  # noqa: E402, F401
