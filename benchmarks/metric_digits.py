"""EXPERIMENT (issue 17): decisions driven by the standardized metric vs the old cosine.

For each digits model and sparsity, the default run (``contrib``: --group auto, --allocation
sensitivity, --update) is made once per ``--metric``; only the metric that drives the
decisions differs. Each pruned model is then judged on the test split by the users' measure
(accuracy) and by both metrics (so a cosine-driven model's standardized score is known too).

    python benchmarks/metric_digits.py --sparsities 0.5 0.6 0.7 0.75 0.8 0.85 0.9 0.95

One JSON line per run goes to ``--out`` (default: benchmarks/metric_digits_results.jsonl).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

# This checkout's onnxprune, not an installed one.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import onnxprune
from onnxprune.calibrate.sources import model_input_specs, open_data
from onnxprune.metric import Metric
from onnxprune.pipeline import mean_cosine
from onnxprune.verify import ReferenceRun

REPO = Path(__file__).resolve().parent.parent
MODELS = {
    "digits_cnn": ("calibration_data/digits", "calibration_data/digits_test.npz"),
    "digits_mlp": ("calibration_data/digits_mlp", "calibration_data/digits_mlp_test.npz"),
}


def judge(original: Path, pruned: Path, test: Path) -> dict[str, float]:
    """Test accuracy, mean cosine and standardized score of ``pruned`` against ``original``."""
    dataset = open_data(test, model_input_specs(onnx.load(str(original))), allow_labels=True)
    selected = np.ones(dataset.total, dtype=bool)
    run = ReferenceRun(original, dataset, selected, 64, "test", metric=Metric("standardized"))
    fidelity = run.compare(pruned)
    assert fidelity.accuracy_pruned is not None and fidelity.score is not None
    return {
        "accuracy": fidelity.accuracy_pruned,
        "accuracy_original": fidelity.accuracy_original or 0.0,
        "cosine": mean_cosine(fidelity),
        "standardized": fidelity.score,
        "top1": fidelity.outputs[0].top1_agreement or 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.7, 0.8, 0.9])
    parser.add_argument("--metrics", nargs="+", default=["cosine", "standardized", "classifier"])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/metric_digits_results.jsonl")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, args.out.open("a") as out:
        for name in args.models:
            calib, test = (REPO / p for p in MODELS[name])
            model = REPO / "examples" / f"{name}.onnx"
            for sparsity in args.sparsities:
                for metric in args.metrics:
                    pruned = Path(tmp) / f"{name}-{sparsity}-{metric}.onnx"
                    report = onnxprune.prune(
                        model,
                        calib,
                        eval_data=test,  # as the README's example run (no hold-out split)
                        sparsity=sparsity,
                        metric=metric,
                        output=pruned,
                    )
                    row = {
                        "model": name,
                        "sparsity": sparsity,
                        "metric": metric,
                        "group": report.group,
                        "variant": report.variant,
                        "layers": {layer.name: round(layer.sparsity, 3) for layer in report.layers},
                        **judge(model, pruned, test),
                    }
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                    print(
                        f"{name} {sparsity:.2f} {metric:<13} {report.group:<16} "
                        f"acc {row['accuracy']:.4f} cos {row['cosine']:.5f} "
                        f"std {row['standardized']:.5f} top1 {row['top1']:.4f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
