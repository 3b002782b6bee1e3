"""Stage 1: load the model and gather the statistics the candidates are built from.

With --structured the model is shrunk first (its own pass over the original); weight pruning
of what is left is a second pass over the shrunk model, checked against the original.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..deploy import refuse_impossible
from ..errors import UsageError
from ..io import gzip_size_later
from ..pipeline import Candidate, Pruner
from ..progress import Progress
from ..report import Report
from ..session import save_for_session
from .guards import (
    few_samples,
    idle_thorough,
    refuse_in_big_model_mode,
    refuse_non_finite_weights,
    unmatched_patterns,
)
from .reporting import new_report
from .request import Request
from .timing import Timer


@dataclass(frozen=True)
class Loaded:
    """The model, loaded and checked, and the report that starts with it."""

    pruner: Pruner
    report: Report
    display: Progress


@dataclass(frozen=True)
class Calibrated:
    """``pruner`` builds the candidates (with --structured: over the shrunk model);
    ``original`` is the input model's (the same object without --structured)."""

    original: Pruner
    pruner: Pruner
    # --structured alone (no weight pruning): the shrunk model is the candidate.
    shrunk_only: Candidate | None
    # The input's gzip size for the report, compressed in the background from the end of
    # calibration on (``gzip_size_later``): planning leaves most of a core idle, while the
    # calibration pass keeps both busy.
    input_gzip_size: Callable[[], int | None]


def load(
    request: Request, display: Progress, stack: contextlib.ExitStack[bool | None], timer: Timer
) -> Loaded:
    """The model's prunable layers (refused when a weight is not finite) and a new report."""
    config, gates = request.config, request.settings.gates
    with timer("load"):
        pruner = Pruner(
            request.model_path,
            request.calib_source,
            config,
            request.eval_source,
            display,
            hold_out=request.hold_out,
        )
        stack.callback(pruner.close)  # the big-model work directory, if any
        refuse_non_finite_weights(pruner)
    report = new_report(pruner, request)
    report.warnings += request.notes + pruner.branches.notes + pruner.notes
    report.arguments.update(request.settings.deploy.arguments())
    if gates.max_accuracy_drop is not None and not (
        pruner.evaluation is not None and pruner.evaluation.has_labels
    ):
        raise UsageError("--max-accuracy-drop needs --eval data with a 'labels' array")
    # Warnings go into the report; the CLI prints them all on stderr.
    report.warnings += unmatched_patterns(config, pruner.proto) + idle_thorough(config, pruner)
    report.warnings += few_samples(pruner)
    return Loaded(pruner, report, display)


def calibrate(
    request: Request, loaded: Loaded, stack: contextlib.ExitStack[bool | None], timer: Timer
) -> Calibrated:
    """Refuse what the model cannot take, shrink it (--structured), gather the statistics."""
    pruner = loaded.pruner
    if pruner.base_dir is not None:
        refuse_in_big_model_mode(request.config)
    refuse_impossible(
        request.settings.deploy, pruner.proto, pruner.base_dir is not None, request.output_path
    )
    builder, shrunk_only = pruner, None
    if request.config.structured:
        builder, shrunk_only = _shrink(request, loaded, stack, timer)
    if shrunk_only is None:
        with timer("calibrate"):
            builder.statistics()
    return Calibrated(pruner, builder, shrunk_only, gzip_size_later(pruner.model_path))


def _shrink(
    request: Request, loaded: Loaded, stack: contextlib.ExitStack[bool | None], timer: Timer
) -> tuple[Pruner, Candidate | None]:
    """--structured: the pruner of the shrunk model (weight pruning follows), or the shrunk
    model as the candidate (shrink only)."""
    pruner, report, config = loaded.pruner, loaded.report, request.config
    with timer("shrink"):
        shrunk = pruner.shrink()
    report.structured = shrunk.groups
    report.warnings += shrunk.warnings
    if not (config.target_sparsity > 0 or request.settings.search or request.arguments["sweep"]):
        report.group = "none (no weight pruning)"
        return pruner, Candidate(shrunk.model, 0.0, pruner.scorer, "none", [], [])
    # Weight pruning of what is left: a second pass over the shrunk model, checked against the
    # original.
    scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="onnxprune-")))
    shrunk_path = save_for_session(shrunk.model, scratch / "shrunk.onnx")
    builder = Pruner(
        shrunk_path,
        request.calib_source,
        config,
        request.eval_source,
        loaded.display,
        reference_path=request.model_path,
        hold_out=request.hold_out,
    )
    stack.callback(builder.close)
    return builder, None
