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
from collections.abc import Callable
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
from .options import (
    CONFIG,
    DEPLOY,
    GATES,
    as_json,
    default,
    only,
    options_for,
    resolve,
    signature_parameters,
)
from .pipeline import Candidate, Pruner, mean_cosine
from .progress import Progress
from .recipe import build_recipe, fingerprint, load_recipe, recipe_path
from .report import Report
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
    config: PruneConfig | None = None,
    progress: bool = False,
    **options: Any,
) -> Report:
    """Prune ``model`` with statistics from ``calib`` and write the result to ``output``.

    Each keyword in ``options`` is the CLI option of the same name (``onnxprune --help``
    groups them; ``onnxprune.options`` declares them, with their defaults, and
    ``inspect.signature(prune)`` lists them). An unknown keyword or a value of the wrong kind
    is a :class:`onnxprune.UsageError`.

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
            output_format, embedding_bits, embedding_sparsity: turn
            the pruned model into the written artifact (``onnxprune.deploy``:
            ``quantize="int8"`` or ``"int8-dynamic"``, ``storage="sparse"``,
            ``output_format="ort"``); the fidelity check, the gates and the search then judge
            that file. A recipe records them and its replay writes the same artifact.
        preprocess: image calibration: a JSON spec (dict, JSON text or a file path), e.g.
            ``{"size": [224, 224], "resize": "shorter-side-crop", "mean": [...], "std": [...],
            "channels": "RGB", "layout": "NCHW", "dtype": "float32"}``.

        config: a ready :class:`PruneConfig` (its settings replace the pruning options).
        progress: show a progress bar on stderr.

    Returns:
        The :class:`Report` (``exit_code`` is 5 when a gate failed and no output was kept).

    Raises:
        onnxprune.OnnxPruneError: a subclass, with a one-line message, for bad input.
    """
    if isinstance(model, onnx.ModelProto):
        if options.get("output") is None:
            raise UsageError("prune(ModelProto) needs output= (there is no input path to name it)")
        with tempfile.TemporaryDirectory(prefix="onnxprune-") as proto_dir:
            # onnxruntime and the checker read models from files.
            path = save_for_session(model, Path(proto_dir) / "model.onnx")
            report = prune(path, calib, config=config, progress=progress, **options)
            report.model = "<onnx.ModelProto>"
            return report
    arguments = resolve(options, explicit=("calib",), others=("config", "progress"))
    sparsity, output, eval_data = (arguments[k] for k in ("sparsity", "output", "eval_data"))
    report_path, plot, recipe = (arguments[k] for k in ("report_path", "plot", "recipe"))
    sweep, keep_on_fail = arguments["sweep"], arguments["keep_on_fail"]
    started = time.perf_counter()
    if calib is None:
        if arguments["method"] != "magnitude" or eval_data is None:
            raise UsageError(
                "--calib is required (only --method magnitude runs without it, and then "
                "--eval measures fidelity)"
            )
        calib = eval_data  # magnitude reads no statistics; --eval is the check
    # A config or recipe states --update outright; only a call that leaves it out gets the
    # method's default (which may give way, see _costly_defaults_give_way).
    update_asked = arguments["update"] is not None or recipe is not None or config is not None
    gates = Gates(**only(arguments, GATES))
    deploy = DeployConfig(**only(arguments, DEPLOY))
    search = sparsity == "auto"
    replayed: dict[str, Any] | None = None
    if recipe is not None:
        config, replayed = load_recipe(Path(recipe))
        if replayed.get("deploy") is not None:  # older recipes: the options given now
            deploy = DeployConfig.from_record(replayed["deploy"])  # checked by load_recipe
    elif config is None:
        config = _config_from_arguments(only(arguments, CONFIG), search)
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
    model_path = resolve_model(given_path, arguments["model_file"])
    recipe_notes = _recipe_notes(arguments, recipe, replayed)
    preprocess = arguments["preprocess"]
    if isinstance(preprocess, str):
        preprocess = read_image_spec(preprocess)
    if preprocess is None and replayed is not None:
        preprocess = (replayed.get("calibration_input") or {}).get("preprocess")
    tokenizer = arguments["tokenizer"]
    data_options = DataOptions(
        Path(tokenizer) if tokenizer is not None else None,
        arguments["max_length"],
        preprocess,
        given_path if given_path.is_dir() else None,
    )
    calib_source, calib_input = resolve_data(calib, model_path, data_options)
    assert calib_source is not None
    eval_source, _ = resolve_data(eval_data, model_path, data_options)
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
            if not deploy.changes_weights:
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


def _prune_signature() -> inspect.Signature:
    """``prune(model, calib, *, config, progress, <every option>)``, for ``help(prune)`` and
    introspection (the options come in as ``**options``, checked by ``options.resolve``)."""
    own = [p for p in inspect.signature(prune).parameters.values() if p.name != "options"]
    declared = [p for p in signature_parameters() if p.name != "calib"]
    return inspect.signature(prune).replace(parameters=own + declared)


prune.__signature__ = _prune_signature()  # type: ignore[attr-defined]


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


def _recipe_notes(
    arguments: dict[str, Any], recipe: str | Path | None, replayed: dict[str, Any] | None
) -> list[str]:
    """A warning for every option given (not its default) that the --recipe replaces: the
    pruning options, and the artifact options when the recipe records them."""
    if recipe is None or replayed is None:
        return []
    replaced = [(o, "pruning") for o in options_for(CONFIG, internal=False)]
    if replayed.get("deploy") is not None:
        replaced += [(o, "artifact") for o in options_for(DEPLOY)]
    return [
        f"{option.flag} {_shown(arguments[option.name])} is ignored: --recipe {recipe} sets "
        f"the {kind} options"
        for option, kind in replaced
        if arguments[option.name] != option.default
    ]


def _shown(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


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


def _config_from_arguments(settings: dict[str, Any], search: bool) -> PruneConfig:
    """The PruneConfig of ``prune()``'s ``config`` options (``settings``); --sparsity may be
    "auto" (``search``), a string, or left out when --pattern N:M or --structured fixes it."""
    sparsity = settings["sparsity"]
    nm = parse_pattern(settings["pattern"])
    if (
        settings["structured_multiple"] != default("structured_multiple")
        and not (settings["structured"])
    ):
        raise UsageError("--structured-multiple needs --structured (it rounds the units kept)")
    if search:
        sparsity = 0.5  # a placeholder; the search sets the real value
    if sparsity is None and nm is not None:
        sparsity = nm.sparsity
    if sparsity is None and settings["structured"]:
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
    if isinstance(sparsity, (int, float)) and 1.0 < sparsity < 100.0:  # a percentage
        raise UsageError(
            f"--sparsity must be in [0, 1), got {sparsity}: did you mean {sparsity / 100:g}?"
        )
    return PruneConfig(**{**settings, "sparsity": sparsity})


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
        skipped=list(pruner.scan.skipped),
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
