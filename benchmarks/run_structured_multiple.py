"""Measure ``--structured-multiple``: onnxruntime CPU latency of MiniLM shrunk by
``--structured 0.3`` with each group's kept channels rounded to a multiple of N (N = 1, i.e. no
rounding, 8 and 16), fp32 and int8-dynamic, batch 1 and batch 32, all variants timed side by side
in one interleaved loop (``run_artifacts.latency``). The default of ``--structured-multiple``
is chosen from this measurement (README "Structured widths").

Usage::

    python benchmarks/run_structured_multiple.py [--models-dir DIR] [--out-dir bench_out]

Writes ``benchmarks/structured_multiple_results.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
import run_artifacts as ra  # noqa: E402
from benchsuite.codec import to_json  # noqa: E402
from benchsuite.machine import environment, git_state  # noqa: E402
from benchsuite.models import BENCH_DIR, Evaluator, ModelFiles  # noqa: E402

import onnxprune  # noqa: E402
from onnxprune.deploy import DeployConfig, quantize_int8_dynamic  # noqa: E402
from onnxprune.io import model_size_bytes  # noqa: E402

RESULTS = BENCH_DIR / "structured_multiple_results.json"
MULTIPLES = (1, 8, 16)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=Path("bench_out/models"))
    parser.add_argument("--calib", default="minilm_calib.npz")
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--structured", type=float, default=0.3)
    parser.add_argument("--out-dir", type=Path, default=Path("bench_out"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    files = ModelFiles(
        "minilm",
        args.models_dir / "minilm.onnx",
        args.models_dir / args.calib,
        args.models_dir / "minilm_eval.npz",
    )
    work = args.out_dir / "work_multiple"
    work.mkdir(parents=True, exist_ok=True)
    started, stamp, git = time.perf_counter(), time.gmtime(), to_json(git_state())
    paths: dict[str, Path] = {"dense": files.onnx}
    widths: dict[str, list[int]] = {}
    for multiple in MULTIPLES:
        fp32 = work / f"minilm.s{args.structured}.m{multiple}.onnx"
        report = onnxprune.prune(
            files.onnx,
            files.calib,
            eval_data=files.eval,
            output=fp32,
            structured=args.structured,
            structured_multiple=multiple,
            num_samples=args.samples,
        )
        int8 = fp32.with_suffix(".int8.onnx")
        quantize_int8_dynamic(fp32, int8, DeployConfig("int8-dynamic"))
        paths[f"m{multiple} fp32"], paths[f"m{multiple} int8-dynamic"] = fp32, int8
        widths[f"m{multiple}"] = [g.units_after for g in report.structured if not g.frozen]
        print(f"multiple {multiple}: kept units {widths[f'm{multiple}']}", flush=True)
    evaluator = Evaluator(files)
    rows = []
    timed = ra.latency(paths, evaluator.data)
    for label, path in paths.items():
        metric = {"cosine_mean": 1.0} if label == "dense" else evaluator.measure(path)
        rows.append(
            {
                "label": label,
                "file_bytes": model_size_bytes(path),
                "latency_s": timed[label],
                "latency_ratio": {k: v / timed["dense"][k] for k, v in timed[label].items()},
                **metric,
            }
        )
        print(
            f"{label:>20}: {rows[-1]['file_bytes']:>11,} B  b1 "
            f"{rows[-1]['latency_ratio']['batch 1']:.3f}x  b32 "
            f"{rows[-1]['latency_ratio']['batch 32']:.3f}x  cos {rows[-1]['cosine_mean']:.4f}",
            flush=True,
        )
    results: dict[str, Any] = {
        "structured": args.structured,
        "samples": args.samples,
        "widths": widths,
        "rows": rows,
        "meta": {
            "started": time.strftime("%Y-%m-%d %H:%M", stamp),
            "seconds": time.perf_counter() - started,
            "git": git,
            "environment": to_json(environment()),
        },
    }
    args.results.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
