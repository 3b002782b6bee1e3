"""Command line: options -> prune() / inspect_model() -> table or JSON -> exit code.

``onnxprune MODEL ...`` prunes; ``onnxprune inspect MODEL ...`` describes. No pruning logic
here: every failure is one line on stderr and a documented exit code (README "Exit codes").
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .api import prune
from .config import ALLOCATIONS
from .errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, OnnxPruneError, Terminated
from .helpformat import SectionedCommand
from .inspection import check_pattern, inspect_model
from .io import deferred_signals
from .scoring import available_methods
from .structure.scores import available_unit_scorers

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("onnxprune")

CALIB_HELP = (
    "Calibration data: .npz, a directory of .npz or <input>.npy files, test_data_set_* "
    "directories, sentences.txt / .jsonl (with a tokenizer), or a folder of images (with "
    "--preprocess)."
)


def method_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--method",
        type=click.Choice(available_methods()),
        default="contrib",
        show_default=True,
        help=help_text,
    )


num_samples_option = click.option(
    "--num-samples", type=int, default=None, help="Use at most N calibration samples."
)
batch_size_option = click.option(
    "--batch-size", type=int, default=32, show_default=True, help="Samples per onnxruntime batch."
)
seed_option = click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed for the held-out split and sample subset.",
)
debug_option = click.option("--debug", is_flag=True, help="Show a traceback for internal errors.")


def _float_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[float]:
    if not value:
        return []
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError as err:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from err


@click.command(cls=SectionedCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--calib",
    type=click.Path(path_type=Path),
    default=None,
    help=CALIB_HELP + " Required unless --method magnitude with --eval.",
)
@click.option(
    "--model-file",
    default=None,
    metavar="NAME",
    help="MODEL is a directory with several .onnx files: prune this one (relative path).",
)
@click.option(
    "--tokenizer",
    type=click.Path(path_type=Path),
    default=None,
    help="Text calibration: a tokenizer.json (or its directory); default: beside the model.",
)
@click.option(
    "--max-length",
    type=click.IntRange(min=1),
    default=128,
    show_default=True,
    help="Text calibration: truncate sequences to this many tokens.",
)
@click.option(
    "--preprocess",
    default=None,
    metavar="SPEC.json|JSON",
    help="Image calibration (--calib a folder of images): size, resize, mean/std or "
    "scale/offset, channels, layout, dtype, as a JSON file or inline JSON (see README).",
)
@click.option(
    "--sparsity",
    default=None,
    help="Share of the prunable weights to remove, in [0, 1), over all pruned layers; or "
    "'auto' with a gate: the highest sparsity that passes it. Required unless --pattern N:M "
    "or --recipe fixes it.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Output model (default: <model>.pruned.onnx). Never the input.",
)
@method_option("Scoring method.")
@click.option(
    "--pattern",
    default="unstructured",
    show_default=True,
    help="'unstructured', or N:M such as 2:4 / 4:8 along the reduction axis.",
)
@click.option(
    "--group",
    type=click.Choice(["row", "layer", "global", "auto"]),
    default=None,
    help="Where weights compete: per output row, per layer, over all layers, or auto (try "
    "row and global, keep the one closer to the original). Default: the method's own.",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="REGEX",
    help="Leave layers whose node or weight name matches (repeatable).",
)
@click.option(
    "--layer",
    "layer_overrides",
    multiple=True,
    metavar="REGEX=SPEC",
    help="Per-layer override for layers whose node or weight name matches REGEX (repeatable, "
    "first match wins). SPEC: 'skip' (like --exclude), S (exactly this sparsity) or S:METHOD "
    "(also scored by METHOD). The other layers share the rest of --sparsity.",
)
@click.option(
    "--sequential",
    is_flag=True,
    help="Calibrate and prune in topological stages: each stage's statistics come from the "
    "model already pruned upstream (one extra calibration pass per stage).",
)
@click.option(
    "--stages",
    type=int,
    default=8,
    show_default=True,
    help="--sequential: at most this many stages (consecutive depths are merged); 0: one "
    "stage per layer depth.",
)
@click.option(
    "--update-target",
    type=click.Choice(["pruned", "dense"]),
    default="pruned",
    show_default=True,
    help="Advanced, --sequential with --update (or sparsegpt): each stage's update fits the "
    "layer's outputs on the pruned upstream's inputs (pruned) or the dense model's outputs on "
    "the same samples (dense; each stage pass also runs the dense model).",
)
@click.option(
    "--allocation",
    type=click.Choice(ALLOCATIONS),
    default=None,
    help="How the sparsity budget is shared between layers. group: as --group selects. "
    "sensitivity: each layer is pruned alone at its share and at the highest of 5 sparsities "
    "around it, the loss of output cosine judged on 16 calibration samples, the others "
    "interpolated along the layer's local error; the budget goes where it hurts least. "
    "measured: every one of the 5 sparsities judged on 64 samples (about 10x the cost). "
    "Default: the "
    "method's own (contrib: sensitivity; the other methods: group).",
)
@click.option(
    "--min-row-weights",
    type=int,
    default=8,
    show_default=True,
    help="Every neuron/filter keeps at least this many weights (tiny layers such as "
    "depthwise 3x3 or a stem conv stay dense); other layers give more. 0: off.",
)
@click.option(
    "--update/--no-update",
    default=None,
    help="Re-fit each layer's remaining weights to its calibration outputs (SparseGPT-style "
    "reconstruction; gathers a K x K input correlation per layer). Default: the method's "
    "own (contrib: on; the other methods: off, as published).",
)
@click.option(
    "--stat-correction/--no-stat-correction",
    default=None,
    help="After pruning, scale each output channel's weights and shift its bias so its mean "
    "and variance over the calibration inputs are the dense layer's (gathers the K x K input "
    "correlation, as --update). Default: off (it loses on EfficientNet-Lite0; "
    "BENCHMARKS.md, post-pruning repairs).",
)
@click.option(
    "--refit-steps",
    type=int,
    default=0,
    show_default=True,
    help="With --update: this many conjugate-gradient steps on each layer's least-squares "
    "objective (centred inputs) over the kept weights after the update; each step costs "
    "about one out x K x K product per layer and candidate. 0: off.",
)
@click.option(
    "--reselect-mask/--no-reselect-mask",
    default=False,
    help="With --update: choose the method's mask again block by block (N:M: group by group) "
    "on the updated weights with the OBS saliency w^2 / [H^-1]_jj, every row removing as many "
    "weights per block as the method's mask does. Default: off.",
)
@click.option(
    "--refit-final",
    type=int,
    default=0,
    show_default=True,
    help="With --update: this many conjugate-gradient steps on each layer's least-squares "
    "objective over the kept weights, once, on the chosen model (every decision is made on "
    "the plain update; cheaper and safer than --refit-steps). 0: off.",
)
@click.option(
    "--sample-mask",
    default=None,
    metavar="INPUT|none",
    help="Input [batch, seq] whose zeros mark padding, so statistics count real tokens only "
    "(default: an input named attention_mask, if any; 'none' turns it off).",
)
@click.option(
    "--structured",
    type=float,
    default=0.0,
    show_default=True,
    metavar="R",
    help="Remove this share of the hidden units (MLP neurons, Conv channels, attention heads) "
    "so that tensors really shrink; combines with --sparsity (shrink first, then prune what "
    "is left).",
)
@click.option(
    "--structured-score",
    type=click.Choice(available_unit_scorers()),
    default="variance",
    show_default=True,
    help="How --structured ranks units: variance (output variance x reader weight norm, "
    "mean-compensated) or l1 (weight L1 norm, the usual baseline).",
)
@click.option(
    "--structured-multiple",
    type=int,
    default=1,
    show_default=True,
    metavar="N",
    help="With --structured: round each group's kept channels to a multiple of N (8 or 16 "
    "keep int8 / fp16 kernels on their fast path); 1 keeps exactly the share asked for.",
)
@num_samples_option
@batch_size_option
@click.option(
    "--eval",
    "eval_data",
    type=click.Path(path_type=Path),
    default=None,
    help="Evaluation data (same formats, optional 'labels'); default: hold out part of the "
    "calibration set.",
)
@click.option(
    "--metric",
    default="standardized",
    show_default=True,
    metavar="KIND|PRESET",
    help="What fidelity means: the score --group auto, --allocation sensitivity and "
    "--sparsity auto optimise and --min-score gates. Kinds: standardized (each output feature "
    "scaled by the original's spread), cosine, pooled, top1, top5, topK, agreement, cells[@T]; "
    "presets: classifier, detector, encoder (README 'Choosing the metric').",
)
@click.option(
    "--metric-output",
    "metric_outputs",
    multiple=True,
    metavar="NAME[SLICE][=KIND]",
    help="Score only this output or part of it (repeatable), e.g. 'output0[:,4:]=cells'; "
    "without =KIND, the --metric kind.",
)
@click.option(
    "--min-score",
    type=float,
    default=None,
    help="Gate: the --metric score >= X (in [0, 1]; 1 = identical).",
)
@click.option("--min-cosine", type=float, default=None, help="Gate: every output's cosine >= X.")
@click.option(
    "--target-cosine",
    type=float,
    default=None,
    help="Same as --min-cosine; reads better with --sparsity auto.",
)
@click.option("--min-top1", type=float, default=None, help="Gate: top-1 agreement >= X.")
@click.option("--max-abs-error", type=float, default=None, help="Gate: max abs error <= X.")
@click.option(
    "--max-accuracy-drop",
    type=float,
    default=None,
    help="Gate (needs --eval labels): original accuracy - pruned accuracy <= X.",
)
@click.option("--keep-on-fail", is_flag=True, help="Keep the output model even when a gate fails.")
@click.option(
    "--sweep",
    callback=_float_list,
    default=None,
    metavar="S1,S2,...",
    help="Also measure fidelity at these sparsities (one calibration pass); shown in the "
    "report and in --plot.",
)
@click.option(
    "--plot",
    type=click.Path(path_type=Path),
    default=None,
    help="Draw fidelity vs sparsity and per-layer sparsity to this PNG (needs matplotlib).",
)
@click.option(
    "--recipe",
    type=click.Path(path_type=Path),
    default=None,
    help="Replay a saved <out>.recipe.json exactly (its settings replace the pruning options).",
)
@click.option(
    "--report", "report_path", type=click.Path(path_type=Path), default=None,
    help="Write the report as JSON to this file.",
)  # fmt: skip
@click.option(
    "--quantize", default="none", show_default=True,
    help="none, int8 or int8-dynamic: after pruning, int8 quantization with onnxruntime "
    "(int8: static, calibrated on the run's calibration data; int8-dynamic: activations "
    "quantized at run time, best for transformers). Symmetric weights keep pruned zeros. The "
    "fidelity check, gates and --sparsity auto judge the quantized file.",
)  # fmt: skip
@click.option(
    "--quant-format", default=None,
    help="With --quantize int8: qdq (default) (QuantizeLinear/DequantizeLinear pairs) or qoperator "
    "(QLinearConv, QLinearMatMul...).",
)  # fmt: skip
@click.option(
    "--per-channel/--per-tensor", default=True, show_default=True,
    help="With --quantize: one weight scale per output channel, or one per tensor.",
)  # fmt: skip
@click.option(
    "--quant-calibration", default=None,
    help="With --quantize int8: activation range calibration, minmax (default), entropy or "
    "percentile.",
)  # fmt: skip
@click.option(
    "--quant-range", default=None,
    help="With --quantize: int8 weights in 7 bits (reduced; default for int8: onnxruntime's x86 "
    "kernels without VNNI saturate on full-range pairs) or 8 bits (full; default for "
    "int8-dynamic; ARM and VNNI CPUs do not saturate).",
)  # fmt: skip
@click.option(
    "--storage", default="dense", show_default=True,
    help="dense, or sparse: store each weight that is smaller so as an ONNX sparse_initializer "
    "(onnxruntime densifies it at load: a smaller file, not a faster model).",
)  # fmt: skip
@click.option(
    "--format", "output_format", default="onnx", show_default=True,
    help="onnx, or ort: write onnxruntime's mobile format (.ort, by onnxruntime's own "
    "converter; sparse weights stay sparse). The output must be named NAME.ort.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@seed_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no table.")
@click.option("-v", "--verbose", count=True, help="More log lines on stderr: -v info, -vv debug.")
@debug_option
@click.version_option(package_name="onnxprune")
def command(
    model: Path,
    calib: Path | None,
    model_file: str | None,
    tokenizer: Path | None,
    max_length: int,
    preprocess: str | None,
    sparsity: str | None,
    output: Path | None,
    method: str,
    pattern: str,
    group: str | None,
    exclude: tuple[str, ...],
    layer_overrides: tuple[str, ...],
    sequential: bool,
    stages: int,
    update_target: str,
    allocation: str | None,
    min_row_weights: int,
    update: bool | None,
    stat_correction: bool | None,
    refit_steps: int,
    reselect_mask: bool,
    refit_final: int,
    sample_mask: str | None,
    structured: float,
    structured_score: str,
    structured_multiple: int,
    num_samples: int | None,
    batch_size: int,
    eval_data: Path | None,
    metric: str,
    metric_outputs: tuple[str, ...],
    min_score: float | None,
    min_cosine: float | None,
    target_cosine: float | None,
    min_top1: float | None,
    max_abs_error: float | None,
    max_accuracy_drop: float | None,
    keep_on_fail: bool,
    sweep: list[float],
    plot: Path | None,
    recipe: Path | None,
    report_path: Path | None,
    quantize: str,
    quant_format: str | None,
    per_channel: bool,
    quant_calibration: str | None,
    quant_range: str | None,
    storage: str,
    output_format: str,
    as_json: bool,
    seed: int,
    quiet: bool,
    verbose: int,
    debug: bool,
) -> int:
    """Prune MODEL (an .onnx file, or a directory holding one) using statistics from
    calibration data. Warnings go to stderr.

    Also: onnxprune inspect MODEL and onnxprune check-pattern MODEL (each with --help).
    """
    _configure_logging(verbose, debug)
    if target_cosine is not None and min_cosine is not None and target_cosine != min_cosine:
        raise click.UsageError("--target-cosine and --min-cosine disagree; give one of them")
    report = prune(
        model,
        calib,
        sparsity=sparsity,
        output=output,
        method=method,
        pattern=pattern,
        group=group,
        exclude=exclude,
        layer_overrides=layer_overrides,
        sequential=sequential,
        stages=stages,
        update_target=update_target,
        allocation=allocation,
        num_samples=num_samples,
        batch_size=batch_size,
        min_row_weights=min_row_weights,
        update=update,
        stat_correction=stat_correction,
        refit_steps=refit_steps,
        reselect_mask=reselect_mask,
        refit_final=refit_final,
        sample_mask=sample_mask,
        structured=structured,
        structured_score=structured_score,
        structured_multiple=structured_multiple,
        eval_data=eval_data,
        report_path=report_path,
        seed=seed,
        progress=not quiet and sys.stderr.isatty(),
        min_cosine=min_cosine if min_cosine is not None else target_cosine,
        min_top1=min_top1,
        max_abs_error=max_abs_error,
        max_accuracy_drop=max_accuracy_drop,
        min_score=min_score,
        metric=metric,
        metric_outputs=metric_outputs,
        keep_on_fail=keep_on_fail,
        sweep=sweep,
        plot=plot,
        recipe=recipe,
        model_file=model_file,
        tokenizer=tokenizer,
        max_length=max_length,
        preprocess=preprocess,
        quantize=quantize,
        quant_format=quant_format,
        per_channel=per_channel,
        quant_calibration=quant_calibration,
        storage=storage,
        output_format=output_format,
        quant_range=quant_range,
    )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    elif not quiet:
        click.echo(report.format_table())
    for warning in report.warnings:  # on stderr, also with -q and --json
        log.warning("%s", warning)
    if report.gate_failures:
        worst = report.gate_failures[0]
        kept = "output kept (--keep-on-fail)" if report.output_written else "no output written"
        click.echo(
            f"onnxprune: fidelity gate failed: {worst.describe()}"
            + (f" (+{len(report.gate_failures) - 1} more)" if len(report.gate_failures) > 1 else "")
            + f"; {kept}",
            err=True,
        )
    return report.exit_code


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--calib",
    type=click.Path(path_type=Path),
    default=None,
    help=CALIB_HELP + " With data, each layer's sensitivity is measured.",
)
@click.option(
    "--sparsity",
    type=float,
    default=0.5,
    show_default=True,
    help="Sensitivity: prune one layer at a time to this sparsity.",
)
@method_option("Scoring method for the sensitivity runs.")
@num_samples_option
@batch_size_option
@seed_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@debug_option
def inspect_command(
    model: Path,
    calib: Path | None,
    sparsity: float,
    method: str,
    num_samples: int | None,
    batch_size: int,
    seed: int,
    as_json: bool,
    quiet: bool,
    debug: bool,
) -> int:
    """List MODEL's prunable layers, how their weights are stored, and what is skipped; with
    --calib, how much each layer hurts the outputs when pruned alone."""
    report = inspect_model(
        model,
        calib,
        sparsity=sparsity,
        method=method,
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
        progress=not quiet and sys.stderr.isatty(),
    )
    click.echo(report.to_json() if as_json else report.format_table())
    return report.exit_code


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--pattern", default="2:4", show_default=True, help="N:M pattern to check.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
@debug_option
def check_pattern_command(model: Path, pattern: str, as_json: bool, debug: bool) -> int:
    """Check which of MODEL's prunable layers keep at most N of every M weights along the
    reduction axis (TensorRT 2:4). Exits 5 when a layer the pattern applies to does not conform
    (0 when it applies to none: the verdict says so)."""
    report = check_pattern(model, pattern)
    click.echo(report.to_json() if as_json else report.format_table())
    return report.exit_code


SUBCOMMANDS: dict[str, click.Command] = {
    "inspect": inspect_command,
    "check-pattern": check_pattern_command,
}
SectionedCommand.subcommands = {
    name: " ".join((sub.help or "").split(".")[0].split()) for name, sub in SUBCOMMANDS.items()
}
COMPLETE_VAR = "_ONNXPRUNE_COMPLETE"


def _configure_logging(verbose: int, debug: bool) -> None:
    """Warnings always reach stderr (``main``'s handler); -v adds info, -vv (or --debug)
    debug lines."""
    level = logging.WARNING
    if verbose == 1:
        level = logging.INFO
    if verbose > 1 or debug:
        level = logging.DEBUG
    log.setLevel(level)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"onnxprune: {record.levelname.lower()}: {message}"
        return message


def main(argv: list[str] | None = None) -> None:
    """Entry point: every failure is one line on stderr and a documented exit code.

    Warnings go to stderr through ``logging`` (the ``onnxprune`` logger), whatever ``-q`` says.
    """
    if os.environ.get(COMPLETE_VAR):  # eval "$(_ONNXPRUNE_COMPLETE=bash_source onnxprune)"
        from click.shell_completion import shell_complete

        sys.exit(shell_complete(command, {}, "onnxprune", COMPLETE_VAR, os.environ[COMPLETE_VAR]))
    args = list(argv if argv is not None else sys.argv[1:])
    debug = "--debug" in args
    handler = logging.StreamHandler(sys.stderr)  # made per call: the stderr of this call
    handler.setFormatter(_Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.WARNING)
    log.propagate = False
    # Every temporary directory of the run goes inside one of its own, removed at the end
    # whatever happened: a signal that cuts a directory's creation short leaves nothing behind.
    previous: dict[int, Any] = {}
    previous_tempdir = tempfile.tempdir
    run_dir: str | None = None
    try:
        with deferred_signals():
            with contextlib.suppress(OSError):  # an unwritable $TMPDIR fails later, named
                run_dir = tempfile.mkdtemp(prefix="onnxprune-run-")
                tempfile.tempdir = run_dir
            for stop_signal in (signal.SIGTERM, signal.SIGHUP):
                with contextlib.suppress(ValueError):  # not the main thread: leave signals
                    previous[stop_signal] = signal.signal(stop_signal, _terminate)
        _main(args, debug)
    except KeyboardInterrupt as stop:  # came while the run was being set up
        if isinstance(stop, Terminated):
            sys.exit(_terminated(stop))
        click.echo("onnxprune: interrupted, no output written", err=True)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        with deferred_signals():  # a second signal now gets the old handler, after cleanup
            for signum, old in previous.items():
                signal.signal(signum, old)
            tempfile.tempdir = previous_tempdir
            if run_dir is not None:
                shutil.rmtree(run_dir, ignore_errors=True)
            log.removeHandler(handler)


def _terminated(stop: Terminated) -> int:
    name = signal.Signals(stop.signum).name
    click.echo(f"onnxprune: terminated by {name}, no output written", err=True)
    return 128 + stop.signum


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


def _main(args: list[str], debug: bool) -> None:
    target: click.Command = command
    prog = "onnxprune"
    if args and args[0] in SUBCOMMANDS:
        target, prog = SUBCOMMANDS[args[0]], f"onnxprune {args[0]}"
        args = args[1:]
    try:
        # Not ``target.main``: on Ctrl-C it prints a blank line to stderr before aborting.
        with target.make_context(prog, args) as ctx:
            code = target.invoke(ctx)
    except click.exceptions.Exit as done:  # --help, --version
        code = done.exit_code
    except click.ClickException as err:
        click.echo(f"onnxprune: error: {err.format_message()}", err=True)
        code = EXIT_USAGE
    except Terminated as stop:
        code = _terminated(stop)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("onnxprune: interrupted, no output written", err=True)
        code = EXIT_INTERRUPTED
    except OnnxPruneError as err:
        click.echo(f"onnxprune: error: {err}", err=True)
        code = err.exit_code
    except Exception as err:
        if debug:
            raise
        click.echo(
            f"onnxprune: internal error: {type(err).__name__}: {err} (rerun with --debug for "
            "a traceback and please report it)",
            err=True,
        )
        code = EXIT_INTERNAL
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
