"""EXPERIMENT (issue 6): --sequential --update against the dense model's outputs.

Side by side, one process: for each model and sparsity, the one-shot reference rows
(``contrib --update``, ``sparsegpt``) and the sequential rows with ``update_target`` "pruned"
(today's behaviour) and "dense". Metric as in ``run_benchmarks.py``
(``benchsuite.models.Evaluator``): digits test accuracy, MiniLM mean pooled-embedding cosine on
the held-out sentences. One JSON line per row goes to ``--out``.

    python benchmarks/dense_target.py --models digits_mlp digits_cnn --sparsities 0.8 0.9
    python benchmarks/dense_target.py --models minilm --sparsities 0.5 0.7 --minilm-samples 256

Raw rows of the issue-6 measurement (2 shared CPUs; digits in one process, MiniLM in four, one
at a time): ``benchmarks/dense_target_results.jsonl``. Outcome: the dense target lifts the digits
MLP/CNN at 0.8-0.9 (contrib --update up to +0.14 test accuracy) and lowers MiniLM's embedding
cosine (-0.03 to -0.06 at 0.5-0.7; a ridge towards W, ``--refit-ridge 1``, halves the loss but
does not remove it), so it stays opt-in.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchsuite.models import BATCH_SIZE, Evaluator, model_files

import onnxprune
from onnxprune.config import PruneConfig

# (label, method, update, sequential, update_target)
ROWS = [
    ("contrib --update (one-shot)", "contrib", True, False, "pruned"),
    ("sparsegpt (one-shot)", "sparsegpt", False, False, "pruned"),
    ("contrib --update --sequential, target pruned", "contrib", True, True, "pruned"),
    ("contrib --update --sequential, target dense", "contrib", True, True, "dense"),
    ("sparsegpt --sequential, target pruned", "sparsegpt", False, True, "pruned"),
    ("sparsegpt --sequential, target dense", "sparsegpt", False, True, "dense"),
]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["digits_mlp", "digits_cnn"])
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.8, 0.9])
    parser.add_argument("--minilm-samples", type=int, default=256)
    parser.add_argument("--models-dir", type=Path, default=Path("/work/main/bench_out/models"))
    parser.add_argument("--rows", nargs="+", type=int, default=list(range(len(ROWS))))
    parser.add_argument("--out", type=Path, default=Path("dense_target.jsonl"))
    args = parser.parse_args()
    for name in args.models:
        files = model_files(args.models_dir, name)
        evaluator = Evaluator(files)
        samples = args.minilm_samples if name == "minilm" else None
        print(f"== {name}: dense metric {evaluator.dense_metric()}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            output = Path(tmp) / "pruned.onnx"
            for sparsity in args.sparsities:
                for index in args.rows:
                    label, method, update, sequential, target = ROWS[index]
                    fields = {f.name for f in dataclasses.fields(PruneConfig)}
                    extra = {"update_target": target} if "update_target" in fields else {}
                    if target == "dense" and not extra:
                        raise SystemExit("this onnxprune has no update_target")
                    config = PruneConfig(
                        sparsity=sparsity,
                        method=method,
                        update=update,
                        sequential=sequential,
                        num_samples=samples,
                        batch_size=BATCH_SIZE,
                        **extra,
                    )
                    started = time.perf_counter()
                    report = onnxprune.prune(
                        files.onnx, files.calib, output=output, eval_data=files.eval,
                        config=config,
                    )  # fmt: skip
                    wall = time.perf_counter() - started
                    row = {
                        "model": name,
                        "sparsity": sparsity,
                        "label": label
                        + (f", ridge {args.refit_ridge:g}" if args.refit_ridge else ""),
                        **evaluator.measure(output),
                        "tool_cosine": report.fidelity.outputs[0].cosine
                        if report.fidelity
                        else None,
                        "achieved": report.achieved_sparsity,
                        "group": report.group,
                        "passes": report.calibration_passes,
                        "warnings": len(report.warnings),
                        "wall": wall,
                    }
                    print(json.dumps(row), flush=True)
                    with args.out.open("a") as handle:
                        handle.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
