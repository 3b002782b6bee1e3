"""One model, one calibration pass, many candidate prunings.

``Pruner`` loads the model and data, gathers statistics once, and builds pruned copies of the
model for any sparsity / scoring variant / selection group; it also runs the differential check
of a candidate against the original. ``api.prune`` (one model out), the sparsity search, the
sweep and ``inspect``'s per-layer sensitivity are all built from these pieces.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .apply import add_bias, write_weight
from .calibrate.runner import collect_statistics
from .calibrate.sources import CalibrationSet, DataSource, model_input_specs, open_data
from .calibrate.stats import LayerStats
from .config import PruneConfig
from .errors import ModelError
from .graph import GraphView
from .io import load_model
from .layers import Layer, LayerScan, find_layers
from .masking import select_masks
from .report import LayerReport
from .scoring import ScoringMethod, get_method
from .session import save_for_session
from .verify import Fidelity, ReferenceRun

# Held-out verification never needs more than this many samples.
MAX_HOLDOUT = 256
# --group auto: the selections it tries, and how many calibration samples judge them.
AUTO_GROUPS = ("row", "global")
AUTO_SAMPLES = 128
# The original's outputs on at most this many verification samples are kept in memory.
MAX_CACHED_SAMPLES = 1024


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


class Pruner:
    def __init__(
        self,
        model_path: Path,
        calib: DataSource,
        config: PruneConfig,
        eval_data: DataSource | None = None,
        progress: bool = False,
    ) -> None:
        self.model_path = model_path
        self.config = config
        self.progress = progress
        self.proto = load_model(model_path)
        specs = model_input_specs(self.proto)
        if not specs:
            raise ModelError(f"{model_path} has no graph inputs to feed calibration data to")
        self.calibration = open_data(calib, specs)
        self.evaluation = (
            open_data(eval_data, specs, allow_labels=True) if eval_data is not None else None
        )
        self.calib_mask, self.holdout_mask = split_samples(
            self.calibration, self.evaluation is not None, config
        )
        self.scan: LayerScan = find_layers(GraphView(self.proto), config)
        self.scorer = get_method(config.method)
        self._stats: dict[str, LayerStats] | None = None
        self._matrices: list[np.ndarray] | None = None
        self._auto_reference: ReferenceRun | None = None
        self._verify_reference: ReferenceRun | None = None

    @property
    def layers(self) -> list[Layer]:
        return self.scan.layers

    @property
    def calibration_samples(self) -> int:
        return int(self.calib_mask.sum())

    # -- statistics ----------------------------------------------------------------------

    def statistics(self) -> dict[str, LayerStats]:
        """Gathered on first use, in one pass over the calibration samples."""
        if self._stats is None:
            gated = self.scorer.needs_gates or any(
                get_method(v).needs_gates for v in self.scorer.auto_variants
            )
            self._stats = collect_statistics(
                self.proto,
                self.layers,
                self.calibration,
                self.calib_mask,
                self.config.batch_size,
                gated=gated,
                progress=self.progress,
            )
        return self._stats

    def matrices(self) -> list[np.ndarray]:
        if self._matrices is None:
            self._matrices = [layer.matrix() for layer in self.layers]
        return self._matrices

    # -- building candidates -------------------------------------------------------------

    def build(
        self,
        sparsity: float | None = None,
        scorer: ScoringMethod | None = None,
        group: str | None = None,
        only: set[str] | None = None,
    ) -> Candidate:
        """A pruned copy of the model. ``group`` "auto" picks a variant and group on data;
        ``only`` restricts pruning to the layers with these weight names."""
        config = (
            self.config if sparsity is None else dataclasses.replace(self.config, sparsity=sparsity)
        )
        scorer = scorer or self.scorer
        group = group or config.group or scorer.default_group
        if config.nm is not None:
            group = "row"  # N:M fixes the selection
        if group == "auto":
            return self._choose(config, scorer)
        return self._build(config, scorer, group, only)

    def _build(
        self, config: PruneConfig, scorer: ScoringMethod, group: str, only: set[str] | None
    ) -> Candidate:
        stats = self.statistics()
        chosen = [
            i for i, layer in enumerate(self.layers) if only is None or layer.weight_name in only
        ]
        matrices = [self.matrices()[i] for i in chosen]
        scores = [
            scorer.score(matrices[k], stats[self.layers[i].weight_name])
            for k, i in enumerate(chosen)
        ]
        masks = select_masks(scores, config, group)
        model = onnx.ModelProto()
        model.CopyFrom(self.proto)
        view = GraphView(model)
        layers = find_layers(view, config).layers  # same order, nodes of the copy
        reports, warnings = apply_masks(
            view, [layers[i] for i in chosen], matrices, masks, stats, scorer
        )
        return Candidate(model, config.target_sparsity, scorer, group, reports, warnings)

    def _choose(self, config: PruneConfig, scorer: ScoringMethod) -> Candidate:
        """``--group auto``: build each variant x selection group and keep the candidate whose
        outputs stay closest (mean cosine) to the original's on calibration samples.

        Statistics are reused; the original's outputs are computed once. Held-out samples are
        not used, so the reported fidelity stays an honest estimate. Ties: first candidate.
        """
        if self._auto_reference is None:
            probe = np.zeros_like(self.calib_mask)
            probe[np.flatnonzero(self.calib_mask)[:AUTO_SAMPLES]] = True
            self._auto_reference = ReferenceRun(
                self.model_path,
                self.calibration,
                probe,
                config.batch_size,
                "calibration",
                cache=True,
            )
        variants = [scorer, *(get_method(name) for name in scorer.auto_variants)]
        trials: dict[str, float] = {}
        best: tuple[float, Candidate] | None = None
        for variant in variants:
            for group in AUTO_GROUPS:
                candidate = self._build(config, variant, group, None)
                cosine = mean_cosine(self.compare(candidate, self._auto_reference))
                trials[f"{variant.name}/{group}"] = cosine
                if best is None or cosine > best[0]:
                    best = (cosine, candidate)
        assert best is not None
        best[1].trials = trials
        return best[1]

    # -- checking candidates -------------------------------------------------------------

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
                self.model_path, data, selected, self.config.batch_size, source, cache=cache
            )
        return self._verify_reference

    def compare(self, candidate: Candidate, reference: ReferenceRun | None = None) -> Fidelity:
        with candidate_file(candidate.model) as path:
            return (reference or self.verification_reference()).compare(path)


@contextmanager
def candidate_file(model: onnx.ModelProto) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="onnxprune-candidate-") as tmp:
        yield save_for_session(model, Path(tmp) / "candidate.onnx")


def mean_cosine(fidelity: Fidelity) -> float:
    return float(np.mean([o.cosine for o in fidelity.outputs]))


def apply_masks(
    view: GraphView,
    layers: list[Layer],
    matrices: list[np.ndarray],
    masks: list[np.ndarray],
    stats: dict[str, LayerStats],
    scorer: ScoringMethod,
) -> tuple[list[LayerReport], list[str]]:
    """Zero the masked weights, fold the method's compensation into the biases."""
    reports, warnings = [], []
    for layer, matrix, keep in zip(layers, matrices, masks, strict=True):
        nonzero_before = int(np.count_nonzero(layer.weight))
        pruned = np.where(keep, matrix, 0.0)
        write_weight(view, layer, pruned)
        if scorer.compensate is not None:
            delta = scorer.compensate(matrix, stats[layer.weight_name], keep)
            warnings += add_bias(view, layer, delta)
        written = layer.from_matrix(pruned)
        reports.append(
            LayerReport(
                name=layer.name,
                op_type=layer.op.op_type,
                weight=layer.weight_name,
                shape=list(layer.shape),
                storage=layer.storage,
                gate=stats[layer.weight_name].gate_kind,
                params=int(layer.weight.size),
                nonzero_before=nonzero_before,
                nonzero_after=int(np.count_nonzero(written)),
            )
        )
    view.flush_inserts()
    return reports, warnings


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
