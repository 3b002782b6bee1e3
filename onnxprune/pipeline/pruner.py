"""``Pruner``: one model, one calibration pass, many candidate prunings (the last link of
this package's chain of stages; see ``__init__``)."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ..branches import attach_branch_layers
from ..calibrate.runner import probe_shapes
from ..calibrate.sources import (
    DataSource,
    model_input_specs,
    open_data,
)
from ..calibrate.stats import LayerStats
from ..config import PruneConfig
from ..errors import ModelError
from ..graph import GraphView
from ..heap import trim_heap
from ..io import is_big_model, link_external_data, load_model, write_errors
from ..layers import Layer, find_layers
from ..metric import Metric
from ..progress import Progress, as_progress
from ..refit_final import refit_written
from ..scoring import ScoringMethod, get_method
from ..structure import StructuredResult, prune_units
from .base import (
    Candidate,
)
from .sequential import Streamed
from .setup import (
    _branch_refusal,
    choose_sample_mask,
    probe_names,
    split_samples,
)

log = logging.getLogger(__name__)


def _fixed_batch_notes(fixed_batch: int | None, calibration_samples: int) -> list[str]:
    """What a model whose batch axis is fixed at B > 1 changes about the run: batches are
    filled to B by repeating samples (their outputs are left out of every comparison), and
    the calibration set is cut to whole batches (``setup.whole_batches``), or, when it holds
    fewer than B samples, its batch repeats some of them in the statistics."""
    if fixed_batch is None or fixed_batch <= 1:
        return []
    note = (
        f"the model's batch axis is fixed at {fixed_batch}: a shorter batch is filled by "
        "repeating its samples (left out of every comparison)"
    )
    if calibration_samples < fixed_batch:
        return [
            f"{note}; only {calibration_samples} calibration sample(s) fill its one batch, "
            "so some count twice in the statistics"
        ]
    return [f"{note}; calibrating on {calibration_samples} samples, whole batches"]


class Pruner(Streamed):
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
        self._workdir = None
        self.base_dir = None
        self._open(model_path, calib, eval_data, hold_out)
        # Last: nothing after this may fail without removing the work directory.
        if self.big:
            self._workdir = tempfile.TemporaryDirectory(prefix="onnxprune-big-")
            self.base_dir = Path(self._workdir.name)
            log.info("big-model mode: weights stay on disk (work directory %s)", self.base_dir)
        try:
            if self.base_dir is not None:
                with write_errors(self.base_dir):
                    link_external_data(model_path, self.base_dir)
            self.scan = find_layers(GraphView(self.proto, self.base_dir), config)
            # Layers in top-level If branches, appended to the layers (onnxprune.branches).
            self.branches = attach_branch_layers(
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
        self._reset_caches()

    def _open(
        self,
        model_path: Path,
        calib: DataSource,
        eval_data: DataSource | None,
        hold_out: bool | None,
    ) -> None:
        """Load the model (its weights too, unless big-model mode) and open the data."""
        config = self.config
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
        self.notes = _fixed_batch_notes(self.calibration.fixed_batch, int(self.calib_mask.sum()))
        self.sample_mask = choose_sample_mask(specs, config.sample_mask)
        # What every comparison scores and every decision optimises (``onnxprune.metric``).
        self.metric = Metric(config.metric, config.metric_outputs, self.sample_mask)
        self.scorer = get_method(config.method)

    def _reset_caches(self) -> None:
        """Empty caches and counters: nothing gathered, judged or built yet."""
        self._stats = None
        self._values_per_sample = None
        self._shared_original = None
        # The in-memory candidate evaluator (one session for every search), once built; False:
        # not possible for this model.
        self._evaluator = None
        if self.branches.layers:  # a weight inside a branch cannot be fed as a graph input
            self._evaluator = False
        # What judging keeps between candidates starts empty too.
        self._factors, self._kept_factors = {}, set()
        self.release_judging()
        # Single-layer candidates: the seconds it took to build the per-layer evaluator, and
        # the seconds judging took in the shared (True) and per-layer (False) ones.
        self._own_setup_seconds = 0.0
        self._judge_seconds = {True: [], False: []}
        # Single-layer candidates judged on the graph downstream of the layer: each layer's
        # cut (None: not possible) and the window of layers sharing its session.
        self._cuts = None
        self._windows = {}
        self._verify_reference = None
        # --allocation sensitivity: measured curves per (selection, layers and their shares).
        self._sensitivity = {}
        # Single-layer candidates built and run to measure them.
        self.sensitivity_builds = 0
        self.unmeasured_layers = []  # estimated sensitivity curves: layers too small to measure
        self.base_share_layers = []  # ... and those past the judging budget, at their share
        # Calibration passes run so far (one-shot statistics, --sequential stages, --structured).
        self.calibration_passes = 0
        # Seconds spent judging candidates in onnxruntime and in the per-layer OBS updates
        # (the report's phase split of "prune").
        self.phase_seconds = {"judge": 0.0, "update": 0.0}
        # --sequential: the statistics each layer was last pruned with (stage passes).
        self.stage_statistics = {}

    def release_judging(self) -> None:
        """Drop what judging candidates kept (sessions, boundary values, the original's
        outputs on the probe samples, pruned layers and scores kept for reuse) once the
        candidate to write is chosen: writing and verifying it then do not run on top of
        them (MiniLM's peak RSS was at the final check). The statistics stay; the layers'
        float64 matrices and inverse-Hessian factors, derived from the weights and the
        statistics, go too (MiniLM: 81 MB of matrices), except the factors that replaced
        their x^T x. Anything dropped is rebuilt if asked for again."""
        if self._evaluator is not False:
            self._evaluator = None
        # The current per-layer evaluator; the original's boundary values and the current
        # downstream session of single-layer candidates.
        self._own_evaluator = None
        self._boundary = None
        self._suffix = None
        self._auto_reference = None
        self._trial_reference = None
        self._sensitivity_reference = None
        # One-shot pruned layers kept for reuse (``remember``), by ``_pruned_key``.
        self._pruned = {}
        # What the last ``_prune_layers`` call computed one-shot, by the same key.
        self._latest = {}
        self._scores = {}
        self._last_scores = None
        self._group_shares = {}
        self._known_masks = {}
        self._matrices = None
        # A factor whose x^T x is gone stays (``StatisticsStage.factors``).
        self._factors = {k: v for k, v in self._factors.items() if k in self._kept_factors}
        self._arrays = None
        # What was dropped goes back to the system now, not whenever the heap's top happens to
        # come free (MiniLM: 425 MB, 0.04 s; see ``onnxprune.heap``).
        trim_heap()

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
