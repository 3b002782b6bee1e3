"""Stage 4: the output files. The model (and with --quantize / --storage / --format, the
artifact made from it) is staged beside the output, then published with its recipe, --report
and --plot in one step, or not at all (a failed gate publishes only the report and plot)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from ..errors import ModelError, OutputWriteError
from ..io import (
    external_data_files,
    gzip_size_bytes,
    publish,
    staging_dir,
    write_model,
    write_model_streamed,
)
from ..recipe import recipe_path
from ..report import Report
from ..verify import Fidelity
from .calibration import Loaded
from .counts import op_counts
from .evaluation import Judge
from .planning import Plan
from .reporting import nothing_pruned_recipe
from .request import Request
from .timing import Timer


@dataclass(frozen=True)
class Written:
    """The staged output file, and with --quantize / --storage its fidelity (measured as the
    artifact was made)."""

    staged: Path
    fidelity: Fidelity | None

    @property
    def staging(self) -> Path:
        """The staging directory beside the output (``io.staging_dir``)."""
        return self.staged.parent


def write(
    request: Request, plan: Plan, judge: Judge, staging: Path, report: Report, timer: Timer
) -> Written:
    """Write the candidate into ``staging`` (checked by the ONNX full check), then turn it into
    the artifact when one is asked for."""
    pruner, deploy = judge.pruner, request.settings.deploy
    # --format ort: the ONNX stages first (onnxruntime reads a .ort name as a flatbuffer).
    name = request.output_path.name if deploy.output_format == "onnx" else "out.onnx"
    staged = staging / name
    with timer("save"):
        if pruner.base_dir is not None:  # big-model mode: tensor by tensor, external data
            write_model_streamed(plan.candidate.model, staged, pruner.base_dir)
        else:
            external = bool(external_data_files(request.model_path))
            if external and deploy.one_file:
                external = False
                report.warnings.append(
                    "the input's external data is written inside the output file "
                    "(--storage sparse and --format ort need one file)"
                )
            write_model(plan.candidate.model, staged, external_data=external)
        _full_check(staged)
    if not deploy.active:
        return Written(staged, None)
    with timer("artifact"):
        fidelity = _make_artifact(staged, judge, report)
    return Written(staged, fidelity)


def _make_artifact(staged: Path, judge: Judge, report: Report) -> Fidelity:
    """Replace ``staged`` by the artifact; its stages and op counts go into ``report``."""
    finisher = judge.finisher
    reference = judge.pruner.verification_reference()
    work = staged.parent / ".artifact"
    work.mkdir()
    artifact, report.artifact_stages, notes = finisher.stages(
        staged, reference, work, reference.compare(staged)
    )
    report.warnings += notes
    # The op table describes the written file (QDQ pairs, QLinear ops); with --format ort, the
    # ONNX graph it was converted from.
    assert finisher.last_onnx is not None
    written = onnx.load(str(finisher.last_onnx), load_external_data=False)
    after = op_counts(written)
    before = {op: counts[0] for op, counts in report.op_counts.items()}
    report.op_counts = {
        op: [before.get(op, 0), after[op]] for op in sorted(set(before) | set(after))
    }
    os.replace(artifact, staged)
    fidelity = report.artifact_stages[-1].fidelity
    assert fidelity is not None  # every stage is compared with the original
    return fidelity


def _full_check(path: Path) -> None:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ModelError(f"the pruned model fails the ONNX full check: {err}") from err


def publish_run(
    request: Request, written: Written, report: Report, recipe_data: dict[str, Any]
) -> Report:
    """Publish the staged model with its recipe and side files; after a failed gate (without
    --keep-on-fail) only the report and the plot, which explain the failure."""
    staging = written.staging
    if report.gate_failures and not request.arguments["keep_on_fail"]:
        report.status = "fidelity gate failed: no output written (--keep-on-fail keeps it)"
        report.recipe = None
        report.output_written = False
        _publish_side_files(staging, report, request.extra_outputs)
        return report
    report.output_written = True
    _publish_all(written.staged, request.output_path, report, request.extra_outputs, recipe_data)
    return report


def copy_unpruned(request: Request, loaded: Loaded, timer: Timer) -> Report:
    """No prunable layer: the output is a copy of the input (and the recipe replays that)."""
    pruner, report, output_path = loaded.pruner, loaded.report, request.output_path
    deploy = request.settings.deploy
    report.status = "no prunable layer found: output is a copy of the input"
    report.warnings.append(
        "nothing to prune: no prunable layer"
        + (" is left (see the skipped list)" if pruner.scan.skipped else " was found")
        + f"; {output_path} is a copy of the input"
    )
    report.recipe = str(recipe_path(output_path))
    recipe_data = nothing_pruned_recipe(request, pruner, report)
    if deploy.output_format == "ort":
        raise ModelError(
            f"nothing to prune in {request.model_path}: no .ort written (convert it with "
            "python -m onnxruntime.tools.convert_onnx_models_to_ort)"
        )
    if deploy.active:
        report.warnings.append("--quantize / --storage not applied to a copy")
    report.nonzero_after = report.nonzero_before
    report.file_size_after = report.file_size_before
    report.gzip_size_before = report.gzip_size_after = gzip_size_bytes(pruner.model_path)
    report.timings = timer.total()
    _copy_model(request, report, recipe_data)
    return report


def _copy_model(request: Request, report: Report, recipe_data: dict[str, Any]) -> None:
    """Publish a copy of the input model (and its external data) with the recipe and
    --report (no --plot: nothing was drawn)."""
    source, destination = request.model_path, request.output_path
    with staging_dir(destination) as staging:
        staged = staging / destination.name
        try:
            for data in external_data_files(source):
                shutil.copyfile(data, staging / data.name)
            shutil.copyfile(source, staged)
        except OSError as err:
            raise OutputWriteError(f"cannot write {destination}: {err.strerror or err}") from err
        report.output_written = True
        report.recipe = str(recipe_path(destination))
        extra = {k: v for k, v in request.extra_outputs.items() if k != "--plot"}
        _publish_all(staged, destination, report, extra, recipe_data)


def _publish_all(
    staged: Path,
    destination: Path,
    report: Report,
    extra: dict[str, Path],
    recipe_data: dict[str, Any],
) -> None:
    """Move the staged model, its recipe and the side files in ``extra`` into place in one
    step (``io.publish``); ``report`` is final (--report writes it)."""
    staging = staged.parent
    staged_recipe = staging / ".recipe.json"
    staged_recipe.write_text(json.dumps(recipe_data, indent=2, sort_keys=True) + "\n")
    files = {staged_recipe: recipe_path(destination), **_side_files(staging, report, extra)}
    publish(staged, destination, files)


def _side_files(staging: Path, report: Report, extra: dict[str, Path]) -> dict[Path, Path]:
    """Staged report / plot files and where they go."""
    files: dict[Path, Path] = {}
    if "--plot" in extra:
        files[staging / ".plot.png"] = extra["--plot"]
    if "--report" in extra:
        staged = staging / ".report.json"
        staged.write_text(report.to_json() + "\n")
        files[staged] = extra["--report"]
    return files


def _publish_side_files(staging: Path, report: Report, extra: dict[str, Path]) -> None:
    """After a failed gate: the report and the plot still explain the failure."""
    try:
        for staged, destination in _side_files(staging, report, extra).items():
            shutil.move(staged, destination)
    except OSError as err:
        raise OutputWriteError(f"cannot write {err.filename}: {err.strerror or err}") from err
