"""--allocation sensitivity: each layer pruned alone at a few levels, judged on the graph
downstream of it, the curves turned into per-layer shares."""

from __future__ import annotations

import dataclasses
import logging

from ..allocation import (
    UNMEASURED_SHARE,
    SensitivityCurve,
    allocate_by_sensitivity,
    interpolated_curve,
    judging_budget_runs,
    probe_levels,
    smallest_layers,
    within_judging_budget,
)
from ..config import PruneConfig
from ..masking import (
    allocate,
    floor_cap,
    layer_select,
    sorted_rows,
)
from ..scoring import ScoringMethod
from ..verify import ReferenceRun
from .decisions import Decisions, selection_key
from .matrices import input_weights, local_error, selection_of

log = logging.getLogger(__name__)


class Sensitivity(Decisions):
    def sensitivity_targets(
        self,
        config: PruneConfig,
        chosen: list[int],
        sparsity: float,
        scorer: ScoringMethod,
        group: str,
    ) -> list[float]:
        """--allocation sensitivity: the sparsity of each chosen layer. The selection group's
        own shares (global selection: what the scores give each layer; otherwise the same share
        with the row floors, ``allocate``) are the starting point; the same number of weights
        is then moved to where the measured damage is least."""
        shapes = [self.layers[i].matrix_shape for i in chosen]
        if group == "global" and not scorer.adaptive_mask:
            base = self.group_shares(scorer, selection_of(config, "global"), sparsity, chosen)
        else:
            base = allocate(shapes, sparsity, config.min_row_weights)
        curves = self.sensitivity_curves(config, chosen, base, scorer, group)
        budget = sum(c.size * t for c, t in zip(curves, base, strict=True))
        return allocate_by_sensitivity(curves, budget)

    def sensitivity_curves(
        self,
        config: PruneConfig,
        chosen: list[int],
        base: list[float],
        scorer: ScoringMethod,
        group: str,
    ) -> list[SensitivityCurve]:
        """Each chosen layer pruned alone (the run's method, update and selection within the
        layer) at ``probe_levels`` around its share ``base``; damage = 1 - ``decision_score``
        against the original on the calibration probe samples --group auto judges on. Cached
        per scorer, selection, layers and shares (a sweep or search measures each sparsity).
        Estimated curves leave the smallest layers unmeasured (``UNMEASURED_SHARE``): an empty
        curve, so they stay dense; and the layers past the judging budget
        (``_over_judging_budget``; none under --thorough) a single point at their share, so
        they keep it."""
        selection = "row" if group == "row" else "layer"
        measured = config.allocation_mode == "measured"
        key = (
            scorer.name,
            selection,
            config.update,
            measured,
            config.thorough,
            tuple(chosen),
            tuple(round(b, 9) for b in base),
        )
        sizes = [self.layers[i].size for i in chosen]
        unmeasured = set() if measured else smallest_layers(sizes, UNMEASURED_SHARE)
        # --thorough lifts the judging budget: every layer but the smallest is measured.
        lifted = measured or config.thorough
        at_share = set() if lifted else self._over_judging_budget(chosen, unmeasured)
        self.unmeasured_layers = [self.layers[chosen[k]].name for k in sorted(unmeasured)]
        self.base_share_layers = [self.layers[chosen[k]].name for k in sorted(at_share)]
        if key in self._sensitivity:
            return self._sensitivity[key]
        # measured: every level judged on the --group auto probe samples; otherwise two levels
        # on the first SENSITIVITY_SAMPLES of them, the others interpolated (_estimated_curve).
        reference = self.calibration_reference() if measured else self.sensitivity_reference()
        # Each layer alone, one-shot (nothing upstream of it is pruned).
        measuring = dataclasses.replace(
            config, allocation="group", sequential=False, update_target="pruned"
        )
        curves = []
        judged = len(chosen) - len(unmeasured) - len(at_share)
        with self.progress.phase("sensitivity", judged, "layer") as advance:
            for k, (i, layer_base) in enumerate(zip(chosen, base, strict=True)):
                if k in unmeasured:
                    curves.append(SensitivityCurve(sizes[k], ()))
                    continue
                if k in at_share:  # one point: the allocation leaves the layer at its share
                    points = ((layer_base, 0.0),) if layer_base > 0.0 else ()
                    curves.append(SensitivityCurve(sizes[k], points))
                    continue
                curves.append(
                    self._sensitivity_curve(
                        measuring, scorer, selection, reference, measured, i, layer_base
                    )
                )
                advance()
        log.info("sensitivity: %d single-layer candidates judged", self.sensitivity_builds)
        self.release_single_layer_sessions()
        self._sensitivity[key] = curves
        return curves

    def _over_judging_budget(self, chosen: list[int], unmeasured: set[int]) -> set[int]:
        """The positions in ``chosen`` (besides ``unmeasured``) that estimated curves do not
        measure, leaving them at their base share: measuring a layer judges two candidates
        over its suffix (``suffix_run_shares``) on the probe samples, and all of those
        together may cost ``judging_budget_runs`` runs of the whole model over them
        (``within_judging_budget``: the most weights per unit of cost first)."""
        candidates = [k for k in range(len(chosen)) if k not in unmeasured]
        shares = self.suffix_run_shares([chosen[k] for k in candidates])
        sizes = [self.layers[chosen[k]].size for k in candidates]
        probe = int(self.sensitivity_reference().selected.sum())
        budget = judging_budget_runs(self.calibration_samples, probe)
        measured = within_judging_budget(sizes, [2.0 * s for s in shares], budget)
        return {k for n, k in enumerate(candidates) if n not in measured}

    def _sensitivity_curve(
        self,
        measuring: PruneConfig,
        scorer: ScoringMethod,
        selection: str,
        reference: ReferenceRun,
        measured: bool,
        i: int,
        layer_base: float,
    ) -> SensitivityCurve:
        """One layer's curve: every level judged (``measured``) or estimated."""
        layer = self.layers[i]
        rows, columns = layer.matrix_shape
        levels = probe_levels(layer_base, floor_cap(columns, measuring.min_row_weights))
        if not measured:
            points = self._estimated_curve(
                measuring, scorer, selection, reference, i, layer_base, levels
            )
            return SensitivityCurve(rows * columns, tuple(points))
        points = []
        only = {layer.weight_name}
        for level in levels:
            at_level = dataclasses.replace(measuring, sparsity=level)
            damage = 1.0 - self._judge(at_level, scorer, selection, reference, only)[0]
            self.sensitivity_builds += 1
            points.append((level, damage))
        return SensitivityCurve(rows * columns, tuple(points))

    def _estimated_curve(
        self,
        config: PruneConfig,
        scorer: ScoringMethod,
        selection: str,
        reference: ReferenceRun,
        index: int,
        base: float,
        levels: list[float],
    ) -> list[tuple[float, float]]:
        """(level, damage) for one layer from two judged candidates: the layer pruned alone
        (the run's method and update) at its ``base`` share (see ``anchor``) and at the highest
        level; the other levels follow its local error proxy ``local_error``
        (``interpolated_curve``).
        Judging only one of the two lost on EfficientNet-Lite0 (top-1 agreement at 0.7: 0.0
        with the base share alone and gamma = 1, 0.03 with the top level alone, 0.11 with
        both)."""
        if not levels:
            return []
        layer = self.layers[index]

        def judged(level: float) -> float:
            at_level = dataclasses.replace(config, sparsity=level)
            self.sensitivity_builds += 1
            return 1.0 - self._judge(at_level, scorer, selection, reference, {layer.weight_name})[0]

        matrix = self.matrices()[index]
        stats = self.statistics()[layer.weight_name]
        reconstructing = config.update or scorer.adaptive_mask
        factors = self.factors(layer) if reconstructing else None
        weights = input_weights(stats, factors, matrix.shape[0])
        if scorer.adaptive_mask and factors is not None:
            scores = matrix**2 * weights**2  # SparseGPT's saliency w^2 / [H^-1]_jj^2
        else:
            scores = self.layer_scores(scorer, matrix, stats)
        floor = config.min_row_weights
        cost = matrix**2 * weights  # [out, K], see ``local_error``
        ordered = sorted_rows(scores)  # one sort for every level's mask
        # ``probe_levels`` rounds the levels to 6 decimals: a share equal to a round target
        # (``allocate``'s, unless a row-floor cap lowered it) is found; a global selection's
        # share (a count over a size) or a capped one is not, and its curve is anchored at the
        # lowest level instead. The quality figures were measured so; anchoring at the share
        # itself is docs/METHOD.md's "Measure" (not taken).
        anchor = levels.index(base) if base in levels else 0
        top = len(levels) - 1
        errors, masks = [], {}
        for k, level in enumerate(levels):
            mask = layer_select(scores, level, selection, None, floor, ordered)
            errors.append(local_error(cost, mask))
            if k in (anchor, top):  # the levels that may be judged
                masks[k] = mask
        judging = [anchor] + ([top] if top != anchor and errors[top] > errors[anchor] else [])
        how = selection_of(config, selection)
        cap = floor_cap(matrix.shape[1], floor)
        for k in judging:
            # The judged candidate's selection (``_selected``: one layer at ``levels[k]``) is
            # this mask; levels never exceed the row floor's cap, where ``allocate`` would
            # lower them, and an N:M pattern (never re-allocated) would select otherwise.
            if levels[k] <= cap and how.pattern is None:
                self._known_masks[selection_key(scorer, how, levels[k], [index])] = [masks[k]]
        judged_damage = {k: judged(levels[k]) for k in judging}
        self._known_masks.clear()
        return interpolated_curve(levels, errors, anchor, judged_damage)
