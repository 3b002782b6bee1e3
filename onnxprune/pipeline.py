"""One model, one calibration pass, many candidate prunings.

``Pruner`` loads the model and data, gathers statistics once, and builds pruned copies of the
model for any sparsity / scoring variant / selection group; it also runs the differential check
of a candidate against the original. ``api.prune`` (one model out), the sparsity search, the
sweep and ``inspect``'s per-layer sensitivity are all built from these pieces.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .apply import add_bias, write_weight
from .calibrate.runner import collect_statistics, collect_statistics_in_parts, probe_shapes
from .calibrate.sources import (
    CalibrationSet,
    DataSource,
    InputSpec,
    model_input_specs,
    open_data,
)
from .calibrate.stats import LayerStats
from .config import PruneConfig
from .errors import ModelError, UsageError
from .graph import GraphView
from .io import is_big_model, link_external_data, load_model, spill_array, write_errors
from .layers import Layer, LayerScan, find_layers
from .masking import allocate, nm_mask, row_cap, row_mask, select_masks
from .reconstruct import (
    ReconstructionError,
    inverse_hessian_factor,
    reconstruct,
)
from .report import LayerReport
from .scoring import ScoringMethod, get_method
from .session import save_for_session
from .structure import StructuredResult, prune_units
from .verify import Fidelity, ReferenceRun

# Held-out verification never needs more than this many samples.
MAX_HOLDOUT = 256
# --group auto: the selections it tries, and how many calibration samples judge them.
AUTO_GROUPS = ("row", "global")
AUTO_SAMPLES = 64
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
        progress: bool = False,
        reference_path: Path | None = None,
        big: bool | None = None,
    ) -> None:
        self.model_path = model_path
        # The model candidates are checked against (the original, when this one was shrunk).
        self.reference_path = reference_path or model_path
        self.config = config
        self.progress = progress
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
        self.calib_mask, self.holdout_mask = split_samples(
            self.calibration, self.evaluation is not None, config
        )
        self.sample_mask = choose_sample_mask(specs, config.sample_mask)
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
        except BaseException:
            self.close()
            raise
        self._stats: Mapping[str, LayerStats] | None = None
        self._matrices: list[np.ndarray] | None = None
        self._factors: dict[str, list[tuple[np.ndarray, np.ndarray]] | None] = {}
        self._auto_reference: ReferenceRun | None = None
        self._verify_reference: ReferenceRun | None = None

    def close(self) -> None:
        """Remove the big-model work directory (also done when the Pruner is collected)."""
        if self._workdir is not None:
            self._workdir.cleanup()

    @property
    def layers(self) -> list[Layer]:
        return self.scan.layers

    @property
    def calibration_samples(self) -> int:
        return int(self.calib_mask.sum())

    # -- statistics ----------------------------------------------------------------------

    def statistics(self) -> Mapping[str, LayerStats]:
        """Gathered on first use, in one pass over the calibration samples (big-model mode:
        one pass per part of the layers, the statistics kept on disk)."""
        if self._stats is None:
            gated = self.scorer.needs_gates or any(
                get_method(v).needs_gates for v in self.scorer.auto_variants
            )
            hessian = self.config.update or self.scorer.adaptive_mask
            if self.base_dir is not None:
                with write_errors(self.base_dir):
                    self._stats = collect_statistics_in_parts(
                        self.proto,
                        self.layers,
                        self.calibration,
                        self.calib_mask,
                        self.config.batch_size,
                        gated=gated,
                        progress=self.progress,
                        hessian=hessian,
                        sample_mask=self.sample_mask,
                        workdir=self.base_dir,
                    )
                return self._stats
            self._stats = collect_statistics(
                self.proto,
                self.layers,
                self.calibration,
                self.calib_mask,
                self.config.batch_size,
                gated=gated,
                progress=self.progress,
                hessian=hessian,
                sample_mask=self.sample_mask,
            )
        return self._stats

    def factors(self, layer: Layer) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Per conv group, the inverse-Hessian factor reconstruction needs; computed once per
        layer (not kept in big-model mode). None when the layer's input correlation was not
        gathered or is unusable."""
        if self.big:
            self._factors.clear()
        if layer.weight_name not in self._factors:
            inputs = self.statistics()[layer.weight_name].inputs
            factors = None
            if inputs.xtx is not None:
                try:
                    factors = [inverse_hessian_factor(x, inputs.count) for x in inputs.xtx]
                except ReconstructionError:
                    factors = None
            self._factors[layer.weight_name] = factors
        return self._factors[layer.weight_name]

    def matrices(self) -> list[np.ndarray]:
        if self._matrices is None:
            self._matrices = [layer.matrix() for layer in self.layers]
        return self._matrices

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

        def stats_for(readers: list[Layer]) -> dict[str, LayerStats]:
            return collect_statistics(
                self.proto,
                readers,
                self.calibration,
                self.calib_mask,
                self.config.batch_size,
                gated=False,
                progress=self.progress,
                sample_mask=self.sample_mask,
                shapes=shapes,
            )

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
        ``only`` restricts pruning to the layers with these weight names."""
        config = (
            self.config if sparsity is None else dataclasses.replace(self.config, sparsity=sparsity)
        )
        scorer = scorer or self.scorer
        group = group or config.group or scorer.default_group
        if config.nm is not None:
            group = "row"  # N:M fixes the selection
        if group == "auto" and self.base_dir is not None:
            # Each trial is a full pruned copy and a verification run: too much for a big model.
            with write_errors(self.base_dir):
                candidate = self._build_streamed(config, scorer, "row", only)
            candidate.warnings.append(
                "big model: --group auto tried no candidates, row selection was used"
            )
            return candidate
        if group == "auto":
            return self._choose(config, scorer)
        if self.base_dir is not None:
            with write_errors(self.base_dir):
                return self._build_streamed(config, scorer, group, only)
        return self._build(config, scorer, group, only)

    def _build(
        self, config: PruneConfig, scorer: ScoringMethod, group: str, only: set[str] | None
    ) -> Candidate:
        stats = self.statistics()
        chosen = [
            i for i, layer in enumerate(self.layers) if only is None or layer.weight_name in only
        ]
        matrices = [self.matrices()[i] for i in chosen]
        scores = (
            []
            if scorer.adaptive_mask
            else [
                scorer.score(matrices[k], stats[self.layers[i].weight_name])
                for k, i in enumerate(chosen)
            ]
        )
        layer_stats = [stats[self.layers[i].weight_name] for i in chosen]
        if scorer.adaptive_mask:
            # The mask is chosen inside the reconstruction, block by block.
            targets = allocate(
                [m.shape for m in matrices], config.target_sparsity, config.min_row_weights
            )
            masks: list[np.ndarray | None] = [None] * len(matrices)
        else:
            targets = [config.target_sparsity] * len(matrices)
            masks = list(select_masks(scores, config, group))
        warnings: list[str] = []
        finals, deltas = [], []
        for index, (matrix, keep, target) in enumerate(zip(matrices, masks, targets, strict=True)):
            layer = self.layers[chosen[index]]
            reconstructing = config.update or scorer.adaptive_mask
            factors = self.factors(layer) if reconstructing else None
            final, delta, problem = prune_matrix(
                matrix, keep, layer_stats[index], scorer, config, target, factors
            )
            if problem:
                warnings.append(f"{layer.name}: {problem}")
            finals.append(final)
            deltas.append(delta)
        model = onnx.ModelProto()
        model.CopyFrom(self.proto)
        view = GraphView(model)
        layers = find_layers(view, config).layers  # same order, nodes of the copy
        reports, written_warnings = write_matrices(
            view, [layers[i] for i in chosen], finals, deltas, layer_stats
        )
        return Candidate(
            model, config.target_sparsity, scorer, group, reports, warnings + written_warnings
        )

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
                self.reference_path,
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
                self.reference_path, data, selected, self.config.batch_size, source, cache=cache
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


def mean_cosine(fidelity: Fidelity) -> float:
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
        return pruned, delta, problem
    assert factors is not None
    rows = matrix.shape[0]
    groups = len(factors)
    per_group = rows // groups
    pruned = np.empty_like(matrix)
    pattern = config.nm
    for g in range(groups):
        part = slice(g * per_group, (g + 1) * per_group)
        pruned[part], _ = reconstruct(
            matrix[part],
            factors[g],
            None if keep is None else keep[part],
            sparsity=target,
            pattern=pattern,
            row_cap=row_cap(matrix.shape[1], target, config.min_row_weights) / matrix.shape[1],
        )
    mean = stats.row_expand(stats.inputs.mean, rows)
    delta = ((matrix - pruned) * mean).sum(axis=1)
    return pruned, delta, problem


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
