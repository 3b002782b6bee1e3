"""The report's side of a run: the report as the model is loaded, what the chosen candidate
changed, and the recipe that replays the run."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime as ort

from .. import __version__
from ..calibrate.sources import DataSource
from ..config import PruneConfig
from ..io import gzip_size_bytes, model_size_bytes
from ..options import CONFIG, as_json, options_for
from ..pipeline import Pruner
from ..recipe import build_recipe, fingerprint, recipe_path
from ..report import Report
from .counts import count_weights, op_counts
from .request import Request
from .timing import Timer

if TYPE_CHECKING:  # the stages after this one's first step import it
    from .calibration import Calibrated
    from .planning import Plan
    from .writing import Written


def new_report(pruner: Pruner, request: Request) -> Report:
    """The report of a run whose model is loaded: what was asked, and the model before."""
    config, output_path = request.config, request.output_path
    params_before, nonzero_before = count_weights(pruner.proto, pruner.base_dir)
    group = config.group or pruner.scorer.default_group
    return Report(
        model=str(pruner.model_path),
        output=str(output_path),
        method=config.method,
        pattern=config.pattern,
        group=group if config.nm is None else f"N:M ({config.pattern})",
        target_sparsity=config.target_sparsity,
        seed=config.seed,
        arguments=_arguments(config, request.calib, request.eval_data, output_path),
        versions=_versions(),
        params_before=params_before,
        params_total=params_before,
        nonzero_before=nonzero_before,
        file_size_before=model_size_bytes(pruner.model_path),
        calibration_samples=pruner.calibration_samples,
        sample_mask=pruner.sample_mask,
        skipped=list(pruner.scan.skipped),
        gates=request.settings.gates.as_dict(),
    )


def describe_plan(report: Report, plan: Plan, calibrated: Calibrated) -> None:
    """The chosen candidate's layers, warnings, group and counts, in ``report``."""
    candidate, config = plan.candidate, plan.config
    report.layers = candidate.layers
    report.warnings += candidate.warnings
    report.arguments["allocation"] = candidate.allocation
    if candidate.allocation == "sensitivity":  # the estimated curves' layers kept dense
        report.unmeasured_layers = list(calibrated.pruner.unmeasured_layers)
        report.base_share_layers = list(calibrated.pruner.base_share_layers)
    if candidate.trials:
        report.group = f"auto -> {candidate.group}"
        report.variant = candidate.scorer.name
        report.group_trials = candidate.trials
    elif report.group == "auto":  # big-model mode: no trials
        report.group = f"auto -> {candidate.group}"
    if report.achieved_sparsity < config.target_sparsity - 0.005:
        target = "the search's level" if plan.searched else "the requested"
        report.warnings.append(
            f"achieved sparsity {report.achieved_sparsity:.4f} is below {target} "
            f"{config.target_sparsity:.4f}: the layers' rows are too short to give more under "
            f"--min-row-weights {config.min_row_weights}"
            + (
                ", or the --layer overrides leave too few weights to the others"
                if config.layer_overrides
                else ""
            )
        )
    base_dir = calibrated.pruner.base_dir
    report.params_total, report.nonzero_after = count_weights(candidate.model, base_dir)
    before, after = op_counts(calibrated.original.proto), op_counts(candidate.model)
    report.op_counts = {op: [before[op], after[op]] for op in sorted(before | after)}


def finish_report(
    request: Request,
    plan: Plan,
    calibrated: Calibrated,
    written: Written,
    report: Report,
    timer: Timer,
) -> dict[str, Any]:
    """The written file's sizes (and the input's, compressed meanwhile), the recipe
    (returned), the --plot (staged), the timings."""
    report.file_size_after = model_size_bytes(written.staged)
    report.gzip_size_before = calibrated.input_gzip_size()
    report.gzip_size_after = gzip_size_bytes(written.staged)
    recipe_data = _run_recipe(request, plan, calibrated.original, report)
    report.recipe = str(recipe_path(request.output_path))
    if request.arguments["plot"] is not None:
        from ..plot import draw

        draw(report, written.staging / ".plot.png")
    report.timings = timer.total()
    return recipe_data


def _run_recipe(request: Request, plan: Plan, original: Pruner, report: Report) -> dict[str, Any]:
    config, candidate, settings = plan.config, plan.candidate, request.settings
    recipe_data = build_recipe(
        config,
        candidate.scorer.name,
        # --structured alone prunes no weights (group "none"): the configured group.
        candidate.group if candidate.group != "none" else config.group,
        candidate.allocation,
        {layer.weight: layer.sparsity for layer in report.layers},
        fingerprint(request.calib),
        report.versions,
    )
    if request.calib_input is not None:
        recipe_data["calibration_input"] = request.calib_input
    recipe_data["held_out"] = original.hold_out
    recipe_data["deploy"] = settings.deploy.arguments()
    if settings.search and settings.gates.max_accuracy_drop is None:
        recipe_data["search_split"] = True
    if settings.replayed is not None:
        _compare_with_recipe(report, settings.replayed, recipe_data)
    return recipe_data


def nothing_pruned_recipe(request: Request, pruner: Pruner, report: Report) -> dict[str, Any]:
    """The recipe of a run that found nothing to prune (every run writes its recipe;
    replaying it copies the model again)."""
    config = request.config
    data = build_recipe(
        config,
        pruner.scorer.name,
        config.group or pruner.scorer.default_group,
        config.allocation_mode,
        {},
        fingerprint(request.calib),
        report.versions,
    )
    if request.calib_input is not None:
        data["calibration_input"] = request.calib_input
    data["held_out"] = pruner.hold_out
    return data


def _compare_with_recipe(report: Report, replayed: dict[str, Any], now: dict[str, Any]) -> None:
    if replayed.get("calibration_fingerprint") != now["calibration_fingerprint"]:
        report.warnings.append(
            "the calibration data differs from the recipe's (fingerprint mismatch): the replay "
            "is not exact"
        )
    if replayed.get("layers") != now["layers"]:
        report.warnings.append("per-layer sparsity differs from the recipe's")


def _arguments(
    config: PruneConfig,
    calib: DataSource,
    eval_data: DataSource | None,
    output: Path,
) -> dict[str, object]:
    def describe(source: DataSource | None) -> str | None:
        if source is None:
            return None
        return str(source) if isinstance(source, (str, Path)) else "<python source>"

    arguments: dict[str, object] = {
        "calib": describe(calib),
        "eval": describe(eval_data),
        "output": str(output),
    }
    for option in options_for(CONFIG, internal=False):
        arguments[option.name] = as_json(getattr(config, option.name))
    arguments["allocation"] = config.allocation_mode  # what runs (None: the method's own)
    return arguments


def _versions() -> dict[str, str]:
    return {
        "onnxprune": __version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
