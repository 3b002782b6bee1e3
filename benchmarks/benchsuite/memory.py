"""Section 3: peak RSS of a fresh CLI process with a small and a large calibration set."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from .machine import load1
from .models import ModelFiles
from .plan import Plan
from .processes import cli_command, failure, peak_rss_kib, plain_inference_command
from .records import Failure, MemoryRow, MemoryRun, PlainMemory


def _memory_run(
    files: ModelFiles, method: str, samples: int, work_dir: Path
) -> MemoryRun | Failure:
    output = work_dir / f"{files.name}.memory.onnx"
    report_path = work_dir / f"{files.name}.memory.json"
    command = cli_command(files, method, samples, output, report_path)
    load = load1()
    clock = time.perf_counter()
    peak, how, done = peak_rss_kib(command)
    wall = time.perf_counter() - clock
    output.unlink(missing_ok=True)
    if done.returncode != 0 or peak is None:
        return failure(command, done)
    report = json.loads(report_path.read_text())
    report_path.unlink()
    return MemoryRun(
        num_samples_arg=samples,
        calibration_samples=report["calibration_samples"],
        peak_rss_kib=peak,
        wall=wall,
        load1=load,
        measured_with=how,
    )


def run_memory(
    files: ModelFiles, methods: Sequence[str], work_dir: Path, plan: Plan
) -> list[MemoryRow]:
    print(f"\n== memory: {files.name}")
    rows: list[MemoryRow] = []
    for method in methods:
        runs: list[MemoryRun] = []
        failed: Failure | None = None
        for samples in plan.memory_samples:
            measured = _memory_run(files, method, samples, work_dir)
            if isinstance(measured, Failure):
                failed = measured
                break
            runs.append(measured)
            peak = measured.peak_rss_kib / 1024
            print(f"  {method} --num-samples {samples}: peak RSS {peak:.0f} MiB", flush=True)
        ratio = None
        if failed is None and len(runs) == 2:
            ratio = runs[1].peak_rss_kib / runs[0].peak_rss_kib
        rows.append(MemoryRow(files.name, method, tuple(runs), failed, ratio))
    return rows


def plain_memory(files: ModelFiles, plan: Plan) -> PlainMemory:
    """Peak RSS of plain inference over the same calibration samples, for scale."""
    command = plain_inference_command(files, max(plan.memory_samples))
    peak, how, done = peak_rss_kib(command)
    if done.returncode != 0 or peak is None:
        return PlainMemory(failure=failure(command, done))
    return PlainMemory(model=files.name, peak_rss_kib=peak, measured_with=how)
