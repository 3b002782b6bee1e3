"""The default pipeline with and without post-pruning repairs, side by side in one run.

Variants (each a ``PruneConfig`` change on top of the default ``contrib`` run):

- ``default``: as shipped before this script's variants existed (``--no-stat-correction``).
- ``statcorr``: per-channel statistics correction (``--stat-correction``,
  ``onnxprune/correction.py``).

Each model gets one calibration pass; every variant reuses its statistics (a ``Pruner`` per
variant sharing them), so the variants differ only in what the repair does. Measures are
``run_benchmarks.py``'s: digits test accuracy, MiniLM pooled-embedding cosine on the 256
held-out sentences (both from the written model), EfficientNet-Lite0 top-1 agreement with the
dense model on its 128 held-out crops (the tool's own comparison, as ``run_benchmarks.py``).

Usage (one process at a time; results appended as JSON lines)::

    nice -n 15 python benchmarks/run_refit.py --models digits_cnn digits_mlp \\
        --out benchmarks/refit_results.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from benchsuite.models import Evaluator, model_files  # noqa: E402
from markdown_section import write_section  # noqa: E402

from onnxprune import correction  # noqa: E402
from onnxprune.config import PruneConfig  # noqa: E402
from onnxprune.pipeline import Pruner  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {"stat_correction": False},
    "statcorr": {"stat_correction": True},
    "cg": {"stat_correction": False, "cg": 20},
    "cg-centered": {"stat_correction": False, "cg": 20, "centered": True},
    "cg+statcorr": {"stat_correction": True, "cg": 20},
    "cg-centered+statcorr": {"stat_correction": True, "cg": 20, "centered": True},
    "reselect": {"stat_correction": False, "reselect": True},
}
POINTS: dict[str, list[float | str]] = {
    "digits_cnn": [0.5, 0.7, 0.8, 0.9],
    "digits_mlp": [0.5, 0.7, 0.8, 0.9],
    "minilm": [0.5, 0.7],
    "mobile": [0.5, 0.7, "2:4"],
}
CALIB = {"minilm": "minilm_calib.npz", "mobile": "mobile_calib64.npz"}
SAMPLES = {"minilm": 128}


def measure(
    name: str, pruner: Pruner, candidate: Any, evaluator: Evaluator | None
) -> tuple[float, float | None]:
    """(the model's measure, mobile: the mean logit cosine on the same crops)."""
    if evaluator is None:  # mobile: the tool's comparison on the held-out crops
        out = pruner.compare(candidate).outputs[0]
        assert out.top1_agreement is not None
        return float(out.top1_agreement), out.cosine
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.onnx"
        onnx.save(candidate.model, str(path))
        found = evaluator.measure(path)
    return (found["cosine_mean"] if evaluator.is_text else found["accuracy"]), None


def run_model(
    name: str, models: Path, variants: list[str], out: Path, points: list[str] | None
) -> None:
    files = model_files(models, name)
    if name in CALIB:
        files = dataclasses.replace(files, calib=models / CALIB[name])
    evaluator = None if name == "mobile" else Evaluator(files)
    shared = None
    pruners: dict[tuple[str, str], Pruner] = {}
    for point in POINTS[name]:
        if points and str(point) not in points:
            continue
        for variant in variants:
            pattern = point if isinstance(point, str) else "unstructured"
            sparsity = 0.5 if isinstance(point, str) else point
            key = (variant, pattern)
            if key not in pruners:
                config = PruneConfig(
                    sparsity=sparsity,
                    pattern=pattern,
                    num_samples=SAMPLES.get(name),
                    stat_correction=VARIANTS[variant]["stat_correction"],
                    refit_steps=VARIANTS[variant].get("cg", 0),
                    reselect_mask=VARIANTS[variant].get("reselect", False),
                )
                pruners[key] = Pruner(files.onnx, files.calib, config, eval_data=files.eval)
                if pattern == "unstructured":
                    # Same statistics for every variant (one calibration pass per model).
                    if shared is None:
                        shared = pruners[key].statistics()
                    pruners[key]._stats = shared
            pruner = pruners[key]
            correction.CG_CENTERED = VARIANTS[variant].get("centered", False)
            clock = time.perf_counter()
            candidate = pruner.build(None if isinstance(point, str) else point)
            build = time.perf_counter() - clock
            value, cosine = measure(name, pruner, candidate, evaluator)
            row = {
                "model": name,
                "point": point,
                "variant": variant,
                "value": value,
                "logit_cosine": cosine,
                "build_seconds": round(build, 1),
                "update_seconds": round(pruner.phase_seconds["update"], 2),
                "group": candidate.group,
                "scorer": candidate.scorer.name,
            }
            pruner.phase_seconds["update"] = 0.0
            print(json.dumps(row), flush=True)
            with out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")


def cost(name: str, models: Path) -> dict[str, float]:
    """Seconds of one pass of each repair over every layer (a 50% magnitude mask, the OBS
    update's output not needed for timing) against one plain onnxruntime pass over the same
    calibration samples."""
    import numpy as np
    import onnxruntime as ort

    from onnxprune.correction import damped_hessians, refit_on_support, stat_correct

    files = model_files(models, name)
    if name in CALIB:
        files = dataclasses.replace(files, calib=models / CALIB[name])
    config = PruneConfig(sparsity=0.5, num_samples=SAMPLES.get(name))
    pruner = Pruner(files.onnx, files.calib, config, eval_data=files.eval)
    stats = pruner.statistics()
    timings = {"stat_correction": 0.0, "refit_20_steps": 0.0}
    for layer, matrix in zip(pruner.layers, pruner.matrices(), strict=True):
        inputs = stats[layer.weight_name].inputs
        assert inputs.xtx is not None
        keep = np.abs(matrix) >= np.median(np.abs(matrix), axis=1, keepdims=True)
        pruned = np.where(keep, matrix, 0.0)
        clock = time.perf_counter()
        stat_correct(matrix, pruned, inputs.mean, inputs.xtx, inputs.count)
        timings["stat_correction"] += time.perf_counter() - clock
        clock = time.perf_counter()
        hessians = damped_hessians(inputs.mean, inputs.xtx, inputs.count, True)
        refit_on_support(matrix, pruned, keep, hessians, 20)
        timings["refit_20_steps"] += time.perf_counter() - clock
    data = dict(np.load(files.calib))
    count = SAMPLES.get(name) or len(next(iter(data.values())))
    session = ort.InferenceSession(str(files.onnx), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    clock = time.perf_counter()
    for start in range(0, count, 32):
        session.run(None, {n: data[n][start : start + 32] for n in names})
    timings["inference_pass"] = time.perf_counter() - clock
    timings["samples"] = count
    return timings


BEGIN, END = "<!-- refit:begin -->", "<!-- refit:end -->"
MEASURE = {
    "digits_cnn": "test accuracy",
    "digits_mlp": "test accuracy",
    "minilm": "embedding cosine",
    "mobile": "top-1 agreement (logit cosine)",
}


def render(rows: list[dict[str, Any]], source: str) -> str:
    """The BENCHMARKS.md section: one line per model and point, one column per variant (the
    last measurement of each cell), with each variant's change against ``default``."""
    cells: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for row in rows:
        cells.setdefault((row["model"], str(row["point"])), {})[row["variant"]] = row
    variants = [v for v in VARIANTS if any(v in c for c in cells.values())]
    lines = [
        BEGIN,
        "## Post-pruning repairs: statistics correction and support re-fit",
        "",
        f"`python benchmarks/run_refit.py` (raw rows: `{source}`): the default `contrib` "
        "pipeline with each repair, every variant of a model on the same calibration "
        'statistics; `(+x)`: change against `default`. See docs/METHOD.md, "Statistics '
        'correction and support re-fit (opt-in)". Variants: `default` (neither); '
        "`statcorr` (`--stat-correction`); `cg` (20 CG steps on the update's uncentred "
        "objective, an experiment); `cg-centered` (`--refit-steps 20`); `cg+statcorr` (the "
        "uncentred CG, then the correction); `cg-centered+statcorr` (both options); "
        "`reselect` (`--reselect-mask`, a later run of the digits nets). "
        "EfficientNet-Lite0: top-1 agreement, logit "
        "cosine in brackets where recorded. MiniLM's `default`/`statcorr` rows were measured "
        "with an earlier float64 form of the same variance formula; every other row with "
        "the committed formulas. Runs: one process per model (two for the digits nets, the "
        "later one kept; the mobile points in three), each variant on the same statistics.",
        "",
        "| model | measure | point | " + " | ".join(variants) + " |",
        "|---|---|---|" + "---|" * len(variants),
    ]
    for (model, point), found in cells.items():
        base = found.get("default")
        shown = []
        for variant in variants:
            row = found.get(variant)
            if row is None:
                shown.append("-")
                continue
            text = f"{row['value']:.4f}"
            if row.get("logit_cosine") is not None:
                text += f" ({row['logit_cosine']:.3f})"
            if base is not None and variant != "default":
                text += f" ({row['value'] - base['value']:+.4f})"
            shown.append(text)
        lines.append(f"| {model} | {MEASURE[model]} | {point} | " + " | ".join(shown) + " |")
    lines.append(END)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(POINTS), default=list(POINTS))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--points", nargs="+", help="only these points (0.5, 2:4, ...)")
    parser.add_argument("--models-dir", type=Path, default=Path("/work/models"))
    parser.add_argument("--out", type=Path, default=HERE / "refit_results.jsonl")
    parser.add_argument(
        "--render", action="store_true", help="write BENCHMARKS.md's section from --out only"
    )
    parser.add_argument(
        "--cost", action="store_true", help="time each repair against one inference pass"
    )
    args = parser.parse_args()
    if args.cost:
        for name in args.models:
            print(json.dumps({"model": name, **cost(name, args.models_dir)}), flush=True)
        return
    if args.render:
        rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
        shown = str(args.out.resolve().relative_to(HERE.parent))
        write_section(HERE.parent / "BENCHMARKS.md", BEGIN, END, render(rows, shown))
        return
    for name in args.models:
        run_model(name, args.models_dir, args.variants, args.out, args.points)


if __name__ == "__main__":
    main()
