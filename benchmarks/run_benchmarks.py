"""Benchmark onnxprune: quality grid, speed against plain inference, peak memory; one run.

Everything below is measured side by side in ONE run of this script (the machines this runs on
are noisy, so numbers from different runs are never compared). The script builds its models
from PyPI packages when they are missing (``benchmarks/build_digits.py``,
``benchmarks/build_minilm.py``, ``benchmarks/build_mobile.py``) and writes ``BENCHMARKS.md`` at
the repository root plus the raw numbers in ``benchmarks/results.json``; the markdown is
generated entirely from those numbers.

Sections:

1. Quality grid. ``digits_cnn`` / ``digits_mlp``: test accuracy of the pruned model (the tool's
   ``report.fidelity.accuracy_pruned`` with the labelled test split as ``eval_data``, cross-checked
   by this script). ``minilm``: cosine between the mean-pooled, L2-normalised sentence embeddings
   (masked mean over real tokens) of the pruned and the dense model on the held-out sentences,
   computed here with onnxruntime; the tool's own ``report.fidelity.outputs[0].cosine`` is shown
   too. Rows: every public method with its default selection group, every hidden ``contrib-*``
   ablation registered at run time, ``contrib`` with each selection group, and the baselines with
   ``min_row_weights=0``.
   ``mobile`` (EfficientNet-Lite0, ``benchmarks/build_mobile.py``; only with ``--models mobile``
   or as part of the default model list): top-1 agreement and logit cosine with the dense model
   on held-out image crops, from the tool's own comparison; one calibration pass per
   configuration serves every sparsity, and the 2:4 column has its own (see
   ``run_quality_mobile``).
2. Speed. Wall time of a whole ``onnxprune`` CLI run (fresh subprocess, ``--quiet``) divided by
   the wall time of plain onnxruntime inference (default session options, batch 32) over the same
   number of calibration samples, timed right before it; median of 3 repetitions of each.
3. Memory. Peak RSS of a fresh CLI process with 64 and with 1024 calibration samples.

Usage::

    python benchmarks/run_benchmarks.py [--out-dir bench_out] [--quick] [--methods ...]
        [--sparsities ...] [--models ...] [--minilm-samples N] [--sections ...]

``--quick`` (digits models, sparsities 0.5 and 0.9) is a smoke test; it and any run restricted
with ``--models`` / ``--methods`` / ``--sparsities`` / ``--sections`` write their markdown and JSON
into ``--out-dir`` instead of over the published files (override with ``--markdown`` and
``--results``). ``--render-only`` regenerates the markdown from an existing results file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

import onnxprune
from onnxprune.options import default
from onnxprune.scoring import METHODS

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / "benchmarks"
DEFAULT_MARKDOWN = REPO_ROOT / "BENCHMARKS.md"
DEFAULT_RESULTS = BENCH_DIR / "results.json"

ALL_MODELS = ("digits_cnn", "digits_mlp", "minilm", "mobile")
DIGITS_MODELS = ("digits_cnn", "digits_mlp")
SPARSITIES = (0.5, 0.7, 0.8, 0.9)
QUICK_SPARSITIES = (0.5, 0.9)
BASELINES = ("magnitude", "wanda", "ria")
GROUPS = ("row", "layer", "global")
MINILM_SAMPLES = 512
BATCH_SIZE = 32

SPEED_MODELS = ("digits_cnn", "minilm")
SPEED_METHODS = ("wanda", "contrib")
SPEED_SPARSITY = 0.5
SPEED_SAMPLES = 512
SPEED_REPS = 3
SPEED_TARGETS = {"wanda": 1.5, "contrib": 3.0}

MEMORY_SAMPLES = (64, 1024)
MEMORY_RATIO_OK = 1.25  # "flat": the larger run may use at most this much more peak RSS

DEFAULT_MIN_ROW_WEIGHTS: int = default("min_row_weights")


# --------------------------------------------------------------------------- models and data


@dataclass(frozen=True)
class ModelFiles:
    name: str
    onnx: Path
    calib: Path
    eval: Path


def model_files(models_dir: Path, name: str) -> ModelFiles:
    if name == "mobile":
        return ModelFiles(
            name,
            models_dir / "mobile.onnx",
            models_dir / "mobile_calib.npz",
            models_dir / "mobile_eval.npz",
        )
    if name == "minilm":
        return ModelFiles(
            name,
            models_dir / "minilm.onnx",
            models_dir / "minilm_calib.npz",
            models_dir / "minilm_eval.npz",
        )
    suffix = name.removeprefix("digits_")
    return ModelFiles(
        name,
        models_dir / f"{name}.onnx",
        models_dir / f"digits_calib_{suffix}.npz",
        models_dir / f"digits_test_{suffix}.npz",
    )


def ensure_models(models_dir: Path, names: Sequence[str]) -> dict[str, Any]:
    """Build whatever is missing; return the MiniLM source record (empty without MiniLM)."""
    sys.path.insert(0, str(BENCH_DIR))
    models_dir.mkdir(parents=True, exist_ok=True)
    digits = [n for n in names if n in DIGITS_MODELS]
    missing = [
        p
        for n in digits
        for p in asdict(model_files(models_dir, n)).values()
        if isinstance(p, Path) and not p.is_file()
    ]
    if missing:
        print(f"building the digits models into {models_dir} (missing: {missing[0].name}, ...)")
        import build_digits

        build_digits.train_and_export(models_dir)
    else:
        print(f"digits models present in {models_dir}")
    if "mobile" in names:
        import build_mobile

        build_mobile.build(models_dir)
    if "minilm" not in names:
        return {}
    import build_minilm

    record: dict[str, Any] = build_minilm.build(models_dir)
    return record


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def run_batches(
    session: ort.InferenceSession, arrays: dict[str, np.ndarray], count: int, batch: int
) -> list[np.ndarray]:
    """First output of ``session`` over the first ``count`` samples, in batches."""
    names = [i.name for i in session.get_inputs()]
    outputs = []
    for start in range(0, count, batch):
        stop = min(start + batch, count)
        feed = {n: arrays[n][start:stop] for n in names}
        outputs.append(session.run(None, feed)[0])
    return outputs


def new_session(path: Path) -> ort.InferenceSession:
    """A session with default options (as a user would create it)."""
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def pooled_embeddings(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked mean over tokens, then L2 normalisation (sentence-transformers pooling)."""
    weights = mask[..., None].astype(np.float64)
    summed = (hidden.astype(np.float64) * weights).sum(axis=1)
    pooled = summed / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return pooled / np.maximum(norms, 1e-12)


class Evaluator:
    """This script's own metric for one model: test accuracy or pooled-embedding cosine."""

    def __init__(self, files: ModelFiles) -> None:
        self.files = files
        self.data = load_npz(files.eval)
        self.count = len(next(iter(self.data.values())))
        self.is_text = files.name == "minilm"
        self.dense = self._outputs(files.onnx)

    def _outputs(self, path: Path) -> np.ndarray:
        session = new_session(path)
        parts = run_batches(session, self.data, self.count, BATCH_SIZE)
        if self.is_text:
            mask = self.data["attention_mask"]
            return np.concatenate(
                [
                    pooled_embeddings(p, mask[i * BATCH_SIZE : i * BATCH_SIZE + len(p)])
                    for i, p in enumerate(parts)
                ]
            )
        return np.concatenate(parts)

    def dense_metric(self) -> float | None:
        if self.is_text:
            return None
        return float((self.dense.argmax(axis=1) == self.data["labels"]).mean())

    def measure(self, pruned: Path) -> dict[str, float]:
        out = self._outputs(pruned)
        if self.is_text:
            cosines = (out * self.dense).sum(axis=1)
            return {"cosine_mean": float(cosines.mean()), "cosine_min": float(cosines.min())}
        return {"accuracy": float((out.argmax(axis=1) == self.data["labels"]).mean())}


# --------------------------------------------------------------------------- quality grid


@dataclass(frozen=True)
class GridConfig:
    label: str
    method: str
    group: str | None
    min_row_weights: int
    # "method", "ablation", "group", "baseline-mrw0", "update", "fast", "sensitivity",
    # "sequential"
    kind: str
    # The selection group as configured: the explicit one, or "<method default> (default)".
    group_label: str
    # --update: SparseGPT-style reconstruction after the mask (``sparsegpt`` always has it);
    # None: the method's default (contrib: on).
    update: bool | None = None
    # --allocation; None: the method's default (contrib: sensitivity).
    allocation: str | None = None
    sequential: bool = False


# MiniLM runs take minutes each: its grid keeps the published methods and contrib's fast path.
# The fast path: contrib without the OBS update and without sensitivity allocation (the default
# before both were measured to win).
FAST = "contrib, --no-update --allocation group"


def grid_configs(methods_filter: Sequence[str] | None) -> list[GridConfig]:
    public = onnxprune.available_methods()

    def default(name: str) -> str:
        return f"{METHODS[name].default_group} (default)"

    configs = [
        GridConfig(m, m, None, DEFAULT_MIN_ROW_WEIGHTS, "method", default(m)) for m in public
    ]
    configs += [
        GridConfig(name, name, None, DEFAULT_MIN_ROW_WEIGHTS, "ablation", default(name))
        for name in METHODS
        if name.startswith("contrib-")
    ]
    configs += [
        GridConfig(f"contrib, group={g}", "contrib", g, DEFAULT_MIN_ROW_WEIGHTS, "group", g)
        for g in GROUPS
        if "contrib" in METHODS
    ]
    configs += [
        GridConfig(f"{m}, min_row_weights=0", m, None, 0, "baseline-mrw0", default(m))
        for m in public
        if not m.startswith("contrib")
    ]
    configs += [
        GridConfig(f"{m}, --update", m, None, DEFAULT_MIN_ROW_WEIGHTS, "update", default(m), True)
        for m in ("wanda", "magnitude")
        if m in public
    ]
    if "contrib" in public:
        configs += [
            GridConfig(
                FAST, "contrib", None, DEFAULT_MIN_ROW_WEIGHTS, "fast", default("contrib"),
                update=False, allocation="group",
            ),
            GridConfig(
                "contrib, --sequential", "contrib", None, DEFAULT_MIN_ROW_WEIGHTS, "sequential",
                default("contrib"), sequential=True,
            ),
        ]  # fmt: skip
    if "sparsegpt" in public:
        configs.append(
            GridConfig(
                "sparsegpt, --allocation sensitivity", "sparsegpt", None,
                DEFAULT_MIN_ROW_WEIGHTS, "sensitivity", default("sparsegpt"),
                allocation="sensitivity",
            )
        )  # fmt: skip
    if methods_filter:
        configs = [c for c in configs if c.method in methods_filter]
    return configs


def run_quality(
    files: ModelFiles,
    configs: Sequence[GridConfig],
    sparsities: Sequence[float],
    num_samples: int | None,
    work_dir: Path,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    print(f"\n== quality: {files.name} ({len(configs)} configs x {len(sparsities)} sparsities)")
    clock = time.perf_counter()
    evaluator = Evaluator(files)
    dense = {"metric": evaluator.dense_metric(), "eval_samples": evaluator.count}
    print(f"dense reference computed in {time.perf_counter() - clock:.1f}s: {dense}")
    output = work_dir / f"{files.name}.pruned.onnx"
    rows: list[dict[str, Any]] = []
    for config in configs:
        for sparsity in sparsities:
            row: dict[str, Any] = {
                "model": files.name,
                **asdict(config),
                "sparsity": sparsity,
                "num_samples": num_samples,
                "load1": load1(),
            }
            started = time.perf_counter()
            try:
                report = onnxprune.prune(
                    files.onnx,
                    files.calib,
                    sparsity=sparsity,
                    output=output,
                    method=config.method,
                    group=config.group,
                    num_samples=num_samples,
                    batch_size=BATCH_SIZE,
                    min_row_weights=config.min_row_weights,
                    update=config.update,
                    allocation=config.allocation,
                    sequential=config.sequential,
                    eval_data=files.eval,
                )
                row["prune_wall"] = time.perf_counter() - started
                fidelity = report.fidelity
                row.update(
                    effective_group=report.group,
                    variant=getattr(report, "variant", None),
                    group_trials=dict(getattr(report, "group_trials", None) or {}),
                    achieved_sparsity=report.achieved_sparsity,
                    calibration_samples=report.calibration_samples,
                    allocation=report.arguments.get("allocation"),
                    sensitivity_builds=report.sensitivity_builds,
                    timings=dict(report.timings),
                    warnings=list(report.warnings),
                    tool_cosine=fidelity.outputs[0].cosine if fidelity else None,
                    tool_accuracy_pruned=fidelity.accuracy_pruned if fidelity else None,
                    tool_accuracy_original=fidelity.accuracy_original if fidelity else None,
                    fidelity_samples=fidelity.samples if fidelity else None,
                )
                row.update(evaluator.measure(output))
                row["value"] = row["cosine_mean"] if evaluator.is_text else row["accuracy"]
            except Exception as err:
                row["error"] = f"{type(err).__name__}: {err}"
                row["traceback"] = traceback.format_exc()
                row["call"] = (
                    f"onnxprune.prune({str(files.onnx)!r}, {str(files.calib)!r}, "
                    f"sparsity={sparsity}, output={str(output)!r}, method={config.method!r}, "
                    f"group={config.group!r}, num_samples={num_samples}, "
                    f"batch_size={BATCH_SIZE}, min_row_weights={config.min_row_weights}, "
                    f"eval_data={str(files.eval)!r})"
                )
            row["wall"] = time.perf_counter() - started
            rows.append(row)
            shown = f"{row['value']:.4f}" if "value" in row else f"ERROR {row['error']}"
            achieved = row.get("achieved_sparsity", float("nan"))
            print(
                f"  {config.label:<34} s={sparsity:.2f} -> {shown} "
                f"(achieved {achieved:.4f}, {row['wall']:.1f}s)",
                flush=True,
            )
    output.unlink(missing_ok=True)
    return dense, rows


# EfficientNet-Lite0 (benchmarks/build_mobile.py): these rows, at every sparsity and 2:4.
MOBILE_METHODS = ("contrib", "magnitude", "wanda", "ria", "sparsegpt", "stade")
MOBILE_PATTERN = "2:4"


def run_quality_mobile(
    files: ModelFiles,
    sparsities: Sequence[float],
    methods_filter: Sequence[str] | None,
    labels: Sequence[str] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The mobile CNN's grid through ``onnxprune.pipeline.Pruner``: one calibration pass per
    configuration serves every sparsity (a pass over 256 images at 224x224 takes minutes here),
    exactly as ``--sweep`` does; the 2:4 pattern, which changes which layers are prunable, gets
    its own. Metric: the tool's own comparison with
    the dense model on the 128 held-out images (``--eval``): top-1 agreement of the logits
    and their mean per-sample cosine."""
    from onnxprune.config import PruneConfig
    from onnxprune.pipeline import Pruner

    # (label, method, update, allocation); None: the method's default.
    configs: list[tuple[str, str, bool | None, str | None]] = [
        (m, m, None, None) for m in MOBILE_METHODS
    ] + [(FAST, "contrib", False, "group")]
    if methods_filter:
        configs = [c for c in configs if c[1] in methods_filter]
    if labels:
        configs = [c for c in configs if c[0] in labels]
    print(
        f"\n== quality: {files.name} ({len(configs)} configs x {len(sparsities)} sparsities + 2:4)"
    )
    rows: list[dict[str, Any]] = []
    for label, method, update, allocation in configs:
        started = time.perf_counter()
        config = PruneConfig(
            sparsity=sparsities[0], method=method, update=update, allocation=allocation
        )
        pruner = Pruner(files.onnx, files.calib, config, eval_data=files.eval)
        pruner.statistics()
        calibrate = time.perf_counter() - started
        points: list[float | str] = [*sparsities, MOBILE_PATTERN]
        for point in points:
            row: dict[str, Any] = {
                "model": files.name, "label": label, "method": method, "update": update,
                "group": None, "group_label": f"{METHODS[method].default_group} (default)",
                "kind": "method" if label == method else "fast", "sparsity": point,
                "calibrate_seconds": calibrate, "load1": load1(),
            }  # fmt: skip
            clock = time.perf_counter()
            try:
                if point == MOBILE_PATTERN:
                    # N:M decides which layers are prunable (layers whose input channels per
                    # group are not a multiple of M stay dense): a Pruner of its own, with its
                    # own calibration pass, as the CLI would run it.
                    nm = PruneConfig(
                        sparsity=0.5, method=method, update=update, pattern=point,
                        allocation=None if allocation == "sensitivity" else allocation,
                    )  # fmt: skip
                    nm_pruner = Pruner(files.onnx, files.calib, nm, eval_data=files.eval)
                    candidate = nm_pruner.build()
                    fidelity = nm_pruner.compare(candidate)
                else:
                    assert isinstance(point, float)
                    candidate = pruner.build(point)
                    fidelity = pruner.compare(candidate)
                params = sum(x.params for x in candidate.layers)
                zeros = sum(x.params - x.nonzero_after for x in candidate.layers)
                out = fidelity.outputs[0]
                row.update(
                    effective_group=candidate.group,
                    variant=candidate.scorer.name,
                    group_trials=dict(candidate.trials),
                    achieved_sparsity=zeros / params,
                    layer_sparsity={x.name: x.sparsity for x in candidate.layers},
                    allocation=candidate.allocation,
                    warnings=list(candidate.warnings),
                    top1_agreement=out.top1_agreement,
                    tool_cosine=out.cosine,
                    fidelity_samples=fidelity.samples,
                    value=out.top1_agreement,
                )
            except Exception as err:
                row["error"] = f"{type(err).__name__}: {err}"
                row["traceback"] = traceback.format_exc()
            row["wall"] = time.perf_counter() - clock
            rows.append(row)
            shown = (
                f"top-1 {row['top1_agreement']:.4f} cosine {row['tool_cosine']:.4f}"
                if "value" in row
                else f"ERROR {row['error']}"
            )
            print(
                f"  {label:<20} {point!s:>5} -> {shown} (achieved "
                f"{row.get('achieved_sparsity', float('nan')):.4f}, {row['wall']:.1f}s; "
                f"calibration {calibrate:.0f}s)",
                flush=True,
            )
    dense = {"metric": None, "eval_samples": rows[0].get("fidelity_samples") if rows else None}
    return dense, rows


def mobile_lines(block: dict[str, Any], sparsities: Sequence[float]) -> list[str]:
    rows = block["rows"]
    points: list[Any] = [*sparsities, MOBILE_PATTERN]
    out = [
        "EfficientNet-Lite0 (`benchmarks/build_mobile.py`). Metric: top-1 agreement of the "
        f"logits with the dense model on {block['dense']['eval_samples']} held-out image crops "
        "(photographs the calibration crops never come from); the logit cosine follows. One "
        "calibration pass per configuration serves every column (256 crops).",
        "",
        "| method / config | group | " + " | ".join(str(p) for p in points) + " |",
        "|" + "---|" * (len(points) + 2),
    ]
    cell = {(r["label"], r["sparsity"]): r for r in rows}
    for label in dict.fromkeys(r["label"] for r in rows):
        group = next(r for r in rows if r["label"] == label)["group_label"]
        cells = []
        for p in points:
            row = cell.get((label, p))
            if row is None:
                cells.append("")
            elif "error" in row:
                cells.append("error")
            else:
                cells.append(f"{row['top1_agreement']:.4f} / {row['tool_cosine']:.4f}")
        out.append(f"| {label} | {group} | " + " | ".join(cells) + " |")
    off = [
        r
        for r in rows
        if "achieved_sparsity" in r
        and abs(
            r["achieved_sparsity"] - (0.5 if r["sparsity"] == MOBILE_PATTERN else r["sparsity"])
        )
        > 5e-3
    ]
    out += [""]
    out += [
        f"- achieved sparsity off target: {r['label']} at {r['sparsity']}: "
        f"{r['achieved_sparsity']:.4f}"
        for r in off
    ] or ["Achieved sparsity is within 0.005 of the target in every cell."]
    return [*out, ""]


# --------------------------------------------------------------------------- speed and memory


def cli_command(
    files: ModelFiles, method: str, samples: int, output: Path, report: Path
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "onnxprune.cli",
        str(files.onnx),
        "--calib",
        str(files.calib),
        "--sparsity",
        str(SPEED_SPARSITY),
        "--method",
        method,
        "--num-samples",
        str(samples),
        "--batch-size",
        str(BATCH_SIZE),
        "-o",
        str(output),
        "--report",
        str(report),
        "--quiet",
    ]


def plain_inference_command(files: ModelFiles, samples: int) -> list[str]:
    spec = json.dumps({"model": str(files.onnx), "data": str(files.calib), "samples": samples})
    return [sys.executable, str(Path(__file__).resolve()), "--plain-inference", spec]


def plain_inference_main(spec_text: str) -> int:
    """Child process: time default-options onnxruntime inference over the first N samples."""
    import resource

    spec = json.loads(spec_text)
    clock = time.perf_counter()
    session = new_session(Path(spec["model"]))
    data = load_npz(Path(spec["data"]))
    count = min(int(spec["samples"]), len(next(iter(data.values()))))
    setup = time.perf_counter() - clock
    clock = time.perf_counter()
    run_batches(session, data, count, BATCH_SIZE)
    inference = time.perf_counter() - clock
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {"samples": count, "setup": setup, "inference": inference, "peak_rss_kib": peak_kib}
        )
    )
    return 0


def load1() -> float:
    """1-minute load average: above the CPU count, other processes competed for the CPUs."""
    return os.getloadavg()[0]


def timed_run(command: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    clock = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return time.perf_counter() - clock, done


def failure(command: list[str], done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return {
        "error": f"exit code {done.returncode}",
        "command": shlex.join(command),
        "stderr": done.stderr[-4000:],
    }


def run_speed(files: ModelFiles, methods: Sequence[str], work_dir: Path) -> list[dict[str, Any]]:
    print(f"\n== speed: {files.name}")
    rows: list[dict[str, Any]] = []
    output = work_dir / f"{files.name}.speed.onnx"
    for method in methods:
        plain_runs: list[dict[str, Any]] = []
        cli_runs: list[dict[str, Any]] = []
        row: dict[str, Any] = {"model": files.name, "method": method, "samples": SPEED_SAMPLES}
        for rep in range(SPEED_REPS):
            command = plain_inference_command(files, SPEED_SAMPLES)
            load_plain = load1()
            wall, done = timed_run(command)
            if done.returncode != 0:
                row.update(failure(command, done))
                break
            plain = json.loads(done.stdout.strip().splitlines()[-1])
            plain["process_wall"] = wall
            plain["load1"] = load_plain
            plain_runs.append(plain)
            report_path = work_dir / f"{files.name}.{method}.speed.json"
            command = cli_command(files, method, SPEED_SAMPLES, output, report_path)
            load_cli = load1()
            wall, done = timed_run(command)
            if done.returncode != 0:
                row.update(failure(command, done))
                break
            report = json.loads(report_path.read_text())
            cli_runs.append(
                {
                    "wall": wall,
                    "load1": load_cli,
                    "timings": report["timings"],
                    "calibration_samples": report["calibration_samples"],
                    "fidelity_samples": report["fidelity"]["samples"],
                }
            )
            print(
                f"  {method} rep {rep + 1}: plain inference {plain['inference']:.2f}s "
                f"(process {plain['process_wall']:.2f}s), CLI {wall:.2f}s",
                flush=True,
            )
        row["plain_runs"] = plain_runs
        row["cli_runs"] = cli_runs
        if "error" not in row:
            plain_median = statistics.median(r["inference"] for r in plain_runs)
            process_median = statistics.median(r["process_wall"] for r in plain_runs)
            cli_median = statistics.median(r["wall"] for r in cli_runs)
            median_run = sorted(cli_runs, key=lambda r: r["wall"])[len(cli_runs) // 2]
            row.update(
                plain_inference_median=plain_median,
                plain_process_median=process_median,
                cli_median=cli_median,
                ratio=cli_median / plain_median,
                ratio_process=cli_median / process_median,
                target=SPEED_TARGETS.get(method),
                median_timings=median_run["timings"],
                calibration_samples=median_run["calibration_samples"],
                fidelity_samples=median_run["fidelity_samples"],
            )
        rows.append(row)
    output.unlink(missing_ok=True)
    return rows


def startup_time() -> dict[str, Any]:
    """Median wall time of ``onnxprune --version`` (interpreter start and imports)."""
    command = [sys.executable, "-m", "onnxprune.cli", "--version"]
    walls = [timed_run(command)[0] for _ in range(SPEED_REPS)]
    return {"command": shlex.join(command), "median": statistics.median(walls), "runs": walls}


def peak_rss_kib(command: list[str]) -> tuple[int | None, str, subprocess.CompletedProcess[str]]:
    """Peak RSS (KiB) of a fresh process running ``command``, and how it was measured."""
    gnu_time = Path("/usr/bin/time")
    if gnu_time.is_file():
        with tempfile.NamedTemporaryFile("r", suffix=".txt") as out:
            done = subprocess.run(
                [str(gnu_time), "-v", "-o", out.name, *command],
                capture_output=True,
                text=True,
                check=False,
            )
            match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.read())
        return (int(match.group(1)) if match else None), "/usr/bin/time -v", done
    wrapper = (
        "import resource, subprocess, sys\n"
        "code = subprocess.run(sys.argv[1:]).returncode\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *command], capture_output=True, text=True, check=False
    )
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    value = int(last) if last.isdigit() else None
    return value, "getrusage(RUSAGE_CHILDREN)", done


def run_memory(files: ModelFiles, methods: Sequence[str], work_dir: Path) -> list[dict[str, Any]]:
    print(f"\n== memory: {files.name}")
    rows: list[dict[str, Any]] = []
    output = work_dir / f"{files.name}.memory.onnx"
    report_path = work_dir / f"{files.name}.memory.json"
    for method in methods:
        row: dict[str, Any] = {"model": files.name, "method": method, "runs": []}
        for samples in MEMORY_SAMPLES:
            command = cli_command(files, method, samples, output, report_path)
            load = load1()
            clock = time.perf_counter()
            peak, how, done = peak_rss_kib(command)
            wall = time.perf_counter() - clock
            if done.returncode != 0 or peak is None:
                row.update(failure(command, done))
                break
            report = json.loads(report_path.read_text())
            row["runs"].append(
                {
                    "num_samples_arg": samples,
                    "calibration_samples": report["calibration_samples"],
                    "peak_rss_kib": peak,
                    "wall": wall,
                    "load1": load,
                    "measured_with": how,
                }
            )
            print(f"  {method} --num-samples {samples}: peak RSS {peak / 1024:.0f} MiB", flush=True)
        if "error" not in row and len(row["runs"]) == 2:
            small, large = row["runs"]
            row["ratio"] = large["peak_rss_kib"] / small["peak_rss_kib"]
        rows.append(row)
    output.unlink(missing_ok=True)
    report_path.unlink(missing_ok=True)
    return rows


def plain_memory(files: ModelFiles) -> dict[str, Any]:
    """Peak RSS of plain inference over the same calibration samples, for scale."""
    command = plain_inference_command(files, max(MEMORY_SAMPLES))
    peak, how, done = peak_rss_kib(command)
    if done.returncode != 0 or peak is None:
        return failure(command, done)
    return {"model": files.name, "peak_rss_kib": peak, "measured_with": how}


# --------------------------------------------------------------------------- environment


def read_proc(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


# Sections other scripts own (benchmarks/run_structured.py): carried over when rewriting.
KEPT_SECTIONS = (("<!-- structured:begin -->", "<!-- structured:end -->"),)


def write_markdown(path: Path, text: str) -> None:
    """Write ``text``, keeping the sections of ``path`` that other scripts generate."""
    old = path.read_text() if path.exists() else ""
    for begin, end in KEPT_SECTIONS:
        if begin in old and end in old and begin not in text:
            kept = begin + old.split(begin, 1)[1].split(end, 1)[0] + end + "\n"
            text = text.rstrip("\n") + "\n\n" + kept
    path.write_text(text)


def source_digest() -> str:
    """Hash of the onnxprune sources, to notice edits made while the benchmark runs."""
    digest = hashlib.sha256()
    package = Path(onnxprune.__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.rstrip("\n") if done.returncode == 0 else ""

    dirty = [line[3:] for line in git("status", "--porcelain").splitlines() if line.strip()]
    return {"commit": git("rev-parse", "--short", "HEAD") or "unknown", "uncommitted": dirty}


def environment() -> dict[str, Any]:
    mem_kib = read_proc("/proc/meminfo", "MemTotal").split()[0]
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": read_proc("/proc/cpuinfo", "model name"),
        "ram_gib": round(int(mem_kib) / 1024**2, 1) if mem_kib.isdigit() else None,
        "platform": platform.platform(),
        "versions": {
            "onnxprune": onnxprune.__version__,
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
            "onnx": __import__("onnx").__version__,
            "python": platform.python_version(),
        },
    }


# --------------------------------------------------------------------------- markdown


def fmt(value: float | None, digits: int = 4) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.{digits}f}")
    )


def grid_table(
    rows: list[dict[str, Any]],
    sparsities: Sequence[float],
    value: Callable[[dict[str, Any]], float | None],
    digits: int = 4,
    bold: bool = True,
) -> list[str]:
    """Rows = config, columns = sparsity; the best shown value of each column in bold."""
    labels = list(dict.fromkeys(r["label"] for r in rows))
    cell = {(r["label"], r["sparsity"]): r for r in rows}
    best: dict[float, str] = {}
    for s in sparsities:
        shown = [fmt(value(cell[(lb, s)]), digits) for lb in labels if (lb, s) in cell]
        numbers = [float(x) for x in shown if x != "-"]
        if numbers and bold:
            best[s] = fmt(max(numbers), digits)
    header = "| method / config | group | " + " | ".join(f"{s:g}" for s in sparsities) + " |"
    lines = [header, "|" + "---|" * (len(sparsities) + 2)]
    for label in labels:
        some = next(r for r in rows if r["label"] == label)
        group = some.get("group_label") or "-"
        cells = []
        for s in sparsities:
            row = cell.get((label, s))
            if row is None:
                cells.append("")
            elif "error" in row:
                cells.append("error")
            else:
                text = fmt(value(row), digits)
                cells.append(f"**{text}**" if text == best.get(s) else text)
        lines.append(f"| {label} | {group} | " + " | ".join(cells) + " |")
    return lines


def choices_table(rows: list[dict[str, Any]], sparsities: Sequence[float]) -> list[str]:
    """Per cell, the selection group (and scoring variant) a default-group run ended up with."""
    chosen = [r for r in rows if "effective_group" in r and r["group"] is None]
    resolved = [
        r
        for r in chosen
        if r["effective_group"] != r["group_label"].removesuffix(" (default)")
        or r.get("variant") not in (None, r["method"])
    ]
    labels = list(dict.fromkeys(r["label"] for r in resolved))
    if not labels:
        return []
    cell = {(r["label"], r["sparsity"]): r for r in chosen}
    out = [
        "Selection the tool ended up with where the group was left to the method (`report.group`,"
        " and `report.variant` where it names another scoring variant; auto's candidates are "
        "judged on calibration samples, see `group_trials` in results.json; `sensitivity` "
        "where the layers' shares were re-allocated by measured sensitivity):",
        "",
        "| method / config | " + " | ".join(f"{s:g}" for s in sparsities) + " |",
        "|---|" + "---|" * len(sparsities),
    ]
    for label in labels:
        cells = []
        for s in sparsities:
            row = cell.get((label, s))
            if row is None:
                cells.append("")
                continue
            text = row["effective_group"]
            if row.get("variant") not in (None, row["method"]):
                text += f" ({row['variant']})"
            if row.get("allocation") == "sensitivity":
                text += ", sensitivity"
            cells.append(text)
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*out, ""]


# The published methods the default must beat (issue 6), and the metric's name per model.
RIVALS = ("wanda", "ria", "sparsegpt")


def contrib_lines(rows: list[dict[str, Any]], points: Sequence[Any]) -> list[str]:
    """Per point: the default ``contrib`` row against each of wanda, ria and sparsegpt (their
    best row: default or ``min_row_weights=0``), and the fast path against the same."""
    lines = []
    for s in points:
        measured = [r for r in rows if r["sparsity"] == s and "value" in r]
        default = [r for r in measured if r["label"] == "contrib"]
        fast = [r for r in measured if r["label"] == FAST]
        best_rival = {}
        for name in RIVALS:
            candidates = [
                r
                for r in measured
                if r["method"] == name and r["kind"] in ("method", "baseline-mrw0")
            ]
            if candidates:
                best_rival[name] = max(candidates, key=lambda r: r["value"])
        if not default or not best_rival:
            continue
        ours = default[0]["value"]
        top = max(best_rival.values(), key=lambda r: r["value"])
        verdict = "yes" if ours >= top["value"] else "no"
        rivals = ", ".join(f"{name} {r['value']:.4f}" for name, r in best_rival.items())
        line = (
            f"- {s if isinstance(s, str) else f'{s:g}'}: contrib (default) {ours:.4f} vs "
            f"{rivals}: beats all three: **{verdict}** ({ours - top['value']:+.4f} against "
            f"the best, {top['label']})"
        )
        if fast:
            line += f"; fast path {fast[0]['value']:.4f}"
        lines.append(line)
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    env = meta["environment"]
    versions = env["versions"]
    sparsities = meta["sparsities"]
    out = [
        "# onnxprune benchmarks",
        "",
        "Generated by `benchmarks/run_benchmarks.py`; every number below was measured in the "
        "one run described here"
        + (
            f", except the {' and '.join(s for s in SECTIONS if s in meta['kept_sections'])} "
            "section(s), kept from the "
            "earlier run each names (`--keep-sections-from`)"
            if meta.get("kept_sections")
            else ""
        )
        + " (raw numbers: `benchmarks/results.json`). The machine is shared and noisy: "
        "compare numbers within this file, never across runs.",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['started']} (UTC), total runtime {meta['runtime_seconds'] / 60:.1f} min",
        f"- machine: {env['nproc']} CPUs (nproc; usable {env['usable_cpus']}), "
        f"{env['cpu_model']}, {env['ram_gib']} GiB RAM, {env['platform']}",
        f"- versions: onnxprune {versions['onnxprune']}, onnxruntime {versions['onnxruntime']}, "
        f"numpy {versions['numpy']}, onnx {versions['onnx']}, Python {versions['python']}",
        f"- source: git {meta['git']['commit']}"
        + (
            f" plus uncommitted changes to {len(meta['git']['uncommitted'])} file(s) "
            f"({', '.join(meta['git']['uncommitted'][:8])})"
            if meta["git"]["uncommitted"]
            else " (clean tree)"
        ),
    ]
    if meta["source_digest_start"] != meta["source_digest_end"]:
        out.append(
            "- **warning: the onnxprune sources changed while this benchmark ran** "
            f"(digest {meta['source_digest_start']} -> {meta['source_digest_end']}); "
            "CLI subprocesses started after the change ran the new code."
        )
    loads = all_loads(results)
    if loads:
        busy = sum(x > env["nproc"] for x in loads)
        out.append(
            f"- machine load: 1-minute load average sampled before each of the {len(loads)} "
            f"measurements: min {min(loads):.2f}, median {statistics.median(loads):.2f}, max "
            f"{max(loads):.2f}; above {env['nproc']} (the CPU count, i.e. other processes "
            f"competing for the CPUs) before {busy} of them"
        )
    minilm = meta.get("minilm_source") or {}
    if minilm:
        text = minilm["text_source"]
        tok = minilm["tokenization"]
        pad = tok["padding_fraction"]
        out += [
            f"- MiniLM: `{minilm['model']['id']}` from PyPI package "
            f"`{minilm['model']['package']}` {minilm['model']['version']}; text: "
            f"{text['description']} (`{text['package']}` {text['version']}), "
            f"{minilm['split']['calib']} calibration + {minilm['split']['eval']} held-out "
            f"sentences, padded to {tok['seq_len']} tokens; padding fraction "
            f"{pad['calib']:.3f} (calibration) / {pad['eval']:.3f} (held-out)",
        ]
    out += ["", "## 1. Quality", ""]
    out += [
        f"Target sparsities {', '.join(f'{s:g}' for s in sparsities)} over each model's "
        "prunable layers; rows: every public method with its default selection group "
        f"(`min_row_weights={DEFAULT_MIN_ROW_WEIGHTS}`, the default), the hidden `contrib-*` "
        "ablations registered at run time, `contrib` with each selection group given "
        "explicitly, and the non-contrib methods with `min_row_weights=0` (as published: tiny "
        "layers unprotected). The group column is the selection group as configured (what a "
        "default group resolved to is listed below each model). Best "
        "value per column in bold. The contrib line per sparsity compares the default "
        "`contrib` row (`--update` and sensitivity allocation are its defaults) with wanda, "
        "ria and sparsegpt (each its best row: default or `min_row_weights=0`).",
        "",
    ]
    quality = results.get("quality", {})
    for model, block in quality.items():
        rows = block["rows"]
        out += [f"### {model}", ""]
        if model == "mobile":
            out += mobile_lines(block, sparsities)
            out += ["contrib (default) vs the published methods (top-1 agreement):", ""]
            out += contrib_lines(rows, [*sparsities, MOBILE_PATTERN]) or ["- (not measured)"]
            out += [""]
            continue
        if model == "minilm":
            out += [
                f"Metric: cosine between the pruned and the dense model's sentence embeddings "
                f"(masked mean over real tokens of `last_hidden_state`, L2-normalised), mean "
                f"over the {block['dense']['eval_samples']} held-out sentences, computed by "
                f"this script with onnxruntime. Calibration: `num_samples="
                f"{block['num_samples']}` of the {minilm.get('split', {}).get('calib', '?')} "
                "calibration sentences"
                + (
                    f" (the script's default is {MINILM_SAMPLES}; this run set "
                    "`--minilm-samples` to keep the whole run within its time budget)."
                    if block["num_samples"] != MINILM_SAMPLES
                    else "."
                ),
                "",
            ]
            out += grid_table(rows, sparsities, lambda r: r.get("value"))
            out += ["", "Lowest per-sentence embedding cosine:", ""]
            out += grid_table(rows, sparsities, lambda r: r.get("cosine_min"))
            out += [
                "",
                "The tool's own `report.fidelity.outputs[0].cosine` (per-sentence cosine of the "
                "flattened `last_hidden_state`, padding positions included, same held-out "
                "sentences):",
                "",
            ]
            out += grid_table(rows, sparsities, lambda r: r.get("tool_cosine"))
        else:
            dense = block["dense"]["metric"]
            tool_dense = {r["tool_accuracy_original"] for r in rows if "value" in r}
            out += [
                f"Metric: test accuracy ({block['dense']['eval_samples']} labelled test samples, "
                f"`report.fidelity.accuracy_pruned`). Dense accuracy: {fmt(dense)} (this "
                f"script), tool's `accuracy_original`: "
                f"{', '.join(fmt(v) for v in sorted(x for x in tool_dense if x is not None))}. "
                f"Calibration: all {rows[0].get('calibration_samples', '?')} training samples.",
                "",
            ]
            out += grid_table(rows, sparsities, lambda r: r.get("tool_accuracy_pruned"))
            mismatch = [
                r
                for r in rows
                if "value" in r and abs(r["accuracy"] - (r["tool_accuracy_pruned"] or -1)) > 1e-9
            ]
            out += [
                "",
                "Cross-check: this script's own accuracy of each pruned model "
                + (
                    "equals the tool's in every cell."
                    if not mismatch
                    else f"differs from the tool's in {len(mismatch)} cell(s) (see results.json)."
                ),
            ]
        out += ["", "contrib (default) vs the baselines:", ""]
        out += contrib_lines(rows, sparsities) or ["- (not measured in this run)"]
        off = [
            r
            for r in rows
            if "achieved_sparsity" in r and abs(r["achieved_sparsity"] - r["sparsity"]) > 5e-3
        ]
        out += [""]
        if off:
            out.append("Achieved sparsity more than 0.005 away from the target:")
            out += [
                f"- {r['label']} at {r['sparsity']:g}: {r['achieved_sparsity']:.4f}" for r in off
            ]
        else:
            achieved = [r["achieved_sparsity"] - r["sparsity"] for r in rows if "value" in r]
            if achieved:
                out.append(
                    "Achieved sparsity (`report.achieved_sparsity`) is within 0.005 of the "
                    f"target in every cell (largest deviation {max(achieved, key=abs):+.4f})."
                )
        out += ["", "<details><summary>achieved sparsity per cell</summary>", ""]
        out += grid_table(rows, sparsities, lambda r: r.get("achieved_sparsity"), bold=False)
        out += ["", "</details>", ""]
        out += choices_table(rows, sparsities)
    out += error_section(results)
    out += speed_section(results)
    out += memory_section(results)
    return "\n".join(out).rstrip() + "\n"


def all_loads(results: dict[str, Any]) -> list[float]:
    loads = [r["load1"] for b in results.get("quality", {}).values() for r in b["rows"]]
    for row in results.get("speed", {}).get("rows", []):
        loads += [r["load1"] for r in row.get("plain_runs", []) + row.get("cli_runs", [])]
    for row in results.get("memory", {}).get("rows", []):
        loads += [r["load1"] for r in row.get("runs", [])]
    return [x for x in loads if x is not None]


def error_section(results: dict[str, Any]) -> list[str]:
    errors = [r for b in results.get("quality", {}).values() for r in b["rows"] if "error" in r]
    errors += [r for r in results.get("speed", {}).get("rows", []) if "error" in r]
    errors += [r for r in results.get("memory", {}).get("rows", []) if "error" in r]
    if not errors:
        return []
    out = ["## Errors", ""]
    for row in errors:
        call = row.get("call") or row.get("command")
        out += [f"- `{call}`", "", "```", (row.get("traceback") or row.get("stderr", "")), "```"]
    return [*out, ""]


def speed_section(results: dict[str, Any]) -> list[str]:
    speed = results.get("speed")
    if not speed:
        return []
    out = [
        "## 2. Speed",
        "",
        *provenance(results, "speed"),
        f"Whole CLI run (`python -m onnxprune.cli ... --sparsity {SPEED_SPARSITY:g} "
        f"--num-samples {SPEED_SAMPLES} --batch-size {BATCH_SIZE} --quiet`, fresh process, "
        "no `--eval`: the tool also holds out part of the calibration file for its fidelity "
        "check) against plain onnxruntime inference (default session options, batch "
        f"{BATCH_SIZE}) over the same number of calibration samples (the first "
        f"{SPEED_SAMPLES}; every sample of a file has the same shape), run in a fresh process "
        "right before each CLI run. Median of "
        f"{SPEED_REPS} repetitions of each. Ratio = CLI wall time / plain inference time (the "
        "inference loop only, session already created); the process ratio divides by the "
        "whole plain-inference process instead (interpreter start, imports, session "
        "creation, data loading).",
        "",
        f"Interpreter start plus imports alone (`onnxprune --version`): "
        f"{speed['startup']['median']:.2f}s (median).",
        "",
        "| model | method | plain inference (s) | plain process (s) | CLI (s) | ratio | target "
        "| met | ratio to process |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in speed["rows"]:
        if "error" in row:
            out.append(f"| {row['model']} | {row['method']} | error | | | | | | |")
            continue
        target = row["target"]
        met = "-" if target is None else ("met" if row["ratio"] <= target else "**missed**")
        out.append(
            f"| {row['model']} | {row['method']} | {row['plain_inference_median']:.3f} "
            f"| {row['plain_process_median']:.2f} | {row['cli_median']:.2f} "
            f"| {row['ratio']:.2f}x | <= {fmt(target, 1)}x | {met} "
            f"| {row['ratio_process']:.2f}x |"
        )
    phases = sorted({k for r in speed["rows"] if "error" not in r for k in r["median_timings"]})
    order = ["load", "calibrate", "prune", "save", "verify", "total"]
    phases = [p for p in order if p in phases] + [p for p in phases if p not in order]
    out += [
        "",
        "The tool's own phase timings (`report.timings`, seconds) of the median CLI run; "
        "`outside` = CLI wall time minus `total` (interpreter start, imports, argument "
        "parsing, exit):",
        "",
        "| model | method | calib samples | verify samples | "
        + " | ".join(phases)
        + " | outside |",
        "|---|---|---|---|" + "---|" * (len(phases) + 1),
    ]
    for row in speed["rows"]:
        if "error" in row:
            continue
        t = row["median_timings"]
        median_wall = sorted(r["wall"] for r in row["cli_runs"])[len(row["cli_runs"]) // 2]
        out.append(
            f"| {row['model']} | {row['method']} | {row['calibration_samples']} "
            f"| {row['fidelity_samples']} | "
            + " | ".join(fmt(t.get(p), 2) for p in phases)
            + f" | {median_wall - t.get('total', 0.0):.2f} |"
        )
    out += ["", "All repetitions (seconds, in run order):", ""]
    for row in speed["rows"]:
        if "error" in row:
            continue
        plain = ", ".join(f"{r['inference']:.3f}" for r in row["plain_runs"])
        cli = ", ".join(f"{r['wall']:.2f}" for r in row["cli_runs"])
        loads = ", ".join(
            f"{p['load1']:.1f}/{c['load1']:.1f}"
            for p, c in zip(row["plain_runs"], row["cli_runs"], strict=False)
        )
        out.append(
            f"- {row['model']} / {row['method']}: plain inference [{plain}], CLI [{cli}]; "
            f"load average before plain/CLI [{loads}]"
        )
    return [*out, ""]


def memory_section(results: dict[str, Any]) -> list[str]:
    memory = results.get("memory")
    if not memory:
        return []
    how = {r["measured_with"] for row in memory["rows"] for r in row.get("runs", [])}
    out = [
        "## 3. Memory",
        "",
        *provenance(results, "memory"),
        f"Peak RSS of a fresh CLI process (measured with {', '.join(sorted(how)) or '-'}), "
        f"`--sparsity {SPEED_SPARSITY:g} --batch-size {BATCH_SIZE} --quiet`, with "
        f"`--num-samples {MEMORY_SAMPLES[0]}` and `--num-samples {MEMORY_SAMPLES[1]}` (capped "
        "by the tool at what the file holds after its held-out share; the calibration "
        "samples actually used are shown). Target: flat, i.e. ratio close to 1 (here: <= "
        f"{MEMORY_RATIO_OK:g}).",
        "",
        "| model | method | calib samples | peak RSS (MiB) | calib samples | peak RSS (MiB) "
        "| ratio | flat |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in memory["rows"]:
        if "error" in row or len(row["runs"]) != 2:
            out.append(f"| {row['model']} | {row['method']} | error | | | | | |")
            continue
        small, large = row["runs"]
        flat = "yes" if row["ratio"] <= MEMORY_RATIO_OK else "**no**"
        out.append(
            f"| {row['model']} | {row['method']} | {small['calibration_samples']} "
            f"| {small['peak_rss_kib'] / 1024:.0f} | {large['calibration_samples']} "
            f"| {large['peak_rss_kib'] / 1024:.0f} | {row['ratio']:.2f} | {flat} |"
        )
    plain = [p for p in memory.get("plain", []) if "peak_rss_kib" in p]
    if plain:
        out += [
            "",
            "For scale, peak RSS of plain onnxruntime inference (fresh process, default "
            f"options, batch {BATCH_SIZE}, {max(MEMORY_SAMPLES)} samples): "
            + ", ".join(f"{p['model']} {p['peak_rss_kib'] / 1024:.0f} MiB" for p in plain)
            + ".",
        ]
    return [*out, ""]


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("bench_out"))
    parser.add_argument("--quick", action="store_true", help="digits only, 2 sparsities")
    parser.add_argument("--methods", nargs="+", help="only rows whose method is one of these")
    parser.add_argument("--labels", nargs="+", help="only quality rows with one of these labels")
    parser.add_argument("--sparsities", nargs="+", type=float)
    parser.add_argument("--models", nargs="+", choices=ALL_MODELS)
    parser.add_argument(
        "--minilm-samples",
        type=int,
        default=MINILM_SAMPLES,
        help="calibration samples for MiniLM in the quality grid",
    )
    parser.add_argument(
        "--sections", nargs="+", choices=("quality", "speed", "memory"), default=None
    )
    parser.add_argument("--markdown", type=Path, help="where to write BENCHMARKS.md")
    parser.add_argument("--results", type=Path, help="where to write results.json")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the markdown from --results"
    )
    parser.add_argument(
        "--keep-sections-from",
        type=Path,
        metavar="RESULTS",
        help="take the sections this run did not measure (speed, memory) from an earlier "
        "results.json; the markdown names the run each section comes from",
    )
    parser.add_argument("--plain-inference", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


SECTIONS = ("quality", "speed", "memory")


def keep_sections(results: dict[str, Any], earlier: dict[str, Any]) -> dict[str, Any]:
    """``results`` plus the sections it lacks from ``earlier``, each labelled with the run it
    comes from (``meta.kept_sections``)."""
    merged = dict(results)
    merged["meta"] = dict(results["meta"])
    kept = dict(results["meta"].get("kept_sections", {}))
    for section in SECTIONS:
        if section in results or section not in earlier:
            continue
        merged[section] = earlier[section]
        meta = earlier["meta"]
        kept[section] = {
            "command": meta["command"],
            "started": meta["started"],
            "commit": meta["git"]["commit"],
            "clean": not meta["git"]["uncommitted"],
            "runtime_seconds": meta["runtime_seconds"],
        }
    merged["meta"]["kept_sections"] = kept
    return merged


def provenance(results: dict[str, Any], section: str) -> list[str]:
    """A line naming the earlier run a kept section comes from (nothing for this run's)."""
    kept = results["meta"].get("kept_sections", {}).get(section)
    if not kept:
        return []
    return [
        f"*This section comes from an earlier run, not the one described at the top:* "
        f"`{kept['command']}` on {kept['started']} (UTC), git {kept['commit']}"
        + (" (clean tree)" if kept["clean"] else " (with uncommitted changes)")
        + f", {kept['runtime_seconds'] / 60:.1f} min. The `contrib` measured there is the "
        "code of that commit, with that commit's defaults.",
        "",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plain_inference:
        return plain_inference_main(args.plain_inference)
    partial = bool(
        args.quick or args.models or args.methods or args.labels or args.sparsities or args.sections
    )
    out_dir: Path = args.out_dir.resolve()
    markdown = args.markdown or (out_dir / "BENCHMARKS.md" if partial else DEFAULT_MARKDOWN)
    results_path = args.results or (out_dir / "results.json" if partial else DEFAULT_RESULTS)
    earlier = json.loads(args.keep_sections_from.read_text()) if args.keep_sections_from else None
    if args.render_only:
        loaded = json.loads(results_path.read_text())
        if earlier is not None:
            loaded = keep_sections(loaded, earlier)
            results_path.write_text(json.dumps(loaded, indent=1) + "\n")
        write_markdown(markdown, render_markdown(loaded))
        print(f"wrote {markdown}")
        return 0

    started = time.perf_counter()
    models = list(args.models or (DIGITS_MODELS if args.quick else ALL_MODELS))
    sparsities = list(args.sparsities or (QUICK_SPARSITIES if args.quick else SPARSITIES))
    sections = list(args.sections or ("quality", "speed", "memory"))
    configs = grid_configs(args.methods)
    if args.labels:
        configs = [c for c in configs if c.label in args.labels]
    shown_argv = list(argv) if argv is not None else sys.argv[1:]
    results: dict[str, Any] = {
        "meta": {
            "command": shlex.join(["python", "benchmarks/run_benchmarks.py", *shown_argv]),
            "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
            "environment": environment(),
            "git": git_state(),
            "source_digest_start": source_digest(),
            "models": models,
            "sparsities": sparsities,
            "minilm_samples": args.minilm_samples,
            "configs": [asdict(c) for c in configs],
        }
    }
    print(json.dumps(results["meta"]["environment"], indent=1))
    models_dir = out_dir / "models"
    work_dir = out_dir / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    results["meta"]["minilm_source"] = ensure_models(models_dir, models)
    files = {name: model_files(models_dir, name) for name in models}

    def save() -> None:
        results["meta"]["runtime_seconds"] = time.perf_counter() - started
        results["meta"]["source_digest_end"] = source_digest()
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=1) + "\n")

    if "quality" in sections:
        results["quality"] = {}
        for name in models:
            samples = args.minilm_samples if name == "minilm" else None
            if name == "mobile":
                dense, rows = run_quality_mobile(files[name], sparsities, args.methods, args.labels)
                results["quality"][name] = {"dense": dense, "num_samples": None, "rows": rows}
                save()
                continue
            model_configs = (
                [c for c in configs if c.kind in ("method", "fast")]
                if name == "minilm"
                else configs
            )
            dense, rows = run_quality(files[name], model_configs, sparsities, samples, work_dir)
            results["quality"][name] = {"dense": dense, "num_samples": samples, "rows": rows}
            save()
    speed_methods = [m for m in SPEED_METHODS if not args.methods or m in args.methods]
    resource_models = [m for m in SPEED_MODELS if m in models]
    if "speed" in sections and speed_methods and resource_models:
        results["speed"] = {"startup": startup_time(), "rows": []}
        for name in resource_models:
            results["speed"]["rows"] += run_speed(files[name], speed_methods, work_dir)
            save()
    if "memory" in sections and speed_methods and resource_models:
        results["memory"] = {"rows": [], "plain": []}
        for name in resource_models:
            results["memory"]["plain"].append(plain_memory(files[name]))
            results["memory"]["rows"] += run_memory(files[name], speed_methods, work_dir)
            save()
    if earlier is not None:
        results = keep_sections(results, earlier)
    save()
    markdown.parent.mkdir(parents=True, exist_ok=True)
    write_markdown(markdown, render_markdown(results))
    shutil.rmtree(work_dir, ignore_errors=True)
    print(f"\nwrote {markdown} and {results_path} in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
