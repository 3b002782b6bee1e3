"""``prune()``: one model in, one pruned model out, with its report (and recipe).

load -> calibrate -> [search / sweep] -> score -> select -> apply -> save -> verify -> gates ->
publish. The heavy lifting lives in ``pipeline.Pruner``; this module decides what to build and
what to write.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import os
import platform
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from . import __version__
from .calibrate.sources import DataSource
from .calibrate.subgraphs import all_graphs
from .checks import Gates
from .config import SENSITIVITY_ALLOCATIONS, PruneConfig, parse_pattern
from .deploy import DeployConfig, Finisher, refuse_impossible
from .errors import ModelError, OutputWriteError, UsageError
from .inputs import DataOptions, read_image_spec, resolve_data, resolve_model
from .io import (
    BIG_MODEL_BYTES,
    check_model_suffix,
    check_output_path,
    default_output_path,
    external_data_files,
    gzip_size_bytes,
    is_big_model,
    model_size_bytes,
    publish,
    read_files,
    read_tensor,
    staging_dir,
    write_model,
    write_model_streamed,
)
from .metric import decision_score
from .pipeline import Candidate, Pruner, mean_cosine
from .progress import Progress
from .recipe import build_recipe, fingerprint, load_recipe, recipe_path
from .report import Report, SkippedReport
from .session import save_for_session
from .verify import Fidelity, ReferenceRun

log = logging.getLogger(__name__)

# --sparsity auto: the resolution of the search, and the highest sparsity it tries.
SEARCH_STEP = 0.01
SEARCH_MAX = 0.99


def prune(
    model: str | Path | onnx.ModelProto,
    calib: DataSource | None,
    *,
    sparsity: float | str | None = None,
    output: str | Path | None = None,
    method: str = "contrib",
    pattern: str = "unstructured",
    group: str | None = None,
    exclude: Sequence[str] = (),
    num_samples: int | None = None,
    batch_size: int = 32,
    min_row_weights: int = 8,
    update: bool | None = None,
    sample_mask: str | None = None,
    structured: float = 0.0,
    structured_score: str = "variance",
    structured_multiple: int = 1,
    layer_overrides: Sequence[str] = (),
    sequential: bool = False,
    stages: int = 8,
    update_target: str = "pruned",
    allocation: str | None = None,
    metric: str = "standardized",
    metric_outputs: Sequence[str] = (),
    stat_correction: bool | None = None,
    refit_steps: int = 0,
    reselect_mask: bool = False,
    refit_final: int = 0,
    eval_data: DataSource | None = None,
    report_path: str | Path | None = None,
    seed: int = 0,
    progress: bool = False,
    min_cosine: float | None = None,
    min_top1: float | None = None,
    max_abs_error: float | None = None,
    max_accuracy_drop: float | None = None,
    min_score: float | None = None,
    keep_on_fail: bool = False,
    sweep: Sequence[float] = (),
    plot: str | Path | None = None,
    recipe: str | Path | None = None,
    config: PruneConfig | None = None,
    model_file: str | None = None,
    tokenizer: str | Path | None = None,
    max_length: int = 128,
    preprocess: str | dict[str, Any] | None = None,
    quantize: str = "none",
    quant_format: str | None = None,
    per_channel: bool = True,
    quant_calibration: str | None = None,
    storage: str = "dense",
    output_format: str = "onnx",
    quant_range: str | None = None,
) -> Report:
    """Prune ``model`` with statistics from ``calib`` and write the result to ``output``.

    Each keyword is the CLI option of the same name (``onnxprune --help`` groups them).

    Args:
        model: an ``.onnx`` path; a directory holding one (an Optimum export folder; several:
            name one with ``model_file``); or an ``onnx.ModelProto`` (then ``output`` is
            required).
        calib: calibration data: a path (``.npz``, a directory of ``.npz`` / ``<input>.npy``,
            ``test_data_set_*`` directories, ``sentences.txt`` / ``.jsonl`` with a tokenizer,
            a folder of images with ``preprocess``); a zero-argument callable returning an
            iterator of feed dicts (streamed once per pass); an iterable of feed dicts; or an
            object with ``get_next()`` such as onnxruntime's ``CalibrationDataReader``. May be
            None only with ``method="magnitude"`` and ``eval_data``.
        sparsity: share of prunable weights to remove in [0, 1), or ``"auto"`` with a gate
            (searched on calibration samples, reported on the held-out or ``eval_data`` ones).
        output: the pruned model (default ``<model>.pruned.onnx``); its recipe is written to
            ``<output>.recipe.json``.
        eval_data: evaluation data (same forms); default: a held-out part of ``calib``.
        min_cosine, min_top1, max_abs_error, max_accuracy_drop: fidelity gates.
        recipe: replay a saved recipe (its settings replace the pruning options; a warning
            names every option given that it overrides).
        tokenizer, max_length: text calibration: a ``tokenizer.json`` (default: beside the
            model) and the length sequences are truncated to.
        quantize, quant_format, per_channel, quant_calibration, quant_range, storage,
            output_format: turn
            the pruned model into the written artifact (``onnxprune.deploy``:
            ``quantize="int8"`` or ``"int8-dynamic"``, ``storage="sparse"``,
            ``output_format="ort"``); the fidelity check, the gates and the search then judge
            that file. A recipe records them and its replay writes the same artifact.
        preprocess: image calibration: a JSON spec (dict, JSON text or a file path), e.g.
            ``{"size": [224, 224], "resize": "shorter-side-crop", "mean": [...], "std": [...],
            "channels": "RGB", "layout": "NCHW", "dtype": "float32"}``.

    Returns:
        The :class:`Report` (``exit_code`` is 5 when a gate failed and no output was kept).

    Raises:
        onnxprune.OnnxPruneError: a subclass, with a one-line message, for bad input.
    """
    arguments = dict(locals())
    if isinstance(model, onnx.ModelProto):
        if output is None:
            raise UsageError("prune(ModelProto) needs output= (there is no input path to name it)")
        with tempfile.TemporaryDirectory(prefix="onnxprune-") as proto_dir:
            # onnxruntime and the checker read models from files.
            arguments["model"] = save_for_session(model, Path(proto_dir) / "model.onnx")
            report = prune(**arguments)
            report.model = "<onnx.ModelProto>"
            return report
    started = time.perf_counter()
    if calib is None:
        if method != "magnitude" or eval_data is None:
            raise UsageError(
                "--calib is required (only --method magnitude runs without it, and then "
                "--eval measures fidelity)"
            )
        calib = eval_data  # magnitude reads no statistics; --eval is the check
    # A config or recipe states --update outright; only a call that leaves it out gets the
    # method's default (which may give way, see _costly_defaults_give_way).
    update_asked = update is not None or recipe is not None or config is not None
    gates = Gates(min_cosine, min_top1, max_abs_error, max_accuracy_drop, min_score)
    deploy = DeployConfig(
        quantize, quant_format, per_channel, quant_calibration, storage, quant_range, output_format
    )
    search = sparsity == "auto"
    replayed: dict[str, Any] | None = None
    if recipe is not None:
        config, replayed = load_recipe(Path(recipe))
        if replayed.get("deploy") is not None:  # older recipes: the options given now
            deploy = DeployConfig.from_record(replayed["deploy"])  # checked by load_recipe
    elif config is None:
        config = _config_from_arguments(
            sparsity, method, pattern, group, exclude, num_samples, batch_size, seed,
            min_row_weights, update, sample_mask, search, structured, structured_score,
            layer_overrides, sequential, stages, update_target, allocation, metric,
            metric_outputs, structured_multiple, stat_correction, refit_steps, reselect_mask,
            refit_final,
        )  # fmt: skip
    if search and not gates.active:
        raise UsageError(
            "--sparsity auto needs a fidelity gate (e.g. --min-score 0.98 or --min-cosine 0.99)"
        )
    if search and config.nm is not None:
        raise UsageError("--sparsity auto cannot be combined with an N:M --pattern")
    for point in sweep:
        if not 0.0 <= point < 1.0:
            raise UsageError(f"--sweep values must be in [0, 1), got {point}")
    if plot is not None:
        from .plot import require_matplotlib

        require_matplotlib()

    given_path = Path(model)
    model_path = resolve_model(given_path, model_file)
    recipe_notes = [
        f"--{name.replace('_', '-')} {arguments[name]} is ignored: --recipe {recipe} sets the "
        "pruning options"
        for name in _RECIPE_SET
        if recipe is not None and arguments[name] != _DEFAULTS[name]
    ] + [
        f"--{name.replace('_', '-')} {arguments[name]} is ignored: --recipe {recipe} sets the "
        "artifact options"
        for name in deploy.arguments()
        if replayed is not None
        and replayed.get("deploy") is not None
        and arguments[name] != _DEFAULTS[name]
    ]
    if isinstance(preprocess, str):
        preprocess = read_image_spec(preprocess)
    if preprocess is None and replayed is not None:
        preprocess = (replayed.get("calibration_input") or {}).get("preprocess")
    options = DataOptions(
        Path(tokenizer) if tokenizer is not None else None,
        max_length,
        preprocess,
        given_path if given_path.is_dir() else None,
    )
    calib_source, calib_input = resolve_data(calib, model_path, options)
    assert calib_source is not None
    eval_source, _ = resolve_data(eval_data, model_path, options)
    output_path = Path(output) if output is not None else default_output_path(model_path)
    if output is None and deploy.output_format == "ort":
        output_path = output_path.with_suffix(".ort")
    extra_outputs = _check_paths(
        model_path, output_path, calib, eval_data, report_path, plot, recipe
    )
    config, default_notes = _costly_defaults_give_way(config, model_path, update_asked)

    timings: dict[str, float] = {}
    clock = time.perf_counter()
    display = Progress(progress)  # one progress line for the whole run
    # The held-out split a recipe was made with (older recipes: as --eval decides now).
    hold_out = replayed.get("held_out") if replayed is not None else None
    pruner = Pruner(model_path, calib_source, config, eval_source, display, hold_out=hold_out)
    stack = contextlib.ExitStack()
    stack.callback(pruner.close)  # the big-model work directory, if any
    try:
        _refuse_non_finite_weights(pruner)
        timings["load"] = time.perf_counter() - clock
        report = _new_report(pruner, config, output_path, calib, eval_data, gates)
        report.warnings += recipe_notes + default_notes + pruner.branches.notes
        report.arguments.update(deploy.arguments())
        if gates.max_accuracy_drop is not None and not (
            pruner.evaluation is not None and pruner.evaluation.has_labels
        ):
            raise UsageError("--max-accuracy-drop needs --eval data with a 'labels' array")

        # Warnings go into the report; the CLI prints them all on stderr.
        report.warnings += unmatched_patterns(config, pruner.proto)
        if not pruner.layers:
            report.status = "no prunable layer found: output is a copy of the input"
            warning = (
                "nothing to prune: no prunable layer"
                + (" is left (see the skipped list)" if pruner.scan.skipped else " was found")
                + f"; {output_path} is a copy of the input"
            )
            report.warnings.append(warning)
            report.recipe = str(recipe_path(output_path))
            recipe_data = _nothing_pruned_recipe(config, pruner, calib, report, calib_input)
            if deploy.output_format == "ort":
                raise ModelError(
                    f"nothing to prune in {model_path}: no .ort written (convert it with "
                    "python -m onnxruntime.tools.convert_onnx_models_to_ort)"
                )
            if deploy.active:
                report.warnings.append("--quantize / --storage not applied to a copy")
            report.nonzero_after = report.nonzero_before
            report.file_size_after = report.file_size_before
            report.gzip_size_after = report.gzip_size_before
            report.timings = {**timings, "total": time.perf_counter() - started}
            _copy_model(model_path, output_path, report, extra_outputs, recipe_data)
            return report

        original = pruner
        candidate: Candidate | None = None
        fidelity: Fidelity | None = None
        if pruner.base_dir is not None:
            _refuse_in_big_model_mode(config)
        refuse_impossible(
            deploy,
            pruner.proto,
            bool(external_data_files(model_path)),
            pruner.base_dir is not None,
            output_path,
        )
        if config.structured:
            clock = time.perf_counter()
            shrunk = pruner.shrink()
            timings["shrink"] = time.perf_counter() - clock
            report.structured = shrunk.groups
            report.warnings += shrunk.warnings
            if config.target_sparsity > 0 or search or sweep:
                # Weight pruning of what is left: a second pass over the shrunk model, checked
                # against the original.
                scratch = Path(
                    stack.enter_context(tempfile.TemporaryDirectory(prefix="onnxprune-"))
                )
                shrunk_path = save_for_session(shrunk.model, scratch / "shrunk.onnx")
                pruner = Pruner(
                    shrunk_path,
                    calib_source,
                    config,
                    eval_source,
                    display,
                    reference_path=model_path,
                    hold_out=hold_out,
                )
                stack.callback(pruner.close)
            else:
                candidate = Candidate(shrunk.model, 0.0, pruner.scorer, "none", [], [])
                report.group = "none (no weight pruning)"

        if candidate is None:
            clock = time.perf_counter()
            pruner.statistics()
            timings["calibrate"] = time.perf_counter() - clock

        finisher = Finisher(deploy, pruner.calibration, pruner.calib_mask, config.batch_size)

        def judge(built: Candidate, reference: ReferenceRun | None = None) -> Fidelity:
            # What would be written (with --quantize, the quantized candidate), on
            # ``reference``'s samples (default: the reported ones).
            if deploy.quantize == "none":
                return pruner.compare(built, reference)
            return finisher.artifact_fidelity(
                built.model, reference or pruner.verification_reference()
            )

        clock = time.perf_counter()
        if replayed is not None and replayed.get("search_split"):
            pruner.search_reference()  # the reported fidelity uses the samples the run did
        if search:
            candidate, fidelity = _search(pruner, gates, report, judge)
            config = dataclasses.replace(config, sparsity=candidate.sparsity)
            report.target_sparsity = candidate.sparsity
        for point in sweep:
            swept = pruner.build(point)
            report.curve.append(_curve_point(point, judge(swept), gates))
        if candidate is None:
            candidate = pruner.build()
        timings["prune"] = time.perf_counter() - clock
        # Within "prune": judging candidates in onnxruntime, and the OBS updates / bias changes.
        for phase in ("judge", "update"):
            timings[f"prune.{phase}"] = original.phase_seconds[phase] + (
                pruner.phase_seconds[phase] if pruner is not original else 0.0
            )
        report.calibration_passes = original.calibration_passes + (
            pruner.calibration_passes if pruner is not original else 0
        )
        if config.sequential:
            report.stages = len(pruner.stages())
        report.sensitivity_builds = pruner.sensitivity_builds
        _describe_candidate(report, candidate, config, original.proto, pruner.base_dir)

        with staging_dir(output_path) as staging:
            # --format ort: the ONNX stages first (onnxruntime reads a .ort name as a flatbuffer).
            staged = staging / (output_path.name if deploy.output_format == "onnx" else "out.onnx")
            clock = time.perf_counter()
            if pruner.base_dir is not None:  # big-model mode: tensor by tensor, external data
                write_model_streamed(candidate.model, staged, pruner.base_dir)
            else:
                write_model(
                    candidate.model, staged, external_data=bool(external_data_files(model_path))
                )
            _full_check(staged)
            timings["save"] = time.perf_counter() - clock
            clock = time.perf_counter()
            if deploy.active:
                reference = pruner.verification_reference()
                work = staging / ".artifact"
                work.mkdir()
                artifact, report.artifact_stages, notes = finisher.stages(
                    staged, reference, work, reference.compare(staged)
                )
                report.warnings += notes
                # The op table describes the written file (QDQ pairs, QLinear ops); with
                # --format ort, the ONNX graph it was converted from.
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
                timings["artifact"] = time.perf_counter() - clock
                clock = time.perf_counter()
            elif fidelity is None:
                fidelity = pruner.verification_reference().compare(staged)
            report.fidelity = fidelity
            report.gate_failures = gates.check(fidelity)
            report.warnings += [
                f"output {out.name}: the pruned model produced {out.nonfinite} NaN/inf values "
                f"on the {fidelity.source} samples"
                for out in fidelity.outputs
                if out.nonfinite
            ]
            if sweep and all(
                p["sparsity"] != round(config.target_sparsity, 6) for p in report.curve
            ):
                report.curve.append(_curve_point(config.target_sparsity, fidelity, gates))
            timings["verify"] = time.perf_counter() - clock
            report.file_size_after = model_size_bytes(staged)
            report.gzip_size_after = gzip_size_bytes(staged)
            recipe_file = recipe_path(output_path)
            recipe_data = build_recipe(
                config,
                candidate.scorer.name,
                # --structured alone prunes no weights (group "none"): the configured group.
                candidate.group if candidate.group != "none" else config.group,
                candidate.allocation,
                {layer.weight: layer.sparsity for layer in report.layers},
                fingerprint(calib),
                report.versions,
            )
            if calib_input is not None:
                recipe_data["calibration_input"] = calib_input
            recipe_data["held_out"] = original.hold_out
            recipe_data["deploy"] = deploy.arguments()
            if search and gates.max_accuracy_drop is None:
                recipe_data["search_split"] = True
            if replayed is not None:
                _compare_with_recipe(report, replayed, recipe_data)
            report.recipe = str(recipe_file)
            if plot is not None:
                from .plot import draw

                draw(report, staging / ".plot.png")
            report.timings = {**timings, "total": time.perf_counter() - started}
            if report.gate_failures and not keep_on_fail:
                report.status = "fidelity gate failed: no output written (--keep-on-fail keeps it)"
                report.recipe = None
                report.output_written = False
                _publish_side_files(staging, report, extra_outputs)
                return report
            report.output_written = True
            staged_recipe = staging / ".recipe.json"
            staged_recipe.write_text(json.dumps(recipe_data, indent=2, sort_keys=True) + "\n")
            extras = {staged_recipe: recipe_file, **_side_files(staging, report, extra_outputs)}
            publish(staged, output_path, extras)
        return report
    finally:
        stack.close()


def _refuse_non_finite_weights(pruner: Pruner) -> None:
    """A NaN/inf in a weight to be pruned poisons its statistics and scores and would be carried
    into the output: refuse the model up front (one layer in memory at a time)."""
    for layer in pruner.layers:
        weight = layer.weight
        if np.issubdtype(weight.dtype, np.floating):
            bad = weight.size - int(np.count_nonzero(np.isfinite(weight)))
            if bad:
                raise ModelError(
                    f"{pruner.model_path}: weight {layer.weight_name!r} of layer {layer.name} "
                    f"holds {bad} NaN/inf value(s); fix the model before pruning it"
                )


# prune() keywords a --recipe replaces (each given with another value gets a warning).
_RECIPE_SET = (
    "sparsity", "method", "pattern", "group", "exclude", "num_samples", "batch_size",
    "min_row_weights", "update", "sample_mask", "structured", "structured_score",
    "structured_multiple",
    "layer_overrides", "sequential", "stages", "update_target", "allocation", "seed",
    "stat_correction", "refit_steps", "reselect_mask", "refit_final",
)  # fmt: skip
_DEFAULTS = {
    name: (() if param.default == () else param.default)
    for name, param in inspect.signature(prune).parameters.items()
}


def _costly_defaults_give_way(
    config: PruneConfig, model_path: Path, update_asked: bool
) -> tuple[PruneConfig, list[str]]:
    """Where the method's defaults give way (a note in the report each): on a model over
    1.5 GB, sensitivity allocation (its candidates are judged in memory) and the OBS update (a
    K x K correlation per layer) are left out. Asked for explicitly, both run (or are refused)
    as asked. Every other option keeps the default allocation: an option that only observes
    (--sweep) or searches (--sparsity auto) never changes how a sparsity is allocated."""
    if not (model_path.is_file() and is_big_model(model_path)):
        return config, []
    big_reason = f"a model over {BIG_MODEL_BYTES / 1e9:.1f} GB"
    notes = []
    if config.allocation is None and config.allocation_mode in SENSITIVITY_ALLOCATIONS:
        notes.append(
            f"allocation: group, not the default sensitivity ({big_reason}; "
            "--allocation sensitivity asks for it)"
        )
        config = dataclasses.replace(config, allocation="group")
    if config.update and not update_asked:
        notes.append(f"no --update, not the default ({big_reason}; --update asks for it)")
        config = dataclasses.replace(config, update=False)
    return config, notes


def _refuse_in_big_model_mode(config: PruneConfig) -> None:
    """Options that need the whole model in memory, refused in one line."""
    unsupported = [
        option
        for option, used in (
            ("--structured", bool(config.structured)),
            ("--sequential", config.sequential),
            (f"--allocation {config.allocation}", config.allocation in SENSITIVITY_ALLOCATIONS),
            ("--layer sparsity overrides", any(o.sparsity is not None for o in config.overrides)),
        )
        if used
    ]
    if unsupported:
        verb = "is" if len(unsupported) == 1 else "are"
        raise UsageError(
            f"{' and '.join(unsupported)} {verb} not supported on models over "
            f"{BIG_MODEL_BYTES / 1e9:.1f} GB yet (weight pruning, --exclude and --layer "
            "REGEX=skip are)"
        )


def _config_from_arguments(
    sparsity: float | str | None,
    method: str,
    pattern: str,
    group: str | None,
    exclude: Sequence[str],
    num_samples: int | None,
    batch_size: int,
    seed: int,
    min_row_weights: int,
    update: bool | None,
    sample_mask: str | None,
    search: bool,
    structured: float,
    structured_score: str,
    layer_overrides: Sequence[str],
    sequential: bool,
    stages: int,
    update_target: str,
    allocation: str | None,
    metric: str = "standardized",
    metric_outputs: Sequence[str] = (),
    structured_multiple: int = 1,
    stat_correction: bool | None = None,
    refit_steps: int = 0,
    reselect_mask: bool = False,
    refit_final: int = 0,
) -> PruneConfig:
    nm = parse_pattern(pattern)
    if structured_multiple != _DEFAULTS["structured_multiple"] and not structured:
        raise UsageError("--structured-multiple needs --structured (it rounds the units kept)")
    if search:
        sparsity = 0.5  # a placeholder; the search sets the real value
    if sparsity is None and nm is not None:
        sparsity = nm.sparsity
    if sparsity is None and structured:
        sparsity = 0.0  # --structured alone: shrink only
    if sparsity is None:
        raise UsageError(
            "--sparsity is required (a number, or auto with a gate), an N:M --pattern, or "
            "--structured"
        )
    if isinstance(sparsity, str):
        try:
            sparsity = float(sparsity)
        except ValueError as err:
            raise UsageError(f"--sparsity must be a number or 'auto', got {sparsity!r}") from err
    if 1.0 < sparsity < 100.0:  # a percentage
        raise UsageError(
            f"--sparsity must be in [0, 1), got {sparsity}: did you mean {sparsity / 100:g}?"
        )
    return PruneConfig(
        sparsity=sparsity,
        method=method,
        pattern=pattern,
        group=group,
        exclude=tuple(exclude),
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
        min_row_weights=min_row_weights,
        update=update,
        sample_mask=sample_mask,
        structured=structured,
        structured_score=structured_score,
        structured_multiple=structured_multiple,
        layer_overrides=tuple(layer_overrides),
        sequential=sequential,
        stages=stages,
        update_target=update_target,
        allocation=allocation,
        metric=metric,
        metric_outputs=tuple(metric_outputs),
        stat_correction=stat_correction,
        refit_steps=refit_steps,
        reselect_mask=reselect_mask,
        refit_final=refit_final,
    )


def _check_paths(
    model_path: Path,
    output_path: Path,
    calib: DataSource,
    eval_data: DataSource | None,
    report_path: str | Path | None,
    plot: str | Path | None,
    recipe: str | Path | None = None,
) -> dict[str, Path]:
    """Refuse outputs that would overwrite a file the run reads or each other; returns the side
    outputs.

    Read: the model, every external-data file it refers to, every file of the calibration and
    evaluation data (below a directory too), the --recipe file. Written: the model, its
    external data, the recipe, --report and --plot.
    """
    inputs: dict[str, Path] = {"the input model": model_path}
    data_files = external_data_files(model_path)
    inputs.update({f"the input model's external data {f.name}": f for f in data_files})
    for name, source in (("the calibration data", calib), ("the evaluation data", eval_data)):
        if isinstance(source, (str, Path)):
            inputs[name] = Path(source)
    if recipe is not None:
        inputs["the --recipe file"] = Path(recipe)
    protected = read_files(inputs)
    check_model_suffix(output_path)
    check_output_path(output_path, protected)
    protected["the output model"] = output_path
    if data_files or (model_path.is_file() and is_big_model(model_path)):
        data = output_path.with_name(output_path.name + ".data")
        check_output_path(data, protected, what="the output's external data")
        protected["the output's external data"] = data
    check_output_path(recipe_path(output_path), protected, what="the output's recipe")
    protected["the recipe"] = recipe_path(output_path)
    extra: dict[str, Path] = {}
    for option, value in (("--report", report_path), ("--plot", plot)):
        if value is not None:
            check_output_path(Path(value), protected, what=f"{option} path")
            protected[f"the {option} file"] = Path(value)
            extra[option] = Path(value)
    return extra


def _new_report(
    pruner: Pruner,
    config: PruneConfig,
    output_path: Path,
    calib: DataSource,
    eval_data: DataSource | None,
    gates: Gates,
) -> Report:
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
        arguments=_arguments(config, calib, eval_data, output_path),
        versions=_versions(),
        params_before=params_before,
        params_total=params_before,
        nonzero_before=nonzero_before,
        file_size_before=model_size_bytes(pruner.model_path),
        gzip_size_before=gzip_size_bytes(pruner.model_path),
        calibration_samples=pruner.calibration_samples,
        sample_mask=pruner.sample_mask,
        skipped=[SkippedReport(s.name, s.op_type, s.reason) for s in pruner.scan.skipped],
        gates=gates.as_dict(),
    )


def _describe_candidate(
    report: Report,
    candidate: Candidate,
    config: PruneConfig,
    original: onnx.ModelProto,
    base_dir: Path | None,
) -> None:
    report.layers = candidate.layers
    report.warnings += candidate.warnings
    report.arguments["allocation"] = candidate.allocation
    if candidate.trials:
        report.group = f"auto -> {candidate.group}"
        report.variant = candidate.scorer.name
        report.group_trials = candidate.trials
    elif report.group == "auto":  # big-model mode: no trials
        report.group = f"auto -> {candidate.group}"
    if report.achieved_sparsity < config.target_sparsity - 0.005:
        report.warnings.append(
            f"achieved sparsity {report.achieved_sparsity:.4f} is below the requested "
            f"{config.target_sparsity:.4f}: the layers' rows are too short to give more under "
            f"--min-row-weights {config.min_row_weights}"
            + (
                ", or the --layer overrides leave too few weights to the others"
                if config.layer_overrides
                else ""
            )
        )
    report.params_total, report.nonzero_after = count_weights(candidate.model, base_dir)
    before, after = op_counts(original), op_counts(candidate.model)
    report.op_counts = {op: [before[op], after[op]] for op in sorted(before | after)}


def _search(
    pruner: Pruner,
    gates: Gates,
    report: Report,
    judge: Callable[[Candidate, ReferenceRun | None], Fidelity],
) -> tuple[Candidate, Fidelity | None]:
    """Bisection for the highest sparsity (to SEARCH_STEP) whose model passes every gate.

    Sparsity 0 is the original model and passes by definition; every measured point goes into
    the report's curve. Assumes fidelity falls as sparsity rises (it may not be strictly so:
    the curve shows what was measured). ``judge`` measures a candidate as it would be written
    (quantized, with --quantize).

    The search measures on calibration-side samples (half of the held-out ones, see
    ``Pruner.search_reference``; with --eval, calibration samples), so that the fidelity
    reported for the chosen model (the other held-out half, or --eval) is not the one it was
    selected on; only an accuracy gate, which needs --eval labels, searches on --eval (and the
    report says so). Returns the chosen candidate and, when it was measured on the reported
    samples, its fidelity.
    """
    reference = None
    if gates.max_accuracy_drop is None:
        reference = pruner.search_reference()
    else:
        report.warnings.append(
            "--max-accuracy-drop: the search measured on the --eval samples (the only ones with "
            "labels), so the reported fidelity is the one the sparsity was chosen on"
        )

    def measure(sparsity: float) -> tuple[Candidate, Fidelity, bool]:
        candidate = pruner.build(sparsity)
        fidelity = judge(candidate, reference)
        point = _curve_point(sparsity, fidelity, gates)
        report.curve.append(point)
        return candidate, fidelity, bool(point["passes"])

    top, top_fidelity, top_passes = measure(SEARCH_MAX)
    if top_passes:
        return top, top_fidelity if reference is None else None
    low_steps, high_steps = 0, round(SEARCH_MAX / SEARCH_STEP)
    best: tuple[Candidate, Fidelity] | None = None
    while high_steps - low_steps > 1:
        mid = (low_steps + high_steps) // 2
        candidate, fidelity, passes = measure(mid * SEARCH_STEP)
        if passes:
            low_steps, best = mid, (candidate, fidelity)
        else:
            high_steps = mid
    if best is None:
        report.warnings.append(
            f"no sparsity of at least {SEARCH_STEP} passes the gates; the output is unpruned"
        )
        candidate = pruner.build(0.0)
        return candidate, judge(candidate, None)
    return best[0], best[1] if reference is None else None


def _curve_point(sparsity: float, fidelity: Fidelity, gates: Gates) -> dict[str, Any]:
    top1 = [o.top1_agreement for o in fidelity.outputs if o.top1_agreement is not None]
    return {
        "sparsity": round(sparsity, 6),
        "cosine": mean_cosine(fidelity),
        "score": decision_score(fidelity),
        "top1": float(np.mean(top1)) if top1 else None,
        "accuracy": fidelity.accuracy_pruned,
        "passes": (not gates.check(fidelity)) if gates.active else None,
        "samples": f"{fidelity.samples} {fidelity.source}",
    }


def _compare_with_recipe(report: Report, replayed: dict[str, Any], now: dict[str, Any]) -> None:
    if replayed.get("calibration_fingerprint") != now["calibration_fingerprint"]:
        report.warnings.append(
            "the calibration data differs from the recipe's (fingerprint mismatch): the replay "
            "is not exact"
        )
    if replayed.get("layers") != now["layers"]:
        report.warnings.append("per-layer sparsity differs from the recipe's")


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


def op_counts(model: onnx.ModelProto) -> Counter[str]:
    """Nodes per op type, in the main graph and every subgraph (If branches are pruned too)."""
    return Counter(n.op_type for graph in all_graphs(model.graph) for n in graph.node)


def count_weights(model: onnx.ModelProto, base_dir: Path | None = None) -> tuple[int, int]:
    """(parameters, non-zeros) over float initializers and float Constant-node tensors; one
    tensor in memory at a time (external data is read from ``base_dir``)."""
    params = nonzero = 0
    tensors = []
    for graph in all_graphs(model.graph):  # If/Loop/Scan bodies hold weights too
        tensors += list(graph.initializer)
        tensors += [
            a.t
            for n in graph.node
            if n.op_type == "Constant"
            for a in n.attribute
            if a.name == "value"
        ]
    for tensor in tensors:
        if tensor.data_type not in _FLOAT_TYPES:
            continue
        array = read_tensor(tensor, base_dir)
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


def _nothing_pruned_recipe(
    config: PruneConfig,
    pruner: Pruner,
    calib: DataSource,
    report: Report,
    calib_input: dict[str, Any] | None,
) -> dict[str, Any]:
    """The recipe of a run that found nothing to prune (every run writes its recipe;
    replaying it copies the model again)."""
    data = build_recipe(
        config,
        pruner.scorer.name,
        config.group or pruner.scorer.default_group,
        config.allocation_mode,
        {},
        fingerprint(calib),
        report.versions,
    )
    if calib_input is not None:
        data["calibration_input"] = calib_input
    data["held_out"] = pruner.hold_out
    return data


def unmatched_patterns(config: PruneConfig, model: onnx.ModelProto) -> list[str]:
    """A warning for each --exclude / --layer regex that matches no node, initializer or
    Constant output name of ``model`` (a typo would otherwise change nothing, silently)."""
    names: list[str] = []
    for graph in all_graphs(model.graph):  # names inside If branches may be pruned too
        names += [n.name or f"{n.op_type}:{n.output[0]}" for n in graph.node if n.output]
        names += [t.name for t in graph.initializer]
        names += [o for n in graph.node if n.op_type == "Constant" for o in n.output]
    warnings = []
    for option, regex, pattern in [("--exclude", p, p) for p in config.exclude] + [
        ("--layer", o.text, o.regex) for o in config.overrides
    ]:
        if not any(re.search(pattern, name) for name in names):
            warnings.append(
                f"{option} {regex!r} matches no node or weight name: it changes nothing"
            )
    return warnings


def _copy_model(
    source: Path,
    destination: Path,
    report: Report,
    extra: dict[str, Path],
    recipe_data: dict[str, Any],
) -> None:
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
        staged_recipe = staging / ".recipe.json"
        staged_recipe.write_text(json.dumps(recipe_data, indent=2, sort_keys=True) + "\n")
        extra = {k: v for k, v in extra.items() if k != "--plot"}
        files = {staged_recipe: recipe_path(destination), **_side_files(staging, report, extra)}
        publish(staged, destination, files)


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

    return {
        "calib": describe(calib),
        "eval": describe(eval_data),
        "output": str(output),
        "sparsity": config.sparsity,
        "method": config.method,
        "pattern": config.pattern,
        "group": config.group,
        "exclude": list(config.exclude),
        "num_samples": config.num_samples,
        "batch_size": config.batch_size,
        "min_row_weights": config.min_row_weights,
        "update": config.update,
        "sample_mask": config.sample_mask,
        "structured": config.structured,
        "structured_score": config.structured_score,
        "structured_multiple": config.structured_multiple,
        "layer_overrides": list(config.layer_overrides),
        "sequential": config.sequential,
        "stages": config.stages,
        "update_target": config.update_target,
        "allocation": config.allocation_mode,
        "metric": config.metric,
        "metric_outputs": list(config.metric_outputs),
        "stat_correction": config.stat_correction,
        "refit_steps": config.refit_steps,
        "reselect_mask": config.reselect_mask,
        "refit_final": config.refit_final,
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
