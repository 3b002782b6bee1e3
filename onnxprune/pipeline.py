"""One model, one calibration pass, many candidate prunings.

``Pruner`` loads the model and data, gathers statistics once, and builds pruned copies of the
model for any sparsity / scoring variant / selection group; it also runs the differential check
of a candidate against the original. ``api.prune`` (one model out), the sparsity search, the
sweep and ``inspect``'s per-layer sensitivity are all built from these pieces.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import math
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from . import correction, owl
from . import reconstruct as reconstruct_module
from .allocation import (
    SensitivityCurve,
    allocate_by_sensitivity,
    interpolated_curve,
    probe_levels,
)
from .apply import add_bias, write_weight
from .branches import BranchLayers, attach_branch_layers
from .calibrate.augment import has_subgraphs
from .calibrate.runner import collect_statistics, collect_statistics_in_parts, probe_shapes
from .calibrate.sources import (
    CalibrationSet,
    DataSource,
    InputSpec,
    model_input_specs,
    open_data,
)
from .calibrate.stats import LayerStats
from .config import SENSITIVITY_ALLOCATIONS, PruneConfig
from .correction import damped_hessians, refit_on_support, stat_correct
from .errors import ModelError, UsageError
from .evaluate import CandidateEvaluator
from .graph import GraphView
from .io import is_big_model, link_external_data, load_model, spill_array, write_errors
from .layers import Layer, LayerScan, find_layers
from .masking import (
    allocate,
    floor_cap,
    layer_select,
    nm_mask,
    row_cap,
    row_mask,
    select_masks,
    shared_sparsity,
)
from .metric import Metric, decision_score
from .progress import Progress, as_progress
from .reconstruct import (
    ReconstructionError,
    Reselect,
    damped_diagonal,
    inverse_hessian_factors,
    reconstruct,
    reconstruct_groups,
    refit_to_reference,
)
from .refit_final import refit_written
from .report import LayerReport
from .scoring import ScoringMethod, get_method
from .session import movable, save_for_session, session_in_memory
from .stages import group_stages, layer_depths
from .structure import StructuredResult, prune_units
from .suffix import BOUNDARY_CACHE_BYTES, BoundaryCache, SuffixCut, SuffixEvaluator, suffix_cut
from .verify import Fidelity, ReferenceRun

# Held-out verification never needs more than this many samples.
MAX_HOLDOUT = 256
# --group auto: the selections it tries, and how many calibration samples judge them.
AUTO_GROUPS = ("row", "global")
AUTO_SAMPLES = 64
# Unless --allocation measured: as many of those as hold about AUTO_VALUES output values, at
# least SENSITIVITY_SAMPLES (an encoder's or detector's large outputs need a few samples, a
# classifier's logits all 64).
AUTO_VALUES = 262144
# --allocation sensitivity (estimated curves): each layer's candidates are judged on the first
# calibration samples that hold about SENSITIVITY_VALUES output values, within these bounds.
SENSITIVITY_SAMPLES = 16
MIN_SENSITIVITY_SAMPLES = 4
# 8192 values: EfficientNet-Lite0's 1000 logits on 9 samples judged as well as on 16 (top-1
# agreement with the dense model 0.3281 / 0.1406 at 0.5 / 0.7 on 8 samples, 0.3047 / 0.1094
# on 16; on 4 samples 0.7 fell to 0.0234), at half the cost; a 10-logit classifier keeps 16.
SENSITIVITY_VALUES = 8192
# The original's outputs on at most this many verification samples are kept in memory.
MAX_CACHED_SAMPLES = 1024
# Big-model mode: pruned tensors of at least this many bytes go straight to a file.
SPILL_BYTES = 1 << 20

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """A pruned copy of the model and what was done to it."""

    model: onnx.ModelProto
    sparsity: float
    scorer: ScoringMethod
    group: str
    layers: list[LayerReport]
    warnings: list[str]
    # --group auto: mean output cosine of every variant/group tried.
    trials: dict[str, float] = dataclasses.field(default_factory=dict)
    # weight name -> share of the layer's weights selected for removal.
    removed: dict[str, float] = dataclasses.field(default_factory=dict)
    # Budget remarks (--layer overrides) that hold for every build at this sparsity.
    notes: list[str] = dataclasses.field(default_factory=list)
    # --sequential: calibration passes this candidate needed beyond the one-shot pass.
    stage_passes: int = 0
    # How its layers' shares were decided ("group" or "sensitivity"; --group auto may keep
    # either).
    allocation: str = "group"


# A layer's pruned matrix [out, K], its bias change [out] (or None) and a problem to report.
PrunedMatrix = tuple[np.ndarray, np.ndarray | None, str | None]


@dataclass
class PrunedLayers:
    """Layers decided and pruned, not yet written: per plan the pruned matrix [out, K] and the
    bias change [out] (or None); budget notes, warnings and the share selected per weight."""

    plans: list[LayerPlan]
    finals: list[np.ndarray]
    deltas: list[np.ndarray | None]
    notes: list[str]
    warnings: list[str]
    removed: dict[str, float]
    # One-shot results by ``Pruner._pruned_key`` (what ``Pruner.remember`` keeps).
    results: dict[tuple[object, ...], PrunedMatrix] = field(default_factory=dict)


@dataclass
class LayerPlan:
    """What happens to one layer: scored by ``scorer``, ``target`` of its weights removed,
    ``keep`` the mask (None: chosen during reconstruction), rows keep ``min_row_weights``."""

    index: int
    scorer: ScoringMethod
    target: float
    keep: np.ndarray | None
    min_row_weights: int


class Pruner:
    """Big-model mode (``big``; by default when the model and its data exceed
    ``io.BIG_MODEL_BYTES``): the model is loaded without its external data, which is hard-linked
    into a work directory; sessions load models written there by path; weights are read one
    layer at a time, statistics are gathered in parts and kept on disk, and pruned weights are
    written to files as they are made. Nothing holds all the weights in memory at once."""

    def __init__(
        self,
        model_path: Path,
        calib: DataSource,
        config: PruneConfig,
        eval_data: DataSource | None = None,
        progress: bool | Progress = False,
        reference_path: Path | None = None,
        big: bool | None = None,
        hold_out: bool | None = None,
    ) -> None:
        self.model_path = model_path
        # The model candidates are checked against (the original, when this one was shrunk).
        self.reference_path = reference_path or model_path
        self.config = config
        self.progress = as_progress(progress)
        self.big = is_big_model(model_path) if big is None else big
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self.base_dir: Path | None = None
        self.proto = load_model(model_path, external_data=not self.big)
        self._files = itertools.count(1)
        specs = model_input_specs(self.proto)
        if not specs:
            raise ModelError(f"{model_path} has no graph inputs to feed calibration data to")
        self.calibration = open_data(calib, specs)
        self.evaluation = (
            open_data(eval_data, specs, allow_labels=True) if eval_data is not None else None
        )
        # hold_out (a recipe replay): split the calibration set as the recorded run did,
        # whether or not --eval is given now; default: hold out a share unless --eval is given.
        no_hold_out = self.evaluation is not None if hold_out is None else not hold_out
        self.calib_mask, self.holdout_mask = split_samples(self.calibration, no_hold_out, config)
        self.hold_out = not no_hold_out
        self.sample_mask = choose_sample_mask(specs, config.sample_mask)
        # What every comparison scores and every decision optimises (``onnxprune.metric``).
        self.metric = Metric(config.metric, config.metric_outputs, self.sample_mask)
        self.scorer = get_method(config.method)
        # Last: nothing after this may fail without removing the work directory.
        if self.big:
            self._workdir = tempfile.TemporaryDirectory(prefix="onnxprune-big-")
            self.base_dir = Path(self._workdir.name)
            log.info("big-model mode: weights stay on disk (work directory %s)", self.base_dir)
        try:
            if self.base_dir is not None:
                with write_errors(self.base_dir):
                    link_external_data(model_path, self.base_dir)
            self.scan: LayerScan = find_layers(GraphView(self.proto, self.base_dir), config)
            # Layers in top-level If branches, appended to the layers (onnxprune.branches).
            self.branches: BranchLayers = attach_branch_layers(
                self.proto,
                config,
                self.scan,
                self.calibration,
                self.calib_mask,
                refuse=_branch_refusal(self.big, config),
            )
        except BaseException:
            self.close()
            raise
        self._stats: Mapping[str, LayerStats] | None = None
        self._matrices: list[np.ndarray] | None = None
        self._factors: dict[str, list[tuple[np.ndarray, np.ndarray]] | None] = {}
        self._auto_reference: ReferenceRun | None = None
        self._sensitivity_reference: ReferenceRun | None = None
        self._trial_reference: ReferenceRun | None = None
        # One-shot pruned layers kept for reuse (``remember``), by ``_pruned_key``.
        self._pruned: dict[tuple[object, ...], PrunedMatrix] = {}
        # What the last ``_prune_layers`` call computed one-shot, by the same key.
        self._latest: dict[tuple[object, ...], PrunedMatrix] = {}
        # The in-memory candidate evaluator (one session for every search), once built; False:
        # not possible for this model.
        self._evaluator: CandidateEvaluator | bool | None = None
        if self.branches.layers:  # a weight inside a branch cannot be fed as a graph input
            self._evaluator = False
        # Single-layer candidates: the current per-layer evaluator, the seconds it took to
        # build, and the seconds judging took in the shared (True) and per-layer (False) ones.
        self._own_evaluator: tuple[str, CandidateEvaluator] | None = None
        self._own_setup_seconds = 0.0
        self._judge_seconds: dict[bool, list[float]] = {True: [], False: []}
        # Single-layer candidates judged on the graph downstream of the layer: each layer's
        # cut (None: not possible), the original's boundary values, the current session.
        self._cuts: list[SuffixCut | None] | None = None
        self._boundary: BoundaryCache | None = None
        self._suffix: tuple[str, SuffixEvaluator] | None = None
        self._arrays: dict[str, np.ndarray] | None = None
        self._verify_reference: ReferenceRun | None = None
        # --allocation sensitivity: measured curves per (selection, layers and their shares).
        self._sensitivity: dict[tuple[object, ...], list[SensitivityCurve]] = {}
        # Single-layer candidates built and run to measure them.
        self.sensitivity_builds = 0
        # Calibration passes run so far (one-shot statistics, --sequential stages, --structured).
        self.calibration_passes = 0
        # Seconds spent judging candidates in onnxruntime and in the per-layer OBS updates
        # (the report's phase split of "prune").
        self.phase_seconds: dict[str, float] = {"judge": 0.0, "update": 0.0}
        # --sequential: the statistics each layer was last pruned with (stage passes).
        self.stage_statistics: dict[str, LayerStats] = {}

    def close(self) -> None:
        """Remove the big-model work directory (also done when the Pruner is collected)."""
        self.progress.close()
        if self._workdir is not None:
            self._workdir.cleanup()

    @property
    def layers(self) -> list[Layer]:
        return self.scan.layers

    @property
    def calibration_samples(self) -> int:
        return int(self.calib_mask.sum())

    # -- statistics ----------------------------------------------------------------------

    def _statistic_kinds(self) -> tuple[bool, bool]:
        """(gated, hessian): what the run's method, its auto variants and the methods named
        by --layer overrides need gathered."""
        methods = [self.scorer, *(get_method(v) for v in self.scorer.auto_variants)]
        methods += [get_method(o.method) for o in self.config.overrides if o.method]
        gated = any(m.needs_gates for m in methods)
        hessian = self.config.update or any(m.adaptive_mask for m in methods)
        # --stat-correction reads each layer's input covariance (the same K x K correlation).
        return gated, hessian or bool(self.config.stat_correction)

    def _collect(
        self,
        model: onnx.ModelProto,
        layers: list[Layer],
        kinds: tuple[bool, bool] | None = None,
        shapes: dict[str, tuple[int, ...]] | None = None,
        reference: onnx.ModelProto | None = None,
    ) -> Mapping[str, LayerStats]:
        """One calibration pass over ``model`` gathering the statistics of ``layers`` (big-model
        mode: one pass per part of the layers, the statistics kept on disk). ``kinds``:
        (gated, hessian), by default what the run needs; ``shapes``: already probed;
        ``reference``: the dense model, for the cross terms of update_target "dense"."""
        gated, hessian = kinds if kinds is not None else self._statistic_kinds()
        self.calibration_passes += 1
        if self.base_dir is not None:
            with write_errors(self.base_dir):
                return collect_statistics_in_parts(
                    model,
                    layers,
                    self.calibration,
                    self.calib_mask,
                    self.config.batch_size,
                    gated=gated,
                    progress=self.progress,
                    hessian=hessian,
                    sample_mask=self.sample_mask,
                    workdir=self.base_dir,
                )
        return collect_statistics(
            model,
            layers,
            self.calibration,
            self.calib_mask,
            self.config.batch_size,
            gated=gated,
            progress=self.progress,
            hessian=hessian,
            sample_mask=self.sample_mask,
            shapes=shapes,
            reference=reference,
        )

    def statistics(self) -> Mapping[str, LayerStats]:
        """Gathered on first use, in one pass over the calibration samples."""
        if self._stats is None:
            if not self.branches.layers:
                self._stats = self._collect(self.proto, self.layers)
                return self._stats
            main = [x for x in self.layers if not self.branches.owns(x)]
            stats = dict(self._collect(self.proto, main)) if main else {}
            inner, passes = self.branches.statistics(
                self.proto,
                self.config,
                self.calibration,
                self._statistic_kinds(),
                self.progress,
                self.sample_mask,
            )
            self.calibration_passes += passes
            self._stats = {**stats, **inner}
        return self._stats

    def factors(
        self, layer: Layer, stats: Mapping[str, LayerStats] | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Per conv group, the inverse-Hessian factor reconstruction needs; computed once per
        layer from the one-shot statistics (``stats``: from these instead, not cached). None
        when the layer's input correlation was not gathered or is unusable."""
        if stats is not None:
            return _inverse_factors(stats[layer.weight_name])
        if self.big:  # not kept in big-model mode
            self._factors.clear()
        if layer.weight_name not in self._factors:
            self._factors[layer.weight_name] = _inverse_factors(
                self.statistics()[layer.weight_name]
            )
        return self._factors[layer.weight_name]

    def matrices(self) -> list[np.ndarray]:
        if self._matrices is None:
            self._matrices = [layer.matrix() for layer in self.layers]
        return self._matrices

    def stages(self) -> list[list[int]]:
        """--sequential: layer indices per calibration stage, shallowest first."""
        return group_stages(layer_depths(self.proto, self.layers), self.config.stages)

    # -- structured removal --------------------------------------------------------------

    def shrink(self, cut: bool = True) -> StructuredResult:
        """``--structured``: remove whole units (``onnxprune.structure``). Statistics of the
        layers that read the units are gathered in one pass; shapes come from one probe batch.
        ``cut=False`` returns the masked and compensated model instead of the cut one."""
        shapes = probe_shapes(
            self.proto,
            probe_names(self.proto),
            self.calibration,
            self.calib_mask,
            self.config.batch_size,
        )

        def stats_for(readers: list[Layer]) -> Mapping[str, LayerStats]:
            return self._collect(self.proto, readers, kinds=(False, False), shapes=shapes)

        return prune_units(self.proto, shapes, self.config, stats_for, cut)

    # -- building candidates -------------------------------------------------------------

    def build(
        self,
        sparsity: float | None = None,
        scorer: ScoringMethod | None = None,
        group: str | None = None,
        only: set[str] | None = None,
    ) -> Candidate:
        """A pruned copy of the model. ``group`` "auto" picks a variant and group on data;
        ``only`` restricts pruning to the layers with these weight names (never sequential).

        With --sequential the variant, selection group and per-layer sparsity are decided on
        the one-shot statistics, then applied stage by stage (``_sequential``)."""
        config = (
            self.config if sparsity is None else dataclasses.replace(self.config, sparsity=sparsity)
        )
        scorer = scorer or self.scorer
        group = group or config.group or scorer.default_group
        if config.nm is not None:
            group = "row"  # N:M fixes the selection
        if self.base_dir is not None:
            # Big-model mode, one layer at a time. --group auto: each trial would be a full
            # pruned copy and a verification run, too much for a big model; row is used.
            with write_errors(self.base_dir):
                candidate = self._build_streamed(
                    config, scorer, "row" if group == "auto" else group, only
                )
            if group == "auto":
                candidate.warnings.append(
                    "big model: --group auto tried no candidates, row selection was used"
                )
            if config.refit_final:
                candidate.warnings.append("big model: --refit-final was not applied")
            return candidate
        if group == "auto":
            candidate = self._choose(config, scorer)
        else:
            candidate = self._build(config, scorer, group, only)
        if config.sequential and only is None:
            return self._sequential(config, candidate)
        if config.refit_final:
            # --refit-final: once, on the chosen model (onnxprune.refit_final).
            steps = config.refit_final
            refit_written(candidate.model, self.layers, self.statistics(), config, steps)
        return candidate

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
        plans: dict[int, LayerPlan] = {}
        if shared and config.allocation_mode in SENSITIVITY_ALLOCATIONS:
            selection = "row" if group == "row" else "layer"
            targets = self.sensitivity_targets(config, shared, target, scorer, group)
            for i, layer_target in zip(shared, targets, strict=True):
                measured_keep = None
                if not scorer.adaptive_mask:
                    scores_i = scorer.score(matrices[i], stats[self.layers[i].weight_name])
                    measured_keep = layer_select(
                        scores_i, layer_target, selection, None, config.min_row_weights
                    )
                plans[i] = LayerPlan(i, scorer, layer_target, measured_keep, config.min_row_weights)
        elif shared:
            shared_matrices = [matrices[i] for i in shared]
            if scorer.adaptive_mask:
                # The mask is chosen inside the reconstruction, block by block.
                targets = allocate(
                    [m.shape for m in shared_matrices], target, config.min_row_weights
                )
                for i, layer_target in zip(shared, targets, strict=True):
                    plans[i] = LayerPlan(i, scorer, layer_target, None, config.min_row_weights)
            else:
                scores = [
                    scorer.score(m, stats[self.layers[i].weight_name])
                    for m, i in zip(shared_matrices, shared, strict=True)
                ]
                masks = select_masks(scores, config, group, sparsity=target)
                for i, mask in zip(shared, masks, strict=True):
                    plans[i] = LayerPlan(i, scorer, target, mask, config.min_row_weights)
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
        for plan in plans:
            layer = self.layers[plan.index]
            matrix = self.matrices()[plan.index]
            reconstructing = config.update or plan.scorer.adaptive_mask
            key = self._pruned_key(config, plan) if one_shot else None
            if key is not None and key in self._pruned:
                final, delta, problem = self._pruned[key]
            else:
                factors = None
                if reconstructing:
                    factors = self.factors(layer, stats if factors_from_stats else None)
                layer_config = dataclasses.replace(config, min_row_weights=plan.min_row_weights)
                clock = time.perf_counter()
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

    def _write(
        self,
        model: onnx.ModelProto,
        config: PruneConfig,
        plans: list[LayerPlan],
        finals: list[np.ndarray],
        deltas: list[np.ndarray | None],
        stats: Mapping[str, LayerStats],
    ) -> tuple[list[LayerReport], list[str]]:
        """Write pruned matrices and bias changes into ``model`` (in place)."""
        view = GraphView(model)
        layers = find_layers(view, config).layers  # same order, nodes of ``model``
        # Layers inside If branches come last in self.layers (onnxprune.branches).
        main = len(layers)
        assert [layer.weight_name for layer in layers] == [
            x.weight_name for x in self.layers[:main]
        ]
        outer = [k for k, plan in enumerate(plans) if plan.index < main]
        reports, warnings = write_matrices(
            view,
            [layers[plans[k].index] for k in outer],
            [finals[k] for k in outer],
            [deltas[k] for k in outer],
            [stats[layers[plans[k].index].weight_name] for k in outer],
        )
        if len(outer) == len(plans):
            return reports, warnings
        inner = [k for k in range(len(plans)) if plans[k].index >= main]
        items = [(self.layers[plans[k].index], finals[k], deltas[k]) for k in inner]
        inner_reports, inner_warnings = self.branches.write(
            model, [(x, f, d, stats[x.weight_name]) for x, f, d in items]
        )
        by_plan = dict(zip(outer, reports, strict=True)) | dict(
            zip(inner, inner_reports, strict=True)
        )
        return [by_plan[k] for k in range(len(plans))], warnings + inner_warnings

    def _prepare(
        self, config: PruneConfig, scorer: ScoringMethod, group: str, only: set[str] | None
    ) -> PrunedLayers:
        """Decide and prune every chosen layer (``only``: these weight names), nothing written."""
        chosen = [
            i for i, layer in enumerate(self.layers) if only is None or layer.weight_name in only
        ]
        plans, notes = self._decide(config, scorer, group, chosen)
        finals, deltas, warnings, removed = self._prune_layers(config, plans, self.statistics())
        return PrunedLayers(plans, finals, deltas, notes, warnings, removed, dict(self._latest))

    def _judge(
        self,
        config: PruneConfig,
        scorer: ScoringMethod,
        group: str,
        reference: ReferenceRun,
        only: set[str] | None = None,
    ) -> tuple[float, PrunedLayers | None]:
        """(score, the pruned layers) of the candidate ``_build`` would make: mean output
        cosine on ``reference``'s samples, judged in memory when the model allows it
        (``CandidateEvaluator``; otherwise built and written, and no pruned layers returned).
        ``_build`` takes the pruned layers back instead of computing them again."""
        if only is None and self.base_dir is None and self._builds_whole_candidates():
            prepared = self._prepare(config, scorer, group, only)
            model = onnx.ModelProto()
            model.CopyFrom(self.proto)
            self._write(
                model, config, prepared.plans, prepared.finals, prepared.deltas, self.statistics()
            )
            clock = time.perf_counter()
            session = session_in_memory(model, consume=True)
            del model
            fidelity = reference.compare_session(session)
            del session
            self.phase_seconds["judge"] += time.perf_counter() - clock
            return decision_score(fidelity), prepared
        evaluator = self.evaluator(only, reference)
        if evaluator is None:
            candidate = self._build(config, scorer, group, only)
            return decision_score(self.compare(candidate, reference)), None
        prepared = self._prepare(config, scorer, group, only)
        weights = {
            plan.index: self.layers[plan.index].from_matrix(final)
            for plan, final in zip(prepared.plans, prepared.finals, strict=True)
        }
        changes = {p.index: d for p, d in zip(prepared.plans, prepared.deltas, strict=True)}
        clock = time.perf_counter()
        fidelity = evaluator.compare(weights, changes, reference)
        seconds = time.perf_counter() - clock
        self.phase_seconds["judge"] += seconds
        if only is not None and len(only) == 1 and not isinstance(evaluator, SuffixEvaluator):
            self._judge_seconds[evaluator is self._evaluator].append(seconds)
        return decision_score(fidelity), prepared

    def _builds_whole_candidates(self) -> bool:
        """Whether a candidate that changes every layer is judged as a written model (its
        own session) rather than in the shared evaluator: for models with Conv layers, whose
        constant weights onnxruntime pre-packs into its blocked layout. Fed as inputs they are
        not: EfficientNet-Lite0 ran 3-4x slower in the shared session than as a model, which
        costs more than writing and loading the model; MatMul models run at about the same
        speed either way, and skip the write."""
        return any(layer.op.stats_kind == "conv" for layer in self.layers)

    def evaluator(
        self, only: set[str] | None = None, reference: ReferenceRun | None = None
    ) -> CandidateEvaluator | SuffixEvaluator | None:
        """The in-memory candidate evaluator for a candidate that changes the layers ``only``
        (None: all): the run's shared one (every layer's weight an input, built on first use)
        or, for a single-layer candidate, one over the graph downstream of that layer
        (``_suffix_evaluator``; when the boundary values do not fit, one whose only input is
        that layer once measured cheaper, ``_single_layer_evaluator``). None in big-model mode
        or when a layer sits inside a subgraph."""
        if self.base_dir is not None or self._evaluator is False:
            return None
        if only is not None and len(only) == 1 and reference is not None:
            suffix = self._suffix_evaluator(next(iter(only)), reference)
            if suffix is not None:
                return suffix
        if self._evaluator is None:
            try:
                self._evaluator = CandidateEvaluator(self.proto, dict(enumerate(self.layers)))
            except ValueError:
                self._evaluator = False
                return None
        assert isinstance(self._evaluator, CandidateEvaluator)
        if only is not None and len(only) == 1:
            own = self._single_layer_evaluator(next(iter(only)))
            if own is not None:
                return own
        return self._evaluator

    def _suffix_evaluator(
        self, weight_name: str, reference: ReferenceRun
    ) -> SuffixEvaluator | None:
        """The session over the graph downstream of this layer (``onnxprune.suffix``), one
        at a time; None when the layer's suffix cannot be cut or its boundary values on
        ``reference``'s samples alone exceed ``BOUNDARY_CACHE_BYTES``."""
        if self._cuts is None:
            self._cuts = [suffix_cut(self.proto, layer) for layer in self.layers]
            self._boundary = BoundaryCache(self.proto, self._cuts, BOUNDARY_CACHE_BYTES)
        index = next(i for i, x in enumerate(self.layers) if x.weight_name == weight_name)
        cut = self._cuts[index]
        assert self._boundary is not None
        if cut is None or not self._boundary.ensure(reference, index):
            return None
        if self._suffix is not None and self._suffix[0] == weight_name:
            return self._suffix[1]
        self._suffix = None  # one suffix session at a time
        evaluator = SuffixEvaluator(
            self.proto, index, self.layers[index], cut, self._boundary, reference, self.arrays()
        )
        self._suffix = (weight_name, evaluator)
        return evaluator

    def arrays(self) -> dict[str, np.ndarray]:
        """The values of the model's large initializers (``session.movable``), read once:
        in-memory sessions take them without serializing the model."""
        if self._arrays is None:
            self._arrays = {
                t.name: onnx.numpy_helper.to_array(t)
                for t in self.proto.graph.initializer
                if movable(t)
            }
        return self._arrays

    def _single_layer_evaluator(self, weight_name: str) -> CandidateEvaluator | None:
        """A session where only this layer's weight is an input: the other layers keep
        constant weights, which onnxruntime pre-packs (Conv in its blocked layout), so a
        conv model runs 2-3x faster than in the shared session, for the price of building a
        session per layer. Used once the first layer's judged candidates, one in each kind of
        session, show it cheaper (each layer is judged at most twice)."""
        if self._own_evaluator is not None and self._own_evaluator[0] == weight_name:
            return self._own_evaluator[1]
        shared, own = self._judge_seconds[True], self._judge_seconds[False]
        if shared and own:
            setup = self._own_setup_seconds
            if setup + 2 * min(own) >= 2 * min(shared):
                return None  # the shared session is cheaper for this model
        elif not shared:
            return None  # measure the shared session first
        index = next(i for i, x in enumerate(self.layers) if x.weight_name == weight_name)
        self._own_evaluator = None  # one per-layer session at a time
        evaluator = CandidateEvaluator(self.proto, {index: self.layers[index]})
        self._own_setup_seconds = evaluator.setup_seconds
        self._own_evaluator = (weight_name, evaluator)
        return evaluator

    def _build(
        self,
        config: PruneConfig,
        scorer: ScoringMethod,
        group: str,
        only: set[str] | None,
        prepared: PrunedLayers | None = None,
    ) -> Candidate:
        """A pruned copy of the model (``prepared``: the pruned layers ``_judge`` made for the
        same arguments)."""
        if prepared is None:
            prepared = self._prepare(config, scorer, group, only)
        model = onnx.ModelProto()
        model.CopyFrom(self.proto)
        reports, written = self._write(
            model, config, prepared.plans, prepared.finals, prepared.deltas, self.statistics()
        )
        warnings = prepared.notes + prepared.warnings + written
        candidate = Candidate(model, config.target_sparsity, scorer, group, reports, warnings)
        candidate.removed = prepared.removed
        candidate.notes = prepared.notes
        candidate.allocation = config.allocation_mode
        return candidate

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
                config,
                group,
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
                score = scorer.score(matrix, layer_stats)
                keep = (
                    nm_mask(score, config.nm)
                    if config.nm is not None
                    else row_mask(score, row_targets[k])
                )
                del score
            target = row_targets[k] if scorer.adaptive_mask else config.target_sparsity
            factors = self.factors(layer) if reconstructing else None
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
            plans = []
            for i in stage:
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
                plans.append(LayerPlan(i, method, target, keep, floor))
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

    def _choose(self, config: PruneConfig, scorer: ScoringMethod) -> Candidate:
        """``--group auto``: try each selection group with the method, then each of its
        variants in the winning group, and keep the candidate whose outputs stay closest
        (``decision_score``) to the original's on calibration samples.

        Statistics are reused; the original's outputs are computed once. Held-out samples are
        not used, so the reported fidelity stays an honest estimate. Ties: first candidate.
        With --allocation sensitivity the choice is made on the group's own shares, and only
        the winner is then re-allocated by measured sensitivity (one measurement, not one per
        trial); the re-allocated candidate is kept unless it scores lower on the same samples.
        """
        reference = self.trial_reference(config)
        variants = [scorer, *(get_method(name) for name in scorer.auto_variants)]
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

    # -- sensitivity allocation ---------------------------------------------------------

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
            stats = self.statistics()
            scores = [
                scorer.score(self.matrices()[i], stats[self.layers[i].weight_name]) for i in chosen
            ]
            masks = select_masks(scores, config, "global", sparsity=sparsity)
            base = [1.0 - float(mask.mean()) for mask in masks]
        else:
            base = allocate(shapes, sparsity, config.min_row_weights)
        if owl.OWL_PRIOR:  # EXPERIMENT: OWL's outlier-weighted shares as the starting point
            stats = self.statistics()
            matrices = [self.matrices()[i] for i in chosen]
            layer_stats = [stats[self.layers[i].weight_name] for i in chosen]
            base = owl.prior_shares(matrices, layer_stats, sparsity, config.min_row_weights)
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
        per scorer, selection, layers and shares (a sweep or search measures each sparsity)."""
        selection = "row" if group == "row" else "layer"
        measured = config.allocation_mode == "measured"
        key = (
            scorer.name,
            selection,
            config.update,
            measured,
            tuple(chosen),
            tuple(round(b, 9) for b in base),
        )
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
        with self.progress.phase("sensitivity", len(chosen), "layer") as advance:
            for i, layer_base in zip(chosen, base, strict=True):
                curves.append(
                    self._sensitivity_curve(
                        measuring, scorer, selection, reference, measured, i, layer_base
                    )
                )
                advance()
        log.info("sensitivity: %d single-layer candidates judged", self.sensitivity_builds)
        self._sensitivity[key] = curves
        return curves

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
        (the run's method and update) at its ``base`` share and at the highest level; the
        other levels follow its local error proxy ``local_error`` (``interpolated_curve``).
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
            scores = scorer.score(matrix, stats)
        floor = config.min_row_weights
        errors = [
            local_error(matrix, weights, layer_select(scores, level, selection, None, floor))
            for level in levels
        ]
        anchor = levels.index(base) if base in levels else 0
        judged_damage = {anchor: judged(levels[anchor])}
        top = len(levels) - 1
        if top != anchor and errors[top] > errors[anchor]:
            judged_damage[top] = judged(levels[top])
        return interpolated_curve(levels, errors, anchor, judged_damage)

    # -- checking candidates -------------------------------------------------------------

    def calibration_reference(self) -> ReferenceRun:
        """The original's outputs on the first AUTO_SAMPLES calibration samples, on which
        --group auto and --allocation measured judge candidates (never the held-out ones, so
        the reported fidelity stays an honest estimate)."""
        if self._auto_reference is None:
            self._auto_reference = self._probe_reference(AUTO_SAMPLES)
        return self._auto_reference

    def trial_reference(self, config: PruneConfig) -> ReferenceRun:
        """Where --group auto judges its trials: the calibration reference with --allocation
        measured, else its first samples holding about AUTO_VALUES output values."""
        if config.allocation_mode == "measured":
            return self.calibration_reference()
        if self._trial_reference is None:
            wanted = math.ceil(AUTO_VALUES / max(self._output_values_per_sample(), 1))
            count = min(AUTO_SAMPLES, max(SENSITIVITY_SAMPLES, wanted))
            if count >= AUTO_SAMPLES:
                return self.calibration_reference()
            self._trial_reference = self._probe_reference(count)
        return self._trial_reference

    def sensitivity_reference(self) -> ReferenceRun:
        """The first calibration samples, on which the estimated sensitivity curves judge their
        candidates: enough samples for about SENSITIVITY_VALUES output values (a classifier's
        few logits need SENSITIVITY_SAMPLES, a detector's or encoder's large outputs fewer),
        at least MIN_SENSITIVITY_SAMPLES."""
        if self._sensitivity_reference is None:
            wanted = math.ceil(SENSITIVITY_VALUES / max(self._output_values_per_sample(), 1))
            count = min(SENSITIVITY_SAMPLES, max(MIN_SENSITIVITY_SAMPLES, wanted))
            self._sensitivity_reference = self._probe_reference(count)
        return self._sensitivity_reference

    def _probe_reference(self, count: int) -> ReferenceRun:
        """The original's outputs and the inputs of the first ``count`` calibration samples,
        cached: candidates are judged on them many times."""
        probe = np.zeros_like(self.calib_mask)
        probe[np.flatnonzero(self.calib_mask)[:count]] = True
        return ReferenceRun(
            self.reference_path,
            self.calibration,
            probe,
            self.config.batch_size,
            "calibration",
            cache=True,
            cache_feeds=True,
            metric=self.metric,
        )

    def _output_values_per_sample(self) -> int:
        """How many output values one sample gives: from the --group auto reference when it
        ran, else from running the original on one sample."""
        auto = self._auto_reference
        if auto is not None and auto.ran:
            return auto.values_per_sample()
        one = np.zeros_like(self.calib_mask)
        one[np.flatnonzero(self.calib_mask)[:1]] = True
        return ReferenceRun(
            self.reference_path, self.calibration, one, 1, "calibration"
        ).values_per_sample()

    def search_reference(self) -> ReferenceRun:
        """Where --sparsity auto measures its candidates. Without --eval: every other held-out
        sample (never seen by the statistics, so --update's fit to the calibration samples
        does not flatter it); the rest of the held-out samples stay for the reported fidelity,
        which is therefore not measured on the samples the sparsity was chosen on. With --eval
        (or too few samples to split): the first AUTO_SAMPLES calibration samples."""
        held = np.flatnonzero(self.holdout_mask)
        if self.evaluation is not None or self.holdout_mask is self.calib_mask or held.size < 2:
            return self.calibration_reference()
        search = np.zeros_like(self.holdout_mask)
        search[held[::2]] = True
        self.holdout_mask = self.holdout_mask & ~search
        self._verify_reference = None
        return ReferenceRun(
            self.reference_path,
            self.calibration,
            search,
            self.config.batch_size,
            "search (held-out)",
            cache=True,
            metric=self.metric,
        )

    def verification_reference(self) -> ReferenceRun:
        """The original's side of the held-out (or --eval) check; cached outputs are kept
        because searches and sweeps compare many candidates against it."""
        if self._verify_reference is None:
            if self.evaluation is not None:
                data, selected, source = (
                    self.evaluation,
                    np.ones(self.evaluation.total, dtype=bool),
                    "--eval",
                )
            else:
                held_out = self.holdout_mask is not self.calib_mask
                data, selected = self.calibration, self.holdout_mask
                source = "held-out" if held_out else "calibration"
            # Searches, sweeps and inspect compare many candidates: keep the original's
            # outputs when that stays small.
            cache = int(selected.sum()) <= MAX_CACHED_SAMPLES
            self._verify_reference = ReferenceRun(
                self.reference_path,
                data,
                selected,
                self.config.batch_size,
                source,
                cache=cache,
                metric=self.metric,
            )
            if self.big and cache:
                # Run the original now and drop its session: never two big sessions at once.
                self._verify_reference.prefetch()
        return self._verify_reference

    def compare(self, candidate: Candidate, reference: ReferenceRun | None = None) -> Fidelity:
        with self.candidate_file(candidate.model) as path:
            return (reference or self.verification_reference()).compare(path)

    @contextmanager
    def candidate_file(self, model: onnx.ModelProto) -> Iterator[Path]:
        """``model`` on disk for onnxruntime; in big-model mode, beside the files its external
        tensors live in (the work directory)."""
        if self.base_dir is None:
            with candidate_file(model) as path:
                yield path
            return
        path = self.base_dir / f"candidate-{next(self._files)}.onnx"
        try:
            yield save_for_session(model, path)
        finally:
            path.unlink(missing_ok=True)


@contextmanager
def candidate_file(model: onnx.ModelProto) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="onnxprune-candidate-") as tmp:
        yield save_for_session(model, Path(tmp) / "candidate.onnx")


def _branch_refusal(big: bool, config: PruneConfig) -> str | None:
    """Why layers inside If branches cannot be pruned in this run (None: they can)."""
    if big:
        return "not pruned in big-model mode"
    if config.sequential:
        return "not pruned with --sequential (branch layers are pruned one-shot only)"
    return None


def _inverse_factors(stats: LayerStats) -> list[tuple[np.ndarray, np.ndarray]] | None:
    if stats.inputs.xtx is None:
        return None
    try:
        return inverse_hessian_factors(stats.inputs.xtx, stats.inputs.count)
    except ReconstructionError:
        return None


# Ops whose outputs may be sequences or optionals, which have no shape to probe.
_UNSHAPED_OPS = ("SplitToSequence", "Optional", "OptionalGetElement", "If", "Loop", "Scan")


def probe_names(model: onnx.ModelProto) -> list[str]:
    """Every tensor of the main graph whose run-time shape the structure analysis may need."""
    names = [i.name for i in model.graph.input]
    for node in model.graph.node:
        if node.op_type == "Constant" or node.op_type.startswith("Sequence"):
            continue
        if node.op_type in _UNSHAPED_OPS:
            continue
        names += [o for o in node.output if o]
    initializers = {t.name for t in model.graph.initializer}
    return list(dict.fromkeys(n for n in names if n not in initializers))


def input_weights(
    stats: LayerStats, factors: list[tuple[np.ndarray, np.ndarray]] | None, rows: int
) -> np.ndarray:
    """[out, K]: what removing one weight w_ij costs the layer's output, per unit w_ij^2.
    With the inverse-Hessian factors (reconstruction) the OBS cost 1 / [H^-1]_jj (the error
    left after the remaining weights are re-fitted), else E[x_j^2] (nothing re-fitted)."""
    if factors is not None:
        inverse_diagonal = np.stack([(upper**2).sum(axis=0) for upper, _ in factors])  # [G, K]
        return stats.row_expand(1.0 / inverse_diagonal, rows)
    mean_square = stats.inputs.x_sq_sum / max(stats.inputs.count, 1.0)
    return stats.row_expand(mean_square, rows)


def local_error(matrix: np.ndarray, weights: np.ndarray, keep: np.ndarray) -> float:
    """The layer's output error proxy when the weights outside ``keep`` are removed (each
    weight's cost ``weights`` [out, K], see ``input_weights``, summed independently)."""
    return float((matrix**2 * weights)[~keep].sum())


def mean_cosine(fidelity: Fidelity) -> float:
    """Plain cosine over the outputs (the report's continuity column; decisions use
    ``metric.decision_score``)."""
    return float(np.mean([o.cosine for o in fidelity.outputs]))


MASK_NAMES = ("attention_mask", "input_mask")


def choose_sample_mask(specs: list[InputSpec], requested: str | None) -> str | None:
    """The input whose zeros mark padded tokens, if any (``requested``: a name or "none")."""
    if requested == "none":
        return None
    if requested is not None:
        spec = next((s for s in specs if s.name == requested), None)
        if spec is None:
            names = ", ".join(s.name for s in specs)
            raise UsageError(f"--sample-mask {requested!r} is not a model input ({names})")
        if spec.rank != 2:
            raise UsageError(
                f"--sample-mask {requested!r} must be [batch, seq], got {spec.describe()}"
            )
        return requested
    for spec in specs:
        integral = np.issubdtype(spec.dtype, np.integer) or spec.dtype == np.bool_
        if spec.name.lower() in MASK_NAMES and spec.rank == 2 and integral:
            return spec.name
    return None


def prune_matrix(
    matrix: np.ndarray,
    keep: np.ndarray | None,
    stats: LayerStats,
    scorer: ScoringMethod,
    config: PruneConfig,
    target: float,
    factors: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """(pruned matrix [out, K], bias change [out] or None, a problem worth reporting).

    Without reconstruction: zero the masked weights; the method's compensation goes to the bias.
    With it (``--update`` or a method that selects its mask during the update): the remaining
    weights are re-fitted to the layer's calibration outputs, and the bias absorbs the residual
    mean ``(W - W') E[x]`` (adding the pruned mean on top would count it twice).
    """
    reconstructing = config.update or scorer.adaptive_mask
    if reconstructing and factors is None:
        problem = "no reconstruction (input correlation too wide or not positive definite)"
        if keep is None:  # the method needs the update to choose a mask: fall back to |W|
            keep = select_masks(
                [np.abs(matrix)], dataclasses.replace(config, sparsity=target), "row"
            )[0]
        reconstructing = False
    else:
        problem = None
    if not reconstructing:
        assert keep is not None
        pruned = np.where(keep, matrix, 0.0)
        delta = scorer.compensate(matrix, stats, keep) if scorer.compensate else None
        return (*corrected(matrix, pruned, delta, stats, config), problem)
    assert factors is not None
    rows = matrix.shape[0]
    groups = len(factors)
    per_group = rows // groups
    pruned = np.empty_like(matrix)
    kept = np.ones(matrix.shape, dtype=bool) if keep is None else keep.copy()
    pattern = config.nm
    # update_target "dense": fit the dense model's outputs W x_ref, not W x (the method brief,
    # section 3).
    cross = stats.inputs.cross
    if groups > 1 and keep is not None and cross is None:
        # A fixed mask over many conv groups (depthwise): one batched column walk.
        shape = (groups, per_group, matrix.shape[1])
        pruned = reconstruct_groups(matrix.reshape(shape), factors, keep.reshape(shape)).reshape(
            matrix.shape
        )
        groups = 0  # done
    for g in range(groups):
        part = slice(g * per_group, (g + 1) * per_group)
        start = matrix[part]
        if cross is not None:
            start = refit_to_reference(start, cross[g], stats.inputs.count, factors[g])
        pruned[part], kept[part] = reconstruct(
            start,
            factors[g],
            None if keep is None else keep[part],
            sparsity=target,
            pattern=pattern,
            row_cap=row_cap(matrix.shape[1], target, config.min_row_weights) / matrix.shape[1],
            reselect=reselection(matrix, stats, scorer, config, g, groups, keep),
        )
    inputs = stats.inputs
    if (
        config.refit_steps
        and inputs.xtx is not None
        and cross is None
        and correction.refit_applies(inputs.xtx.shape[0], matrix.shape[1], inputs.count)
    ):
        # --refit-steps: conjugate-gradient steps on the layer objective over the kept weights.
        hessians = damped_hessians(inputs.mean, inputs.xtx, inputs.count, correction.CG_CENTERED)
        pruned = refit_on_support(matrix, pruned, kept, hessians, config.refit_steps)
    mean = stats.row_expand(stats.inputs.mean, rows)
    if cross is not None and stats.inputs.ref_sum is not None:
        # The residual mean against the dense outputs: W E[x_ref] - W' E[x].
        ref_mean = stats.row_expand(stats.inputs.ref_sum / max(stats.inputs.count, 1.0), rows)
        delta = (matrix * ref_mean).sum(axis=1) - (pruned * mean).sum(axis=1)
    else:
        delta = ((matrix - pruned) * mean).sum(axis=1)
    return (*corrected(matrix, pruned, delta, stats, config), problem)


def reselection(
    matrix: np.ndarray,
    stats: LayerStats,
    scorer: ScoringMethod,
    config: PruneConfig,
    group: int,
    groups: int,
    keep: np.ndarray | None,
) -> Reselect | None:
    """``reconstruct``'s re-selection of a fixed mask on the updated weights, for rows of conv
    group ``group`` (of ``groups``); None when it is off or the score is not ``scale *
    |w|^p`` (checked on 1 and 2)."""
    inputs = stats.inputs
    wanted = config.reselect_mask or reconstruct_module.RESELECT
    if keep is None or not wanted or inputs.xtx is None or inputs.cross is not None:
        return None
    per_group = matrix.shape[0] // groups
    part = slice(group * per_group, (group + 1) * per_group)
    ones = np.ones_like(matrix, dtype=np.float64)
    scale = np.asarray(scorer.score(ones, stats), dtype=np.float64)
    doubled = np.asarray(scorer.score(2.0 * ones, stats), dtype=np.float64)
    positive = scale > 0
    if not positive.any():
        return None
    ratios = doubled[positive] / scale[positive]
    power = float(np.log2(np.median(ratios)))
    if not np.allclose(ratios, 2.0**power, rtol=1e-6) or power <= 0:
        return None  # not homogeneous in |w|: the score cannot be re-evaluated this way
    return Reselect(scale[part], power, damped_diagonal(inputs.xtx[group], inputs.count))


def corrected(
    matrix: np.ndarray,
    pruned: np.ndarray,
    delta: np.ndarray | None,
    stats: LayerStats,
    config: PruneConfig,
) -> tuple[np.ndarray, np.ndarray | None]:
    """--stat-correction: each output channel's mean and variance over the calibration
    inputs set back to the dense layer's (``onnxprune.correction``); otherwise unchanged.
    Not with update_target "dense", whose dense-model inputs have no second moments here."""
    inputs = stats.inputs
    if not config.stat_correction or inputs.xtx is None or inputs.cross is not None:
        return pruned, delta
    return stat_correct(matrix, pruned, inputs.mean, inputs.xtx, inputs.count)


def write_matrices(
    view: GraphView,
    layers: list[Layer],
    matrices: list[np.ndarray],
    deltas: list[np.ndarray | None],
    stats: list[LayerStats],
) -> tuple[list[LayerReport], list[str]]:
    """Write the pruned weights, add the bias changes, describe each layer."""
    reports, warnings = [], []
    for layer, pruned, delta, layer_stats in zip(layers, matrices, deltas, stats, strict=True):
        report, written = write_layer(view, layer, pruned, delta, layer_stats)
        reports.append(report)
        warnings += written
    view.flush_inserts()
    return reports, warnings


def write_layer(
    view: GraphView,
    layer: Layer,
    pruned: np.ndarray,
    delta: np.ndarray | None,
    layer_stats: LayerStats,
) -> tuple[LayerReport, list[str]]:
    """Write one layer's pruned weight and bias change; the caller flushes the view's inserts."""
    warnings: list[str] = []
    nonzero_before = int(np.count_nonzero(layer.weight))
    write_weight(view, layer, pruned)
    if delta is not None:
        warnings += add_bias(view, layer, delta)
    written = layer.from_matrix(pruned)
    report = LayerReport(
        name=layer.name,
        op_type=layer.op.op_type,
        weight=layer.weight_name,
        shape=list(layer.shape),
        storage=layer.storage,
        gate=layer_stats.gate_kind,
        params=layer.size,
        nonzero_before=nonzero_before,
        nonzero_after=int(np.count_nonzero(written)),
        override=layer.override.text if layer.override is not None else None,
    )
    return report, warnings


def split_samples(
    calibration: CalibrationSet, has_eval: bool, config: PruneConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(calibration mask, verification mask) over the calibration set's samples.

    Without --eval, a seeded random share is held out (at most MAX_HOLDOUT samples); with too
    few samples to spare (<10), verification reuses the calibration samples.
    """
    total = calibration.total
    order = np.random.default_rng(config.seed).permutation(total)
    holdout = 0
    if not has_eval and total >= 10:
        holdout = min(MAX_HOLDOUT, max(1, math.ceil(config.holdout_fraction * total)))
    rest = order[holdout:]
    if config.num_samples is not None:
        rest = rest[: config.num_samples]
    calib_mask = np.zeros(total, dtype=bool)
    calib_mask[rest] = True
    if has_eval:
        return calib_mask, calib_mask
    if holdout == 0:
        verify = np.zeros(total, dtype=bool)
        verify[rest[:MAX_HOLDOUT]] = True
        return calib_mask, calib_mask if verify.sum() == calib_mask.sum() else verify
    verify_mask = np.zeros(total, dtype=bool)
    verify_mask[order[:holdout]] = True
    return calib_mask, verify_mask
