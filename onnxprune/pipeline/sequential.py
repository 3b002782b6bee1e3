"""Builds that do not hold every layer at once: big-model mode (pruned weights spilled to
files as they are made) and --sequential (statistics re-gathered stage by stage)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import onnx

from ..calibrate.augment import has_subgraphs
from ..calibrate.stats import LayerStats
from ..config import PruneConfig
from ..graph import GraphView
from ..io import spill_array
from ..layers import find_layers
from ..masking import (
    allocate,
    layer_select,
    select_masks,
)
from ..report import LayerReport
from ..scoring import ScoringMethod, get_method
from ..threads import one_blas_thread
from .base import (
    SPILL_BYTES,
    Candidate,
    LayerPlan,
)
from .matrices import prune_matrix, selection_of, write_layer
from .sensitivity import Sensitivity

log = logging.getLogger(__name__)


class Streamed(Sensitivity):
    def _build_streamed(
        self, config: PruneConfig, scorer: ScoringMethod, group: str, only: set[str] | None
    ) -> Candidate:
        """``_build`` one layer at a time (big-model mode): read, score, prune, write to a file.

        Same masks and weights as ``_build``. Row and N:M selection need one layer's scores at a
        time; layer-wide and global selection still hold every layer's scores together.
        """
        assert self.base_dir is not None
        stats = self.statistics()
        chosen = [
            i for i, layer in enumerate(self.layers) if only is None or layer.weight_name in only
        ]
        spill_file = self.base_dir / f"candidate-{next(self._files)}.data"

        def spill(name: str, value: np.ndarray) -> onnx.TensorProto | None:
            return spill_array(value, name, spill_file) if value.nbytes >= SPILL_BYTES else None

        model = onnx.ModelProto()
        model.CopyFrom(self.proto)  # small: the weights are external
        view = GraphView(model, self.base_dir, spill)
        copies = find_layers(view, config).layers  # same order, nodes of the copy
        originals = [self.layers[i] for i in chosen]
        shapes = [layer.matrix_shape for layer in originals]
        row_targets = allocate(shapes, config.target_sparsity, config.min_row_weights)
        per_layer = scorer.adaptive_mask or config.nm is not None or group == "row"
        all_masks = None
        if not per_layer:
            all_masks = select_masks(
                [scorer.score(layer.matrix(), stats[layer.weight_name]) for layer in originals],
                selection_of(config, group),
                config.target_sparsity,
            )
        reconstructing = config.update or scorer.adaptive_mask
        reports, warnings = [], []
        for k, layer in enumerate(originals):
            matrix = layer.matrix()
            layer_stats = stats[layer.weight_name]
            keep: np.ndarray | None = None
            if all_masks is not None:
                keep = all_masks[k]
            elif not scorer.adaptive_mask:
                # N:M, or row selection at the layer's share.
                keep = layer_select(
                    scorer.score(matrix, layer_stats), row_targets[k], "row", config.nm, 0
                )
            target = row_targets[k] if scorer.adaptive_mask else config.target_sparsity
            factors = self.factors(layer) if reconstructing else None
            with one_blas_thread():
                final, delta, problem = prune_matrix(
                    matrix, keep, layer_stats, scorer, config, target, factors
                )
            del matrix, keep
            if problem:
                warnings.append(f"{layer.name}: {problem}")
            report, written = write_layer(view, copies[chosen[k]], final, delta, layer_stats)
            reports.append(report)
            warnings += written
        view.flush_inserts()
        return Candidate(model, config.target_sparsity, scorer, group, reports, warnings)

    def _sequential(self, config: PruneConfig, one_shot: Candidate) -> Candidate:
        """Prune stage by stage, each stage's statistics gathered on the model whose earlier
        stages are already pruned. Each layer keeps the scoring variant, selection group and
        sparsity decided on the one-shot statistics (so --group auto and global budgets keep
        their meaning); the first stage's statistics are the one-shot ones (nothing upstream
        of it is pruned). Costs one calibration pass per stage after the first."""
        model = onnx.ModelProto()
        model.CopyFrom(self.proto)
        reports: dict[int, LayerReport] = {}
        warnings = list(one_shot.notes)
        passes = 0
        self.stage_statistics = {}
        # update_target "dense": each stage pass also runs the dense model on the same batches.
        reference = self.proto if config.update_target == "dense" else None
        if reference is not None and has_subgraphs(reference):
            reference = None
            warnings.append("update target dense: the model has subgraphs, the pruned one is used")
        for number, stage in enumerate(self.stages()):
            if number == 0:
                stats = self.statistics()
            else:
                layers = find_layers(GraphView(model), config).layers
                stats = self._collect(model, [layers[i] for i in stage], reference=reference)
                passes += 1
            self.stage_statistics.update(
                {self.layers[i].weight_name: stats[self.layers[i].weight_name] for i in stage}
            )
            plans = [self._stage_plan(config, one_shot, i, stats) for i in stage]
            stage_reports, stage_warnings, _ = self._apply(
                model, config, plans, stats, factors_from_stats=number > 0
            )
            reports.update(zip(stage, stage_reports, strict=True))
            warnings += stage_warnings
        candidate = Candidate(
            model,
            one_shot.sparsity,
            one_shot.scorer,
            one_shot.group,
            [reports[i] for i in sorted(reports)],
            warnings,
            one_shot.trials,
        )
        candidate.removed = one_shot.removed
        candidate.notes = one_shot.notes
        candidate.stage_passes = passes
        candidate.allocation = one_shot.allocation
        return candidate

    def _stage_plan(
        self, config: PruneConfig, one_shot: Candidate, i: int, stats: Mapping[str, LayerStats]
    ) -> LayerPlan:
        """Layer ``i`` re-selected on its stage's statistics, to the share, method and group
        the one-shot candidate decided for it."""
        layer = self.layers[i]
        override = layer.override
        method = (
            get_method(override.method)
            if override is not None and override.method
            else one_shot.scorer
        )
        floor = 0 if override is not None else config.min_row_weights
        target = one_shot.removed[layer.weight_name]
        keep: np.ndarray | None = None
        if not method.adaptive_mask:
            scores = method.score(self.matrices()[i], stats[layer.weight_name])
            keep = layer_select(scores, target, one_shot.group, config.nm, floor)
        return LayerPlan(i, method, target, keep, floor)
