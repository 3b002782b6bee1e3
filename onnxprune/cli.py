"""Command line: options -> prune() -> table or JSON -> exit code. No pruning logic here."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from .api import prune
from .errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, OnnxPruneError
from .scoring import available_methods


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--calib",
    "calib",
    required=True,
    type=click.Path(path_type=Path),
    help="Calibration data: .npz, a directory of .npz or <input>.npy files, or "
    "test_data_set_* directories.",
)
@click.option(
    "--sparsity",
    type=float,
    default=None,
    help="Share of the prunable weights to remove, in [0, 1), over all pruned layers "
    "(required unless --pattern N:M fixes it).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Output model (default: <model>.pruned.onnx). Never the input.",
)
@click.option(
    "--method",
    type=click.Choice(available_methods()),
    default="contrib",
    show_default=True,
    help="Scoring method.",
)
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
    "--min-row-weights",
    type=int,
    default=8,
    show_default=True,
    help="Every neuron/filter keeps at least this many weights (tiny layers such as "
    "depthwise 3x3 or a stem conv stay dense); other layers give more. 0: off.",
)
@click.option("--num-samples", type=int, default=None, help="Use at most N calibration samples.")
@click.option(
    "--batch-size", type=int, default=32, show_default=True, help="Samples per onnxruntime batch."
)
@click.option(
    "--eval",
    "eval_data",
    type=click.Path(path_type=Path),
    default=None,
    help="Evaluation data (same formats, optional 'labels'); default: hold out part "
    "of the calibration set.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the report as JSON to this file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed for the held-out split and sample subset.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no table.")
@click.option("--debug", is_flag=True, help="Show a traceback for internal errors.")
@click.version_option(package_name="onnxprune")
def command(
    model: Path,
    calib: Path,
    sparsity: float | None,
    output: Path | None,
    method: str,
    pattern: str,
    group: str | None,
    exclude: tuple[str, ...],
    min_row_weights: int,
    num_samples: int | None,
    batch_size: int,
    eval_data: Path | None,
    report_path: Path | None,
    as_json: bool,
    seed: int,
    quiet: bool,
    debug: bool,
) -> int:
    """Prune MODEL (an .onnx file) using statistics from calibration data."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(message)s")
    report = prune(
        model,
        calib,
        sparsity=sparsity,
        output=output,
        method=method,
        pattern=pattern,
        group=group,
        exclude=exclude,
        num_samples=num_samples,
        batch_size=batch_size,
        min_row_weights=min_row_weights,
        eval_data=eval_data,
        report_path=report_path,
        seed=seed,
        progress=not quiet and sys.stderr.isatty(),
    )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    elif not quiet:
        click.echo(report.format_table())
    return report.exit_code


def main(argv: list[str] | None = None) -> None:
    """Entry point: every failure is one line on stderr and a documented exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        code = command.main(args=argv, prog_name="onnxprune", standalone_mode=False)
    except click.exceptions.Exit as done:  # --help, --version
        code = done.exit_code
    except click.ClickException as err:
        click.echo(f"onnxprune: error: {err.format_message()}", err=True)
        code = EXIT_USAGE
    except click.exceptions.Abort:
        click.echo("onnxprune: interrupted, no output written", err=True)
        code = EXIT_INTERRUPTED
    except KeyboardInterrupt:
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
