"""Stage 5: the written file against the original on the reported samples, and the gates."""

from __future__ import annotations

from ..report import Report
from .evaluation import Judge, curve_point
from .planning import Plan
from .request import Request
from .timing import Timer
from .writing import Written


def verify(
    request: Request, plan: Plan, written: Written, judge: Judge, report: Report, timer: Timer
) -> None:
    """The fidelity of what is written (the artifact's, or the search's when it measured the
    chosen candidate on the reported samples, or measured now), the gates it fails, and with
    --sweep the chosen sparsity's point on the curve."""
    gates = request.settings.gates
    with timer("verify"):
        fidelity = written.fidelity if written.fidelity is not None else plan.fidelity
        if fidelity is None:
            fidelity = judge.pruner.verification_reference().compare(written.staged)
        report.fidelity = fidelity
        report.gate_failures = gates.check(fidelity)
        report.warnings += [
            f"output {out.name}: the pruned model produced {out.nonfinite} NaN/inf values "
            f"on the {fidelity.source} samples"
            for out in fidelity.outputs
            if out.nonfinite
        ]
        target = plan.config.target_sparsity
        if request.arguments["sweep"] and all(
            p["sparsity"] != round(target, 6) for p in report.curve
        ):
            report.curve.append(curve_point(target, fidelity, gates))
