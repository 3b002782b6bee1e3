"""Planning: which share of each layer goes and how (``_decide``), the per-layer pruning and
OBS updates (``_prune_layers``), and the --group auto choice between candidates."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Mapping

import numpy as np
import onnx

from ..calibrate.stats import LayerStats
from ..config import SENSITIVITY_ALLOCATIONS, PruneConfig
from ..masking import (
    Selection,
    allocate,
    layer_select,
    select_masks,
    shared_sparsity,
)
from ..report import LayerReport
from ..scoring import ScoringMethod, get_method
from ..threads import one_blas_thread
from .base import (
    AUTO_GROUPS,
    Candidate,
    LayerPlan,
    PrunedLayers,
)
from .candidates import Candidates
from .matrices import prune_matrix, selection_of

log = logging.getLogger(__name__)

# The layer scores kept for reuse (``Decisions.layer_scores``), in bytes; MiniLM's 36 layers
# take 170 MB in float64.
SCORE_CACHE_BYTES = 256 << 20


def selection_key(
    scorer: ScoringMethod, how: Selection, target: float, chosen: list[int] | tuple[int, ...]
) -> tuple[object, ...]:
    """What a multi-layer selection's masks depend on besides the one-shot statistics: the key
    of ``Decisions._group_shares`` and ``_known_masks``."""
    return (scorer.name, how, round(target, 12), tuple(chosen))


class Decisions(Candidates):
    def _decide(
        self, config: PruneConfig, scorer: ScoringMethod, group: str, chosen: list[int]
    ) -> tuple[list[LayerPlan], list[str]]:
        """What to do to each chosen layer: its scoring method, sparsity and keep mask.

        Layers with a --layer sparsity get exactly that (selected on their own); the others
        share what is left of the overall budget under the run's selection group.
        """
        stats = self.statistics()
        matrices = self.matrices()
        overridden = [i for i in chosen if self.layers[i].override is not None]
        shared = [i for i in chosen if self.layers[i].override is None]
        fixed: list[tuple[int, float]] = []
        for i in overridden:
            override = self.layers[i].override
            assert override is not None and override.sparsity is not None
            fixed.append((matrices[i].size, override.sparsity))
        warnings: list[str] = []
        target = config.target_sparsity
        if overridden and config.nm is None:
            shared_size = sum(matrices[i].size for i in shared)
            target, overall = shared_sparsity(fixed, shared_size, config.target_sparsity)
            if overall > config.target_sparsity + 0.005:
                warnings.append(
                    f"the --layer overrides alone remove more than the requested "
                    f"{config.target_sparsity:.4f}: the other layers are not pruned and the "
                    f"overall sparsity is {overall:.4f}"
                )
        plans = self._shared_plans(config, scorer, group, shared, target)
        for i, (_, layer_target) in zip(overridden, fixed, strict=True):
            override = self.layers[i].override
            assert override is not None
            method = get_method(override.method) if override.method else scorer
            keep: np.ndarray | None = None
            if not method.adaptive_mask:
                scores_i = method.score(matrices[i], stats[self.layers[i].weight_name])
                keep = layer_select(scores_i, layer_target, group, config.nm, 0)
            plans[i] = LayerPlan(i, method, layer_target, keep, 0)
        return [plans[i] for i in chosen], warnings

    def _shared_plans(
        self,
        config: PruneConfig,
        scorer: ScoringMethod,
        group: str,
        shared: list[int],
        target: float,
    ) -> dict[int, LayerPlan]:
        """Plans of the layers without a --layer sparsity, sharing ``target``: shares from the
        sensitivity curves, the selection group's masks, or (adaptive methods) masks left to
        the reconstruction."""
        stats = self.statistics()
        matrices = self.matrices()
        plans: dict[int, LayerPlan] = {}
        if shared and config.allocation_mode in SENSITIVITY_ALLOCATIONS:
            selection = "row" if group == "row" else "layer"
            targets = self.sensitivity_targets(config, shared, target, scorer, group)
            for i, layer_target in zip(shared, targets, strict=True):
                measured_keep = None
                if not scorer.adaptive_mask:
                    scores_i = self.layer_scores(
                        scorer, matrices[i], stats[self.layers[i].weight_name]
                    )
                    measured_keep = layer_select(
                        scores_i, layer_target, selection, None, config.min_row_weights
                    )
                plans[i] = LayerPlan(i, scorer, layer_target, measured_keep, config.min_row_weights)
        elif shared:
            if scorer.adaptive_mask:
                # The mask is chosen inside the reconstruction, block by block.
                targets = allocate(
                    [matrices[i].shape for i in shared], target, config.min_row_weights
                )
                for i, layer_target in zip(shared, targets, strict=True):
                    plans[i] = LayerPlan(i, scorer, layer_target, None, config.min_row_weights)
            else:
                masks = self._selected(scorer, selection_of(config, group), target, shared)
                for i, mask in zip(shared, masks, strict=True):
                    plans[i] = LayerPlan(i, scorer, target, mask, config.min_row_weights)
        return plans

    def layer_scores(
        self, scorer: ScoringMethod, matrix: np.ndarray, stats: LayerStats
    ) -> np.ndarray:
        """``scorer.score(matrix, stats)`` [out, K], kept while the kept scores stay within
        SCORE_CACHE_BYTES (always the last one): --group auto's row and global trials, a
        layer's sensitivity curve and its judged candidates, and the re-allocated candidate
        score the same matrices with the run's method (MiniLM at 0.5: 180 computations, 72
        with the cache, for 170 MB more peak memory)."""
        key = (scorer.name, id(matrix), id(stats))
        held = self._scores.get(key)
        if held is not None and held[0] is matrix and held[1] is stats:
            return held[2]
        last = self._last_scores
        if last is None or last[0] != scorer.name or last[1] is not matrix or last[2] is not stats:
            scores = scorer.score(matrix, stats)
            scores.flags.writeable = False  # shared between callers: nobody may change it
            last = self._last_scores = (scorer.name, matrix, stats, scores)
            kept = sum(x[2].nbytes for x in self._scores.values())
            # Only the run's own method: a variant's scores serve one --group auto trial.
            if scorer.name == self.scorer.name and kept + scores.nbytes <= SCORE_CACHE_BYTES:
                self._scores[key] = (matrix, stats, scores)
        return last[3]

    def _selected(
        self, scorer: ScoringMethod, how: Selection, target: float, chosen: list[int]
    ) -> list[np.ndarray]:
        """The chosen layers' keep masks [out, K] under the selection ``how`` at ``target``,
        scored with ``scorer`` on the one-shot statistics; each layer's removed share is kept
        for ``group_shares``."""
        key = selection_key(scorer, how, target, chosen)
        masks = self._known_masks.pop(key, None)
        if masks is None:
            stats = self.statistics()
            scores = [
                self.layer_scores(scorer, self.matrices()[i], stats[self.layers[i].weight_name])
                for i in chosen
            ]
            masks = select_masks(scores, how, target)
        self._group_shares[key] = [1.0 - float(mask.mean()) for mask in masks]
        return masks

    def group_shares(
        self, scorer: ScoringMethod, how: Selection, target: float, chosen: list[int]
    ) -> list[float]:
        """The share of each chosen layer's weights the selection ``how`` removes at
        ``target`` (scored with ``scorer``): the sensitivity allocation's base shares under
        global selection, which --group auto's global trial has already selected (0.26 s on
        EfficientNet-Lite0); kept as numbers, not masks."""
        key = selection_key(scorer, how, target, chosen)
        if key not in self._group_shares:
            self._selected(scorer, how, target, chosen)
        return self._group_shares[key]

    def _prune_layers(
        self,
        config: PruneConfig,
        plans: list[LayerPlan],
        stats: Mapping[str, LayerStats],
        factors_from_stats: bool = False,
    ) -> tuple[list[np.ndarray], list[np.ndarray | None], list[str], dict[str, float]]:
        """The planned layers' pruned matrices [out, K] and bias changes [out] (nothing
        written): (matrices, deltas, warnings, the share of each layer's weights that was
        selected for removal)."""
        warnings: list[str] = []
        finals, deltas, removed = [], [], {}
        one_shot = stats is self._stats and not factors_from_stats
        self._latest = {}
        # Each key hashes its plan's mask: made once, for the factors and the loop alike.
        keys = [self._pruned_key(config, plan) if one_shot else None for plan in plans]
        if one_shot:
            self.make_factors(
                [
                    self.layers[plan.index]
                    for plan, key in zip(plans, keys, strict=True)
                    if (config.update or plan.scorer.adaptive_mask) and key not in self._pruned
                ]
            )
        for plan, key in zip(plans, keys, strict=True):
            layer = self.layers[plan.index]
            matrix = self.matrices()[plan.index]
            reconstructing = config.update or plan.scorer.adaptive_mask
            if key is not None and key in self._pruned:
                final, delta, problem = self._pruned[key]
            else:
                factors = None
                if reconstructing:
                    factors = self.factors(layer, stats if factors_from_stats else None)
                layer_config = dataclasses.replace(config, min_row_weights=plan.min_row_weights)
                clock = time.perf_counter()
                with one_blas_thread():
                    final, delta, problem = prune_matrix(
                        matrix,
                        plan.keep,
                        stats[layer.weight_name],
                        plan.scorer,
                        layer_config,
                        plan.target,
                        factors,
                    )
                self.phase_seconds["update"] += time.perf_counter() - clock
            if key is not None:
                self._latest[key] = (final, delta, problem)
            if problem:
                warnings.append(f"{layer.name}: {problem}")
            finals.append(final)
            deltas.append(delta)
            removed[layer.weight_name] = (
                plan.target if plan.keep is None else 1.0 - float(plan.keep.mean())
            )
        return finals, deltas, warnings, removed

    def _apply(
        self,
        model: onnx.ModelProto,
        config: PruneConfig,
        plans: list[LayerPlan],
        stats: Mapping[str, LayerStats],
        factors_from_stats: bool = False,
    ) -> tuple[list[LayerReport], list[str], dict[str, float]]:
        """Prune the planned layers in ``model`` (in place): (reports, warnings, the share of
        each layer's weights that was selected for removal)."""
        finals, deltas, warnings, removed = self._prune_layers(
            config, plans, stats, factors_from_stats
        )
        reports, written = self._write(model, config, plans, finals, deltas, stats)
        return reports, warnings + written, removed

    @staticmethod
    def _pruned_key(config: PruneConfig, plan: LayerPlan) -> tuple[object, ...]:
        """What a one-shot layer's pruned matrix depends on besides the statistics: the same
        key gives the same ``prune_matrix`` result."""
        mask = (
            None
            if plan.keep is None
            else hashlib.blake2b(np.packbits(plan.keep).tobytes()).digest()
        )
        return (
            plan.index,
            plan.scorer.name,
            # With a fixed mask the target is not used (the mask says what goes).
            round(plan.target, 12) if plan.keep is None else None,
            plan.min_row_weights,
            mask,
            config.update,
            config.update_target,
            config.nm,
            config.reselect_mask,
        )

    def remember(self, prepared: PrunedLayers) -> None:
        """Keep ``prepared``'s one-shot pruned layers for later candidates that prune a
        layer the same way (``_pruned_key``): the --group auto winner's layers serve the
        sensitivity curves' base levels and every layer the re-allocation leaves at its
        share. Replaces what was kept (one candidate's worth)."""
        self._pruned = dict(prepared.results)

    def _choose(self, config: PruneConfig, scorer: ScoringMethod) -> Candidate:
        """``--group auto``: try each selection group with the method, then (--thorough) each
        of its variants in the winning group, and keep the candidate whose outputs stay
        closest (``decision_score``) to the original's on calibration samples.

        Statistics are reused; the original's outputs are computed once. Held-out samples are
        not used, so the reported fidelity stays an honest estimate. Ties: first candidate.
        With --allocation sensitivity the choice is made on the group's own shares, and only
        the winner is then re-allocated by measured sensitivity (one measurement, not one per
        trial); the re-allocated candidate is kept unless it scores lower on the same samples.
        """
        reference = self.trial_reference(config)
        variants = [scorer, *self.auto_variants(scorer)]
        trying = dataclasses.replace(config, allocation="group")
        trials: dict[str, float] = {}
        best: tuple[float, ScoringMethod, str, PrunedLayers | None] | None = None
        # The group with the method itself first, then its variants in the winning group
        # only: the groups differ far more than the variants (MiniLM at 0.5: row 0.85 vs
        # global 0.65, contrib vs contrib-nocomp 0.003), and every trial prunes every layer.
        trial_count = len(AUTO_GROUPS) + len(variants) - 1
        with self.progress.phase("choosing variant and group", trial_count, "trial") as advance:
            pairs = [(scorer, group) for group in AUTO_GROUPS]
            while pairs:
                variant, group = pairs.pop(0)
                cosine, prepared = self._judge(trying, variant, group, reference)
                trials[f"{variant.name}/{group}"] = cosine
                if best is None or cosine > best[0]:
                    best = (cosine, variant, group, prepared)
                del prepared  # only the best trial's pruned layers are kept
                advance()
                if not pairs and variant is scorer:
                    assert best is not None
                    pairs = [(other, best[2]) for other in variants[1:]]
        assert best is not None
        best_cosine, winner, winner_group, best_prepared = best
        if best_prepared is not None:
            self.remember(best_prepared)
        chosen: tuple[PruneConfig, PrunedLayers | None] = (trying, best_prepared)
        if config.allocation_mode in SENSITIVITY_ALLOCATIONS:
            cosine, prepared = self._judge(config, winner, winner_group, reference)
            trials[f"{winner.name}/{winner_group}+sensitivity"] = cosine
            if cosine >= best_cosine:
                chosen = (config, prepared)
        del best, best_prepared
        candidate = self._build(chosen[0], winner, winner_group, None, chosen[1])
        candidate.trials = trials
        return candidate
