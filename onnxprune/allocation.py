"""Per-layer sparsity from measured sensitivity (``--allocation sensitivity``). Pure functions.

Each layer is pruned alone to a few sparsities around the share the run's selection group gives
it, and the damage to the model's outputs is measured (``Pruner.sensitivity_curves``). The budget
then goes where it hurts least: the summed damage is minimised over piecewise-linear curves
through the measured points (their lower convex hull), under the constraint that the weights
removed over all layers equal the base shares' total. Damage is assumed to add up across
layers, the usual first-order assumption of sensitivity-based allocation.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

# The spacing of the measured sparsities: two steps below a layer's base share, two above.
# Upwards the range is also limited to half the way to the layer's cap (min_row_weights), so
# that a layer near its cap is still measured below it.
LEVEL_STEP = 0.1
# Estimated curves (the default): the smallest layers, together holding at most this share of
# the measured layers' weights, are not measured and stay dense. Measuring a layer costs a run
# of the graph below it, so the first, smallest layers of a CNN cost the most (their suffix is
# nearly the whole model, at its highest resolution) while their share can move the fewest
# weights. EfficientNet-Lite0 at 0.5: its 18 smallest of 50 layers (1% of the weights) took
# 52% of the sensitivity phase, and the whole run went 20.2 -> 14.5 s; top-1 agreement with the
# dense model at 0.5 / 0.7 / 0.8 / 0.9 went 0.3281 / 0.1328 / 0 / 0 -> 0.3125 / 0.1406 / 0 / 0
# (logit cosine 0.6324 / 0.4085 / 0.2431 / 0.0849 -> 0.6310 / 0.4074 / 0.2436 / 0.0834). At 2%
# (20 layers): 13.6 s, 0.3125 / 0.1250. --allocation measured still measures every layer.
UNMEASURED_SHARE = 0.01
# Estimated curves: measuring a layer judges two candidates, each a run of the graph below it
# over the probe samples, so measuring every layer grows with depth squared. All of them
# together may cost this many passes of the model over the calibration samples (a judged run
# counted as the share of the model's multiply-adds downstream of the layer, times the probe
# samples); the layers past it keep their base share (``within_judging_budget``). Where it
# binds (EfficientNet-Lite0 on 64 images: 6 passes to measure all; a 20-block detector at
# 640 px: 10) it cut the builds by 19-53% for up to 0.018 of output cosine (docs/METHOD.md).
JUDGING_PASSES = 2.0
# ... but never fewer than this many runs of the whole model over the probe samples: with a
# small calibration set two passes would leave almost every layer unmeasured, for a saving of
# a few seconds at most. Of the fixed counts tried as the whole budget (6, 12, 24 runs), 12
# was the one that kept every quality point of the grid (docs/METHOD.md).
MIN_JUDGED_RUNS = 12.0


@dataclass(frozen=True)
class SensitivityCurve:
    """Measured damage of one layer pruned alone: ``points`` (sparsity, damage) ascending in
    sparsity; the layer's sparsity stays within the first and the last point."""

    size: int
    points: tuple[tuple[float, float], ...]


def probe_levels(base: float, cap: float, step: float = LEVEL_STEP) -> list[float]:
    """The sparsities a layer is measured at: its base share, two steps below (not under 0)
    and two half-steps of the upward range above. A layer whose share is 0 (kept dense) is not
    measured."""
    if base <= 0.0:
        return []
    up = min(2 * step, (cap - base) / 2)
    levels = sorted(
        {max(base - 2 * step, 0.0), max(base - step, 0.0), base, base + up / 2, base + up}
    )
    return [round(level, 6) for level in levels]


def interpolated_curve(
    levels: list[float], errors: list[float], anchor: int, judged: dict[int, float]
) -> list[tuple[float, float]]:
    """(level, damage) at every level from the damages ``judged`` at a few of them (by index:
    always ``anchor``, the layer's base share, and, when it was judged, the top level).

    The others follow the layer's local error E (``errors``, one per level): damage =
    d_anchor (E / E_anchor)^gamma. 1 - cos grows like the squared output error of the layer,
    gamma = 1, while the error is small, and faster once later layers amplify it: with the top
    level judged too, gamma is fitted through both points (within [0.5, 10]). When nothing was
    seen at the base share but the top level did damage, the curve scales from the top level.
    """
    damage = judged[anchor]
    top = len(levels) - 1
    gamma = 1.0
    if top != anchor and top in judged:
        damage_top = judged[top]
        if damage > 0.0 and damage_top > damage and errors[anchor] > 0.0:
            gamma = math.log(damage_top / damage) / math.log(errors[top] / errors[anchor])
            gamma = min(max(gamma, 0.5), 10.0)
        elif damage_top > damage:
            anchor, damage = top, damage_top
    if errors[anchor] <= 0.0:
        return [(level, judged.get(k, damage)) for k, level in enumerate(levels)]
    return [
        (level, judged.get(k, damage * (error / errors[anchor]) ** gamma))
        for k, (level, error) in enumerate(zip(levels, errors, strict=True))
    ]


def smallest_layers(sizes: list[int], share: float) -> set[int]:
    """Indices of the smallest layers (by ``sizes``, ties in order) whose sizes sum to at most
    ``share`` of the total."""
    allowed = share * sum(sizes)
    chosen: set[int] = set()
    total = 0
    for index in sorted(range(len(sizes)), key=lambda k: sizes[k]):
        total += sizes[index]
        if total > allowed:
            break
        chosen.add(index)
    return chosen


def judging_budget_runs(calibration_samples: int, probe_samples: int) -> float:
    """What all single-layer judgements together may cost, in runs of the whole model over
    the ``probe_samples`` they are judged on: JUDGING_PASSES passes over the calibration
    samples, or MIN_JUDGED_RUNS runs when that is more."""
    passes = JUDGING_PASSES * calibration_samples / max(probe_samples, 1)
    return max(passes, MIN_JUDGED_RUNS)


def within_judging_budget(sizes: list[int], costs: list[float], budget: float) -> set[int]:
    """Indices of the layers to measure when measuring layer k costs ``costs[k]`` and all of
    them may cost at most ``budget``: the layers that move the most weights per unit of cost
    first (ties in order), each one that still fits."""
    order = sorted(range(len(sizes)), key=lambda k: -sizes[k] / max(costs[k], 1e-12))
    chosen: set[int] = set()
    spent = 0.0
    for index in order:
        if spent + costs[index] <= budget:
            chosen.add(index)
            spent += costs[index]
    return chosen


def _lower_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Lower convex hull of points sorted by x, with the y values first made non-decreasing
    (pruning more never helps; a lower measurement further right is noise)."""
    monotone: list[tuple[float, float]] = []
    for x, y in points:
        monotone.append((x, max(y, monotone[-1][1]) if monotone else y))
    hull: list[tuple[float, float]] = []
    for point in monotone:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # Drop the middle point when it lies on or above the chord.
            if (y2 - y1) * (point[0] - x1) >= (point[1] - y1) * (x2 - x1):
                hull.pop()
            else:
                break
        hull.append(point)
    return hull


def allocate_by_sensitivity(curves: list[SensitivityCurve], total_pruned: float) -> list[float]:
    """Per-layer sparsity removing ``total_pruned`` weights over all layers, at the least summed
    damage along each curve's lower convex hull.

    Every layer starts at its curve's lowest sparsity; hull segments are then taken in order of
    damage per removed weight (convexity keeps each layer's segments in order), the last one
    partly, until the budget is spent. A curve without points keeps sparsity 0.
    """
    sparsity = [curve.points[0][0] if curve.points else 0.0 for curve in curves]
    remaining = total_pruned - sum(c.size * s for c, s in zip(curves, sparsity, strict=True))
    segments: list[tuple[float, int, float]] = []  # (damage per weight, layer, sparsity step)
    for index, curve in enumerate(curves):
        hull = _lower_hull(list(curve.points))
        for (x1, y1), (x2, y2) in itertools.pairwise(hull):
            segments.append(((y2 - y1) / (curve.size * (x2 - x1)), index, x2 - x1))
    segments.sort(key=lambda segment: segment[0])  # stable: ties keep layer order
    for _, index, step in segments:
        if remaining <= 0:
            break
        weights = curves[index].size * step
        taken = min(1.0, remaining / weights)
        sparsity[index] += taken * step
        remaining -= taken * weights
    return sparsity
