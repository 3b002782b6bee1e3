"""Unit importance for structured removal (pure functions) and the unit-scorer registry.

Shapes: a reader's weight matrix view is ``W[out, K]``; ``mean`` / ``mean_square`` are its input
moments per column ``[K]``; ``columns[u]`` lists the columns that read unit ``u``. A writer's
``rows[u]`` lists the rows (output channels) that produce unit ``u``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Every group keeps at least this share of its units (and at least one), so no layer vanishes.
KEEP_FLOOR = 0.1


@dataclass
class ReaderData:
    matrix: np.ndarray  # [out, K] float64
    mean: np.ndarray  # [K]  E[x_k]
    mean_square: np.ndarray  # [K]  E[x_k^2]
    columns: list[np.ndarray]  # per unit


@dataclass
class WriterData:
    matrix: np.ndarray  # [out, K] float64
    rows: list[np.ndarray]  # per unit


@dataclass
class GroupData:
    units: int
    readers: list[ReaderData]
    writers: list[WriterData]


def variance_importance(group: GroupData) -> np.ndarray:
    """The method brief, section 5 (docs/METHOD.md, "The method brief"): ``sum over the
    unit's columns of Var(x_k) * ||W[:, k]||^2``, summed over readers: how much the readers'
    outputs move when the unit is held at its mean."""
    scores = np.zeros(group.units)
    for reader in group.readers:
        variance = np.maximum(reader.mean_square - reader.mean**2, 0.0)
        per_column = variance * np.square(reader.matrix).sum(axis=0)
        scores += np.array([per_column[c].sum() for c in reader.columns])
    return scores


def l1_importance(group: GroupData) -> np.ndarray:
    """The usual baseline: L1 norm of the weights that produce the unit."""
    scores = np.zeros(group.units)
    for writer in group.writers:
        magnitude = np.abs(writer.matrix).sum(axis=1)
        scores += np.array([magnitude[r].sum() for r in writer.rows])
    return scores


def compensation(reader: ReaderData, removed: np.ndarray) -> np.ndarray:
    """Bias change ``[out]`` that holds the removed units at their calibration mean."""
    columns = np.concatenate([reader.columns[u] for u in removed] + [np.zeros(0, np.int64)])
    return reader.matrix[:, columns] @ reader.mean[columns]


def keep_floor(units: int) -> int:
    return max(1, math.ceil(KEEP_FLOOR * units))


def standardised(scores: np.ndarray) -> np.ndarray:
    """Scores as z-values within their group, so that groups compare; units whose score is
    zero (never out of the blind range, or unread) go first (-inf)."""
    spread = scores.std()
    z = (scores - scores.mean()) / spread if spread > 0 else np.zeros_like(scores)
    dead = scores <= 1e-12 * max(float(np.abs(scores).max(initial=0.0)), 1e-300)
    return np.where(dead, -np.inf, z)


def _choose_lowest(keys: list[np.ndarray], ratio: float) -> list[np.ndarray]:
    """The ``round(ratio * all units)`` units with the lowest keys over all groups, each group
    keeping at least ``keep_floor`` units."""
    total = sum(len(k) for k in keys)
    candidates = []
    for g, key in enumerate(keys):
        order = np.argsort(key, kind="stable")[: len(key) - keep_floor(len(key))]
        candidates += [(float(key[u]), g, int(u)) for u in order]
    candidates.sort()
    removed: list[list[int]] = [[] for _ in keys]
    for _, g, u in candidates[: round(ratio * total)]:
        removed[g].append(u)
    return [np.array(sorted(r), dtype=np.int64) for r in removed]


def choose_relative(scores: list[np.ndarray], ratio: float) -> list[np.ndarray]:
    """Default allocation: each unit's share of its group's total score, one global threshold.
    A unit of a narrow layer (a stem conv's channel, an attention head) carries a large share
    and stays; wide layers with many near-idle units give up most."""
    return _choose_lowest([s / max(float(s.sum()), 1e-300) for s in scores], ratio)


def choose_standardised(scores: list[np.ndarray], ratio: float) -> list[np.ndarray]:
    """The method brief's section 5 as written (FLAP; docs/METHOD.md): z-scores per group,
    one global threshold."""
    return _choose_lowest([standardised(s) for s in scores], ratio)


def choose_raw(scores: list[np.ndarray], ratio: float) -> list[np.ndarray]:
    return _choose_lowest(scores, ratio)


def choose_uniform(scores: list[np.ndarray], ratio: float) -> list[np.ndarray]:
    """Remove ``round(ratio * units)`` lowest-scoring units from every group (floor kept)."""
    removed = []
    for group_scores in scores:
        units = len(group_scores)
        count = min(round(ratio * units), units - keep_floor(units))
        order = np.argsort(group_scores, kind="stable")[:count]
        removed.append(np.sort(order).astype(np.int64))
    return removed


# --structured-allocation: how the removed share is spread over the groups. "share" and
# "uniform" are offered; the other two are ablations the benchmark compares.
UNIT_ALLOCATIONS: dict[str, Callable[[list[np.ndarray], float], list[np.ndarray]]] = {
    "share": choose_relative,
    "uniform": choose_uniform,
    "standardised": choose_standardised,
    "raw": choose_raw,
}
_HIDDEN_ALLOCATIONS = ("standardised", "raw")


def available_unit_allocations(include_hidden: bool = False) -> list[str]:
    return [n for n in UNIT_ALLOCATIONS if include_hidden or n not in _HIDDEN_ALLOCATIONS]


@dataclass(frozen=True)
class UnitScorer:
    name: str
    score: Callable[[GroupData], np.ndarray]
    # Add the removed units' mean contribution to the readers' biases.
    compensate: bool
    # The allocation used unless --structured-allocation names another.
    choose: Callable[[list[np.ndarray], float], list[np.ndarray]]
    description: str
    # Ablations the benchmark compares; not offered by the CLI.
    hidden: bool = False


UNIT_SCORERS: dict[str, UnitScorer] = {}


def register_unit_scorer(scorer: UnitScorer) -> UnitScorer:
    UNIT_SCORERS[scorer.name] = scorer
    return scorer


def available_unit_scorers(include_hidden: bool = False) -> list[str]:
    return [name for name, s in UNIT_SCORERS.items() if include_hidden or not s.hidden]


register_unit_scorer(
    UnitScorer(
        "variance",
        variance_importance,
        compensate=True,
        choose=choose_relative,
        description="output variance x reader weight norm; units ranked by their share of the "
        "group's total, one global threshold; mean compensation (default)",
    )
)
register_unit_scorer(
    UnitScorer(
        "l1",
        l1_importance,
        compensate=False,
        choose=choose_uniform,
        description="L1 norm of the producing weights, the same share from every group, no "
        "compensation (the usual baseline)",
    )
)
# The benchmark's allocation ablation under the scorer names its results carry
# ("variance-uniform" is `--structured-score variance --structured-allocation uniform`).
for _allocation in ("standardised", "uniform", "raw"):
    register_unit_scorer(
        UnitScorer(
            f"variance-{_allocation}",
            variance_importance,
            True,
            UNIT_ALLOCATIONS[_allocation],
            "allocation ablation",
            hidden=True,
        )
    )
