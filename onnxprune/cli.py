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
from .errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, OnnxPruneError, Terminated
from .helpformat import SectionedCommand
from .inspection import check_pattern, inspect_model
from .io import deferred_signals
from .options import BY_NAME, CALIB_HELP, click_params, click_spec

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("onnxprune")


def shared_option(name: str, **changes: Any) -> Callable[[F], F]:
    """Option ``name`` of the prune command, for the other commands (``changes``: other
    attributes, such as their own help text)."""
    declarations, attrs = click_spec(BY_NAME[name])
    return click.option(*declarations, **{**attrs, **changes})


def prune_options(function: F) -> F:
    """The prune command's options: every ``onnxprune.options`` option, in declaration order,
    with the CLI-only ones (--target-cosine, --json, -q, -v, --debug, --version) among them."""
    params: list[click.Parameter] = []
    for param in click_params():
        params.append(param)
        if param.name == "min_cosine":
            params.append(
                click.Option(
                    ["--target-cosine"],
                    type=float,
                    default=None,
                    help="Same as --min-cosine; reads better with --sparsity auto.",
                )
            )
    params += [
        click.Option(
            ["--json", "as_json"], is_flag=True, help="Print the report as JSON on stdout."
        ),
        click.Option(["-q", "--quiet"], is_flag=True, help="No progress bar and no table."),
        click.Option(
            ["-v", "--verbose"], count=True, help="More log lines on stderr: -v info, -vv debug."
        ),
        click.Option(["--debug"], is_flag=True, help="Show a traceback for internal errors."),
    ]
    # click.option appends to __click_params__ and the command reverses the list.
    existing = getattr(function, "__click_params__", [])
    function.__click_params__ = existing + list(reversed(params))  # type: ignore[attr-defined]
    return function


@click.command(cls=SectionedCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(path_type=Path))
@prune_options
@click.version_option(package_name="onnxprune")
def command(
    model: Path,
    target_cosine: float | None,
    as_json: bool,
    quiet: bool,
    verbose: int,
    debug: bool,
    **options: Any,
) -> int:
    """Prune MODEL (an .onnx file, or a directory holding one) using statistics from
    calibration data. Warnings go to stderr.

    Also: onnxprune inspect MODEL and onnxprune check-pattern MODEL (each with --help).
    """
    _configure_logging(verbose, debug)
    min_cosine = options["min_cosine"]
    if target_cosine is not None and min_cosine is not None and target_cosine != min_cosine:
        raise click.UsageError("--target-cosine and --min-cosine disagree; give one of them")
    if min_cosine is None:
        options["min_cosine"] = target_cosine
    calib = options.pop("calib")
    report = prune(model, calib, progress=not quiet and sys.stderr.isatty(), **options)
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
@shared_option("method", help="Scoring method for the sensitivity runs.")
@shared_option("num_samples")
@shared_option("batch_size")
@shared_option("seed")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--debug", is_flag=True, help="Show a traceback for internal errors.")
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
@click.option("--debug", is_flag=True, help="Show a traceback for internal errors.")
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
