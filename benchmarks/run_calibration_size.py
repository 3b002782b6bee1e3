"""Fidelity of the default pipeline against the calibration-set size (``num_samples``).

Each run is ``onnxprune.prune(model, calib, sparsity=S, num_samples=N, eval_data=...,
output=...)`` with every other option at its default: ``num_samples`` keeps a seeded random
subset of the calibration file (``pipeline.split_samples``; with ``eval_data`` nothing is held
out of it). The measures are the benchmark suite's ``Evaluator`` on the written model: MiniLM
mean pooled-embedding cosine with the dense model on the 256 held-out sentences, digits CNN
test accuracy on the 450 labelled test digits. ``seconds`` is the wall time of the ``prune``
call (calibration, choice, writing, the held-out check); ``timings`` the report's own stages.

Usage (one process at a time; rows appended as JSON lines, then the section re-rendered)::

    nice -n 15 python benchmarks/run_calibration_size.py --model minilm --sparsity 0.5 \\
        --samples 64 256
    python benchmarks/run_calibration_size.py --render
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from benchsuite.models import Evaluator, model_files  # noqa: E402
from markdown_section import write_section  # noqa: E402

import onnxprune  # noqa: E402

# The benchmark points of the issue: sparsities and calibration sizes per model (the largest
# size is the whole calibration file).
POINTS: dict[str, tuple[list[float], list[int]]] = {
    "minilm": ([0.5, 0.7], [64, 128, 256, 512, 1024]),
    "digits_cnn": ([0.8, 0.9], [64, 128, 256, 512, 1347]),
}
MEASURE = {"minilm": "embedding cosine", "digits_cnn": "test accuracy"}
BEGIN, END = "<!-- calsize:begin -->", "<!-- calsize:end -->"
# The section goes before this heading's section when it is first written.
BEFORE = "<!-- refit:begin -->"


def run_point(
    name: str, models: Path, sparsity: float, samples: int, seed: int, evaluator: Evaluator
) -> dict[str, Any]:
    """Prune once with the defaults, ``num_samples=samples`` and ``seed`` (which only picks
    the subset when ``eval_data`` is given); measure the written model."""
    files = model_files(models, name)
    with tempfile.TemporaryDirectory(prefix="calsize-") as tmp:
        output = Path(tmp) / f"{name}.onnx"
        clock = time.perf_counter()
        report = onnxprune.prune(
            files.onnx,
            files.calib,
            sparsity=sparsity,
            num_samples=samples,
            seed=seed,
            eval_data=files.eval,
            output=output,
        )
        seconds = time.perf_counter() - clock
        found = evaluator.measure(output)
    fidelity = report.fidelity
    return {
        "model": name,
        "sparsity": sparsity,
        "num_samples": samples,
        "seed": seed,
        "calibration_samples": report.calibration_samples,
        "value": found["cosine_mean"] if evaluator.is_text else found["accuracy"],
        "measures": found,
        # The tool's own judgement of the same held-out data (its metric's score).
        "report_score": None if fidelity is None else fidelity.score,
        "report_metric": None if fidelity is None else fidelity.metric,
        "achieved_sparsity": report.achieved_sparsity,
        "group": report.group,
        "seconds": round(seconds, 1),
        "timings": {k: round(v, 2) for k, v in report.timings.items()},
        "onnxprune": report.versions.get("onnxprune"),
    }


def render(rows: list[dict[str, Any]], source: str, dense: dict[str, float | None]) -> str:
    """One line per model and sparsity, one column per calibration size: the measure and the
    run's seconds with the default seed 0 (the last row of each), then the range over every
    seed measured when there were several subsets."""
    cells: dict[tuple[str, float], dict[int, dict[str, Any]]] = {}
    spread: dict[tuple[str, float, int], dict[int, float]] = {}
    for row in rows:
        seed = row.get("seed", 0)
        spread.setdefault((row["model"], row["sparsity"], row["num_samples"]), {})[seed] = row[
            "value"
        ]
        if seed == 0:
            cells.setdefault((row["model"], row["sparsity"]), {})[row["num_samples"]] = row
    lines = [
        BEGIN,
        "## Calibration-set size",
        "",
        f"`python benchmarks/run_calibration_size.py` (raw rows: `{source}`): the default "
        "pipeline, `onnxprune.prune(model, calib, sparsity=S, num_samples=N, eval_data=..., "
        "output=...)`, everything else default; `num_samples` keeps a seeded random subset of "
        "the calibration file (the largest N is the whole file, today's default). Each cell: "
        "the measure of the written model (`run_benchmarks.py`'s evaluator: MiniLM mean "
        "pooled-embedding cosine with the dense model on 256 held-out sentences; digits CNN "
        "test accuracy on 450 test digits) / wall seconds of the `prune` call (2 shared "
        "cores, `nice -n 15`), then the report's calibration seconds in brackets, all with "
        "the default `seed=0`; where other seeds (other random subsets of the same size) were "
        "run, the range of the measure over all of them follows. One run per seed and cell.",
        "",
    ]
    for model in dict.fromkeys(m for m, _ in cells):
        sizes = sorted({n for (m, _), c in cells.items() if m == model for n in c})
        base = dense.get(model)
        lines += [
            f"### {model} ({MEASURE[model]}"
            + (f"; dense {base:.4f}" if base is not None else "")
            + ")",
            "",
            "| sparsity | " + " | ".join(f"N={n}" for n in sizes) + " |",
            "|---|" + "---|" * len(sizes),
        ]
        for (m, sparsity), found in cells.items():
            if m != model:
                continue
            shown = []
            for n in sizes:
                cell = found.get(n)
                if cell is None:
                    shown.append("-")
                    continue
                calib = cell["timings"].get("calibrate")
                text = f"{cell['value']:.4f} / {cell['seconds']:.1f}s"
                text += f" ({calib:.1f}s)" if calib is not None else ""
                values = spread[(model, sparsity, n)]
                if len(values) > 1:
                    text += (
                        f"; seeds {','.join(map(str, sorted(values)))}: "
                        f"{min(values.values()):.4f}-{max(values.values()):.4f}"
                    )
                shown.append(text)
            lines.append(f"| {sparsity} | " + " | ".join(shown) + " |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines) + "\n"


def place_section(markdown: Path, section: str) -> None:
    """Replace the old section, or put a new one before the post-pruning repairs section
    (at the end when that is absent)."""
    text = markdown.read_text()
    if BEGIN not in text and BEFORE in text:
        head, tail = text.split(BEFORE, 1)
        markdown.write_text(head + section + "\n" + BEFORE + tail)
        return
    write_section(markdown, BEGIN, END, section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(POINTS), default="minilm")
    parser.add_argument("--sparsity", type=float, nargs="+", help="default: the model's points")
    parser.add_argument("--samples", type=int, nargs="+", help="default: the model's sizes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="subset seeds")
    parser.add_argument("--models-dir", type=Path, default=Path("/work/models"))
    parser.add_argument("--out", type=Path, default=HERE / "calibration_size_results.jsonl")
    parser.add_argument(
        "--render", action="store_true", help="only write BENCHMARKS.md's section from --out"
    )
    args = parser.parse_args()
    if not args.render:
        sparsities, sizes = POINTS[args.model]
        evaluator = Evaluator(model_files(args.models_dir, args.model))
        for sparsity in args.sparsity or sparsities:
            for samples in args.samples or sizes:
                for seed in args.seeds:
                    row = run_point(args.model, args.models_dir, sparsity, samples, seed, evaluator)
                    print(json.dumps(row), flush=True)
                    with args.out.open("a") as handle:
                        handle.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    dense: dict[str, float | None] = {}
    for model in dict.fromkeys(row["model"] for row in rows):
        dense[model] = Evaluator(model_files(args.models_dir, model)).dense_metric()
    shown = str(args.out.resolve().relative_to(HERE.parent))
    place_section(HERE.parent / "BENCHMARKS.md", render(rows, shown, dense))


if __name__ == "__main__":
    main()
