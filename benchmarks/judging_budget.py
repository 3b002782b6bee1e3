"""The sensitivity allocation's judging budget (``allocation.judging_budget_runs``) against
measuring every layer, on the models where it binds: EfficientNet-Lite0 with 64 calibration
images (top-1 agreement and logit cosine with the dense model on the 128 held-out images of the
quality grid) and the synthetic detectors (output cosine on the run's own held-out images).

Each model is calibrated once per setting (two ``Pruner`` objects); then, sparsity by
sparsity, the two builds alternate (which one goes first alternates too), each timed in this
process: --group auto's trials, the sensitivity measurement and the final candidate. The
budget is lifted by setting ``MIN_JUDGED_RUNS`` to infinity in this process only; the CLI has
no such switch (``--allocation measured`` measures every layer, at every level, on more
samples).

Usage (models as ``run_cost.py`` builds them)::

    python benchmarks/judging_budget.py --models-dir /work/models

Writes ``benchmarks/judging_budget_results.json`` and the section between
``<!-- budget:begin -->`` and ``<!-- budget:end -->`` of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from markdown_section import write_section  # noqa: E402
from run_cost import _subset  # noqa: E402

import onnxprune.allocation as allocation  # noqa: E402
from onnxprune.config import PruneConfig  # noqa: E402
from onnxprune.pipeline import Pruner  # noqa: E402

BEGIN, END = "<!-- budget:begin -->", "<!-- budget:end -->"
RESULTS = HERE / "judging_budget_results.json"
FLOOR = allocation.MIN_JUDGED_RUNS


def _build(pruner: Pruner, sparsity: float, floor: float, classifier: bool) -> dict[str, Any]:
    allocation.MIN_JUDGED_RUNS = floor
    try:
        clock = time.perf_counter()
        candidate = pruner.build(sparsity)
        seconds = time.perf_counter() - clock
    finally:
        allocation.MIN_JUDGED_RUNS = FLOOR
    fidelity = pruner.compare(candidate)
    out = fidelity.outputs[0]
    return {
        "seconds": seconds,
        "cosine": float(out.cosine),
        "top1": out.top1_agreement if classifier else None,
        "allocation": candidate.allocation,
        "judged": pruner.sensitivity_builds,
        "at_share": len(pruner.base_share_layers),
        "trials": dict(candidate.trials),
    }


def measure(
    name: str, model: Path, calib: Path, sparsities: list[float], eval_data: Path | None
) -> dict[str, Any]:
    """Both settings at each sparsity; a model with ``eval_data`` is a classifier."""
    pruners = {}
    for label in ("budget", "every layer"):
        clock = time.perf_counter()
        pruner = Pruner(model, calib, PruneConfig(sparsity=sparsities[0]), eval_data=eval_data)
        pruner.statistics()
        pruners[label] = (pruner, time.perf_counter() - clock)
    points = []
    for k, sparsity in enumerate(sparsities):
        order = ["budget", "every layer"] if k % 2 == 0 else ["every layer", "budget"]
        point: dict[str, Any] = {"sparsity": sparsity}
        for label in order:
            pruner = pruners[label][0]
            before = pruner.sensitivity_builds
            floor = FLOOR if label == "budget" else math.inf
            got = _build(pruner, sparsity, floor, eval_data is not None)
            got["judged"] -= before
            point[label] = got
            print(
                f"{name} {sparsity} {label}: {got['seconds']:.1f} s, cosine {got['cosine']:.4f}"
                f", top-1 {got['top1']}, {got['judged']} judged, {got['at_share']} at share",
                flush=True,
            )
        points.append(point)
    return {
        "model": name,
        "calibration_samples": pruners["budget"][0].calibration_samples,
        "calibration_seconds": {k: v[1] for k, v in pruners.items()},
        "points": points,
    }


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        BEGIN,
        "## The sensitivity allocation's judging budget",
        "",
        f"`python benchmarks/judging_budget.py --models-dir DIR` (source {meta['source']}, "
        f"{meta['date']}, {meta['cpus']} cores). The default measures layers until the judged "
        f"candidates would cost more than {meta['budget']:g} passes over the calibration "
        f"samples (or {meta.get('floor', 12):g} runs over the probe samples, when more), and "
        "leaves the rest at their base share; against it, the same run with every "
        "layer measured. Both from the same calibration, built alternately in one process; "
        "seconds are the build (trials, sensitivity, final candidate), not the calibration. "
        "EfficientNet-Lite0: top-1 agreement / logit cosine with the dense model on the 128 "
        "held-out images of the quality grid; detectors (random weights): output cosine on "
        "the run's own held-out images.",
        "",
        "| model (calibration samples) | sparsity | budget: seconds | every layer: seconds "
        "| budget: layers judged / at share | budget: quality | every layer: quality |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in results["cases"]:
        for point in case["points"]:
            budget, full = point["budget"], point["every layer"]

            def quality(got: dict[str, Any]) -> str:
                top1 = "" if got["top1"] is None else f"{got['top1']:.4f} / "
                kept = "" if got["allocation"] == "sensitivity" else " (group kept)"
                return f"{top1}{got['cosine']:.4f}{kept}"

            lines.append(
                f"| {case['model']} ({case['calibration_samples']}) | {point['sparsity']} | "
                f"{budget['seconds']:.1f} | {full['seconds']:.1f} | "
                f"{budget['judged']} / {budget['at_share']} | {quality(budget)} | {quality(full)} |"
            )
    lines.append(END)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9])
    args = parser.parse_args()
    import build_detector

    cases = []
    mobile = args.models_dir / "mobile.onnx"
    if mobile.exists():
        calib = _subset(args.models_dir / "mobile_calib.npz", 64, args.models_dir)
        evaluation = args.models_dir / "mobile_eval.npz"
        cases.append(measure("EfficientNet-Lite0", mobile, calib, args.sparsities, evaluation))
    for blocks, size in ((20, 640), (20, 320), (40, 320)):
        model, calib = build_detector.build(args.models_dir, blocks, size, 32)
        name = f"detector {blocks} blocks {size} px"
        cases.append(measure(name, model, calib, [0.5], None))
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    results = {
        "meta": {
            "date": time.strftime("%Y-%m-%d"),
            "source": commit,
            "cpus": os.cpu_count(),
            "budget": allocation.JUDGING_PASSES,
            "floor": FLOOR,
        },
        "cases": cases,
    }
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    write_section(REPO / "BENCHMARKS.md", BEGIN, END, render(results))


if __name__ == "__main__":
    main()
