"""Stage 2: the candidate to write: the --sparsity auto search, the --sweep points, or one
build at the asked sparsity (each candidate judged by ``evaluation.Judge``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import PruneConfig
from ..pipeline import Candidate
from ..report import Report
from ..verify import Fidelity
from .calibration import Calibrated
from .evaluation import Judge, curve_point
from .request import Request
from .search import search
from .timing import Timer


@dataclass(frozen=True)
class Plan:
    """The chosen candidate, its fidelity when the search measured it on the reported samples,
    and the configuration it was built with (--sparsity auto: the sparsity found)."""

    candidate: Candidate
    fidelity: Fidelity | None
    config: PruneConfig
    # --sparsity auto: the config's sparsity is the level the search chose, not a request.
    searched: bool = False


def plan(
    request: Request, calibrated: Calibrated, report: Report, judge: Judge, timer: Timer
) -> Plan:
    """Build (and with --sparsity auto / --sweep, judge) candidates; the curve goes into
    ``report``."""
    pruner, settings, config = calibrated.pruner, request.settings, request.config
    candidate, fidelity = calibrated.shrunk_only, None
    with timer("prune"):
        if settings.replayed is not None and settings.replayed.get("search_split"):
            pruner.search_reference()  # the reported fidelity uses the samples the run did
        if settings.search:
            candidate, fidelity = search(pruner, settings.gates, report, judge)
            config = dataclasses.replace(config, sparsity=candidate.sparsity)
            report.target_sparsity = candidate.sparsity
        for point in request.arguments["sweep"]:
            swept = pruner.build(point)
            report.curve.append(curve_point(point, judge(swept), settings.gates))
        if candidate is None:
            candidate = pruner.build()
    pruner.release_judging()
    if calibrated.original is not pruner:
        calibrated.original.release_judging()
    _count_work(calibrated, config, report, timer)
    return Plan(candidate, fidelity, config, searched=settings.search)


def _count_work(calibrated: Calibrated, config: PruneConfig, report: Report, timer: Timer) -> None:
    """What building the candidates cost: seconds judging in onnxruntime and updating
    weights (both within "prune"), calibration passes, --sequential stages, sensitivity
    builds."""
    original, pruner = calibrated.original, calibrated.pruner
    for phase in ("judge", "update"):
        timer.timings[f"prune.{phase}"] = original.phase_seconds[phase] + (
            pruner.phase_seconds[phase] if pruner is not original else 0.0
        )
    report.calibration_passes = original.calibration_passes + (
        pruner.calibration_passes if pruner is not original else 0
    )
    if config.sequential:
        report.stages = len(pruner.stages())
    report.sensitivity_builds = pruner.sensitivity_builds
