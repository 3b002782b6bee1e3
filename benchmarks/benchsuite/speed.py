"""Section 2: a whole CLI run against plain onnxruntime inference, side by side."""

from __future__ import annotations

import json
import shlex
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from .machine import load1
from .models import ModelFiles
from .plan import SPEED_TARGETS, Plan
from .processes import cli_command, failure, plain_inference_command, timed_run
from .records import CliRun, Failure, PlainRun, SpeedRow, SpeedSummary, Startup


def _repetition(
    files: ModelFiles, method: str, samples: int, work_dir: Path
) -> tuple[PlainRun, CliRun] | Failure:
    """One plain-inference process, then one CLI process right after it."""
    command = plain_inference_command(files, samples)
    load_plain = load1()
    wall, done = timed_run(command)
    if done.returncode != 0:
        return failure(command, done)
    plain = json.loads(done.stdout.strip().splitlines()[-1])
    plain_run = PlainRun(**plain, process_wall=wall, load1=load_plain)
    report_path = work_dir / f"{files.name}.{method}.speed.json"
    output = work_dir / f"{files.name}.speed.onnx"
    command = cli_command(files, method, samples, output, report_path)
    load_cli = load1()
    wall, done = timed_run(command)
    output.unlink(missing_ok=True)
    if done.returncode != 0:
        return failure(command, done)
    report = json.loads(report_path.read_text())
    cli_run = CliRun(
        wall=wall,
        load1=load_cli,
        timings=report["timings"],
        calibration_samples=report["calibration_samples"],
        fidelity_samples=report["fidelity"]["samples"],
    )
    return plain_run, cli_run


def summarise(
    method: str, plain_runs: Sequence[PlainRun], cli_runs: Sequence[CliRun]
) -> SpeedSummary:
    plain_median = statistics.median(r.inference for r in plain_runs)
    process_median = statistics.median(r.process_wall for r in plain_runs)
    cli_median = statistics.median(r.wall for r in cli_runs)
    median_run = sorted(cli_runs, key=lambda r: r.wall)[len(cli_runs) // 2]
    return SpeedSummary(
        plain_inference_median=plain_median,
        plain_process_median=process_median,
        cli_median=cli_median,
        ratio=cli_median / plain_median,
        ratio_process=cli_median / process_median,
        target=SPEED_TARGETS.get(method),
        median_timings=median_run.timings,
        calibration_samples=median_run.calibration_samples,
        fidelity_samples=median_run.fidelity_samples,
    )


def run_speed(
    files: ModelFiles, methods: Sequence[str], work_dir: Path, plan: Plan
) -> list[SpeedRow]:
    print(f"\n== speed: {files.name}")
    rows: list[SpeedRow] = []
    for method in methods:
        plain_runs: list[PlainRun] = []
        cli_runs: list[CliRun] = []
        failed: Failure | None = None
        for rep in range(plan.speed_reps):
            measured = _repetition(files, method, plan.speed_samples, work_dir)
            if isinstance(measured, Failure):
                failed = measured
                break
            plain_runs.append(measured[0])
            cli_runs.append(measured[1])
            print(
                f"  {method} rep {rep + 1}: plain inference {measured[0].inference:.2f}s "
                f"(process {measured[0].process_wall:.2f}s), CLI {measured[1].wall:.2f}s",
                flush=True,
            )
        summary = None if failed else summarise(method, plain_runs, cli_runs)
        runs = (tuple(plain_runs), tuple(cli_runs))
        rows.append(SpeedRow(files.name, method, plan.speed_samples, failed, *runs, summary))
    return rows


def startup_time(plan: Plan) -> Startup:
    """Median wall time of ``onnxprune --version`` (interpreter start and imports)."""
    command = [sys.executable, "-m", "onnxprune.cli", "--version"]
    walls = [timed_run(command)[0] for _ in range(plan.speed_reps)]
    return Startup(command=shlex.join(command), median=statistics.median(walls), runs=tuple(walls))
