"""The pipeline: load -> calibrate -> score -> select -> apply -> save -> verify -> report."""

from __future__ import annotations

import logging
import math
import platform
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from . import __version__
from .apply import add_bias, write_weight
from .calibrate.runner import collect_statistics
from .calibrate.sources import CalibrationSet, model_input_specs, open_data
from .calibrate.stats import LayerStats
from .config import PruneConfig
from .errors import ModelError, OutputWriteError
from .graph import GraphView
from .io import (
    check_output_path,
    default_output_path,
    external_data_files,
    gzip_size_bytes,
    load_model,
    model_size_bytes,
    publish,
    staging_dir,
    write_model,
)
from .layers import Layer, find_layers
from .masking import select_masks
from .report import LayerReport, Report, SkippedReport
from .scoring import ScoringMethod, get_method
from .session import save_for_session
from .verify import ReferenceRun, compare_models

log = logging.getLogger(__name__)

# Held-out verification never needs more than this many samples.
MAX_HOLDOUT = 256
# --group auto: the selections it tries, and how many calibration samples judge them.
AUTO_GROUPS = ("row", "global")
AUTO_SAMPLES = 128


def prune(
    model: str | Path,
    calib: str | Path,
    *,
    sparsity: float | None = None,
    output: str | Path | None = None,
    method: str = "contrib",
    pattern: str = "unstructured",
    group: str | None = None,
    exclude: Sequence[str] = (),
    num_samples: int | None = None,
    batch_size: int = 32,
    min_row_weights: int = 8,
    eval_data: str | Path | None = None,
    report_path: str | Path | None = None,
    seed: int = 0,
    progress: bool = False,
    config: PruneConfig | None = None,
) -> Report:
    """Prune ``model`` with statistics from ``calib`` and write the result to ``output``.

    Mirrors the CLI (``onnxprune --help``). Raises :class:`onnxprune.OnnxPruneError` subclasses
    for bad input; returns the :class:`Report` of a finished run.
    """
    started = time.perf_counter()
    if config is None:
        from .config import parse_pattern

        nm = parse_pattern(pattern)
        if sparsity is None:
            sparsity = nm.sparsity if nm is not None else None
        if sparsity is None:
            from .errors import UsageError

            raise UsageError("--sparsity is required (or an N:M --pattern)")
        config = PruneConfig(
            sparsity=sparsity,
            method=method,
            pattern=pattern,
            group=group,
            exclude=tuple(exclude),
            num_samples=num_samples,
            batch_size=batch_size,
            seed=seed,
            min_row_weights=min_row_weights,
        )
    scorer = get_method(config.method)
    selection_group = config.group or scorer.default_group
    model_path = Path(model)
    output_path = Path(output) if output is not None else default_output_path(model_path)
    protected = {"the input model": model_path, "the calibration data": Path(calib)}
    if eval_data is not None:
        protected["the evaluation data"] = Path(eval_data)
    check_output_path(output_path, protected)
    report_file = Path(report_path) if report_path is not None else None
    if report_file is not None:
        protected["the output model"] = output_path
        check_output_path(report_file, protected, what="--report path")

    timings: dict[str, float] = {}
    clock = time.perf_counter()
    proto = load_model(model_path)
    specs = model_input_specs(proto)
    if not specs:
        raise ModelError(f"{model_path} has no graph inputs to feed calibration data to")
    calibration = open_data(Path(calib), specs)
    evaluation = open_data(Path(eval_data), specs, allow_labels=True) if eval_data else None
    calib_mask, verify_mask = _split_samples(calibration, evaluation is not None, config)
    view = GraphView(proto)
    scan = find_layers(view, config)
    params_before, nonzero_before = count_weights(proto)
    timings["load"] = time.perf_counter() - clock

    report = Report(
        model=str(model_path),
        output=str(output_path),
        method=config.method,
        pattern=config.pattern,
        group=selection_group if config.nm is None else f"N:M ({config.pattern})",
        target_sparsity=config.target_sparsity,
        seed=config.seed,
        arguments=_arguments(config, calib, eval_data, output_path),
        versions=_versions(),
        params_total=params_before,
        nonzero_before=nonzero_before,
        file_size_before=model_size_bytes(model_path),
        gzip_size_before=gzip_size_bytes(model_path),
        calibration_samples=int(calib_mask.sum()),
        skipped=[SkippedReport(s.name, s.op_type, s.reason) for s in scan.skipped],
    )

    if not scan.layers:
        report.status = "no prunable layer found: output is a copy of the input"
        report.nonzero_after = nonzero_before
        report.file_size_after = report.file_size_before
        report.gzip_size_after = report.gzip_size_before
        report.timings = {**timings, "total": time.perf_counter() - started}
        _copy_model(model_path, output_path, report, report_file)
        return report

    clock = time.perf_counter()
    stats = collect_statistics(
        proto,
        scan.layers,
        calibration,
        calib_mask,
        config.batch_size,
        gated=scorer.needs_gates,
        progress=progress,
    )
    timings["calibrate"] = time.perf_counter() - clock

    clock = time.perf_counter()
    matrices = [layer.matrix() for layer in scan.layers]
    if selection_group == "auto" and config.nm is None:
        scorer, selection_group, tried = _choose_candidate(
            model_path, proto, config, scorer, stats, matrices, calibration, calib_mask
        )
        report.group = f"auto -> {selection_group}"
        report.variant = scorer.name
        report.group_trials = tried
    elif selection_group == "auto":
        selection_group = "row"  # N:M fixes the selection; nothing to choose
    scores = _score_layers(matrices, scan.layers, stats, scorer)
    masks = select_masks(scores, config, selection_group)
    layer_reports, warnings = _apply_masks(view, scan.layers, matrices, masks, stats, scorer)
    report.layers = layer_reports
    report.warnings += warnings
    if report.achieved_sparsity < config.target_sparsity - 0.005:
        report.warnings.append(
            f"achieved sparsity {report.achieved_sparsity:.4f} is below the requested "
            f"{config.target_sparsity:.4f}: the layers' rows are too short to give more under "
            f"--min-row-weights {config.min_row_weights}"
        )
    report.params_total, report.nonzero_after = count_weights(proto)
    timings["prune"] = time.perf_counter() - clock

    with staging_dir(output_path) as staging:
        staged = staging / output_path.name
        clock = time.perf_counter()
        write_model(proto, staged, external_data=bool(external_data_files(model_path)))
        _full_check(staged)
        timings["save"] = time.perf_counter() - clock
        clock = time.perf_counter()
        if evaluation is not None:
            verify_set, source = evaluation, "--eval"
        else:
            verify_set = calibration
            source = "held-out" if verify_mask is not calib_mask else "calibration"
        verify_selected = (
            np.ones(verify_set.total, dtype=bool) if evaluation is not None else verify_mask
        )
        report.fidelity = compare_models(
            model_path, staged, verify_set, verify_selected, config.batch_size, source
        )
        timings["verify"] = time.perf_counter() - clock
        report.file_size_after = model_size_bytes(staged)
        report.gzip_size_after = gzip_size_bytes(staged)
        report.timings = {**timings, "total": time.perf_counter() - started}
        publish(staged, output_path, _stage_report(report, report_file, staging))
    return report


def _score_layers(
    matrices: list[np.ndarray],
    layers: list[Layer],
    stats: dict[str, LayerStats],
    scorer: ScoringMethod,
) -> list[np.ndarray]:
    """Scores [out, K] of every layer's weight matrix (higher = more important)."""
    return [
        scorer.score(matrix, stats[layer.weight_name])
        for layer, matrix in zip(layers, matrices, strict=True)
    ]


def _apply_masks(
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


def _choose_candidate(
    model_path: Path,
    proto: onnx.ModelProto,
    config: PruneConfig,
    scorer: ScoringMethod,
    stats: dict[str, LayerStats],
    matrices: list[np.ndarray],
    calibration: CalibrationSet,
    calib_mask: np.ndarray,
) -> tuple[ScoringMethod, str, dict[str, float]]:
    """``--group auto``: prune with each candidate (method variant x selection group) and keep
    the one whose outputs stay closest (mean cosine) to the original's on calibration samples.

    Statistics are reused; each candidate costs one pruned-model run over at most
    AUTO_SAMPLES samples (the original's outputs are computed once). Held-out samples are not
    used, so the reported fidelity stays an honest estimate. Ties go to the first candidate.
    """
    probe = np.zeros_like(calib_mask)
    probe[np.flatnonzero(calib_mask)[:AUTO_SAMPLES]] = True
    reference = ReferenceRun(
        model_path, calibration, probe, config.batch_size, "calibration", cache=True
    )
    variants = [scorer, *(get_method(name) for name in scorer.auto_variants)]
    layers_in_order = find_layers(GraphView(proto), config).layers
    cosines: dict[str, float] = {}
    best: tuple[float, ScoringMethod, str] | None = None
    with tempfile.TemporaryDirectory(prefix="onnxprune-auto-") as tmp:
        for variant in variants:
            scores = _score_layers(matrices, layers_in_order, stats, variant)
            for group in AUTO_GROUPS:
                candidate = onnx.ModelProto()
                candidate.CopyFrom(proto)
                view = GraphView(candidate)
                layers = find_layers(view, config).layers
                masks = select_masks(scores, config, group)
                _apply_masks(view, layers, matrices, masks, stats, variant)
                path = save_for_session(candidate, Path(tmp) / "candidate.onnx")
                fidelity = reference.compare(path)
                cosine = float(np.mean([o.cosine for o in fidelity.outputs]))
                cosines[f"{variant.name}/{group}"] = cosine
                if best is None or cosine > best[0]:
                    best = (cosine, variant, group)
    assert best is not None
    return best[1], best[2], cosines


def _split_samples(
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


def count_weights(model: onnx.ModelProto) -> tuple[int, int]:
    """(parameters, non-zeros) over float initializers and float Constant-node tensors."""
    params = nonzero = 0
    tensors = list(model.graph.initializer)
    tensors += [
        a.t
        for n in model.graph.node
        if n.op_type == "Constant"
        for a in n.attribute
        if a.name == "value"
    ]
    for tensor in tensors:
        if tensor.data_type not in _FLOAT_TYPES:
            continue
        array = onnx.numpy_helper.to_array(tensor)
        params += array.size
        nonzero += int(np.count_nonzero(array))
    return params, nonzero


_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
}


def _full_check(path: Path) -> None:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ModelError(f"the pruned model fails the ONNX full check: {err}") from err


def _copy_model(source: Path, destination: Path, report: Report, report_file: Path | None) -> None:
    with staging_dir(destination) as staging:
        staged = staging / destination.name
        try:
            for data in external_data_files(source):
                shutil.copyfile(data, staging / data.name)
            shutil.copyfile(source, staged)
        except OSError as err:
            raise OutputWriteError(f"cannot write {destination}: {err.strerror or err}") from err
        publish(staged, destination, _stage_report(report, report_file, staging))


def _stage_report(report: Report, report_file: Path | None, staging: Path) -> dict[Path, Path]:
    """Write the JSON report into the staging directory; published together with the model."""
    if report_file is None:
        return {}
    staged = staging / (".report-" + report_file.name)
    try:
        staged.write_text(report.to_json() + "\n")
    except OSError as err:
        raise OutputWriteError(f"cannot write report {report_file}: {err.strerror or err}") from err
    return {staged: report_file}


def _arguments(
    config: PruneConfig, calib: str | Path, eval_data: str | Path | None, output: Path
) -> dict[str, object]:
    return {
        "calib": str(calib),
        "eval": None if eval_data is None else str(eval_data),
        "output": str(output),
        "sparsity": config.sparsity,
        "method": config.method,
        "pattern": config.pattern,
        "group": config.group,
        "exclude": list(config.exclude),
        "num_samples": config.num_samples,
        "batch_size": config.batch_size,
        "min_row_weights": config.min_row_weights,
        "seed": config.seed,
    }


def _versions() -> dict[str, str]:
    return {
        "onnxprune": __version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
