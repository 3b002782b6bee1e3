"""--sparsity auto: the highest sparsity whose model passes every gate."""

from __future__ import annotations

from ..checks import Gates
from ..pipeline import Candidate, Pruner
from ..report import Report
from ..verify import Fidelity
from .evaluation import Judge, curve_point

# The resolution of the search, and the highest sparsity it tries.
SEARCH_STEP = 0.01
SEARCH_MAX = 0.99


def search(
    pruner: Pruner, gates: Gates, report: Report, judge: Judge
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
        point = curve_point(sparsity, fidelity, gates)
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
