"""Sections 2 and 3 of BENCHMARKS.md: speed against plain inference, peak memory."""

from __future__ import annotations

from . import prose
from .models import BATCH_SIZE
from .plan import FULL, MEMORY_RATIO_OK, SPEED_SPARSITY
from .records import SpeedRow, SpeedSection
from .results import Results
from .tables import fmt, provenance

PHASE_ORDER = ["load", "calibrate", "prune", "save", "verify", "total"]


def _speed_table(rows: tuple[SpeedRow, ...]) -> list[str]:
    out = [
        "| model | method | plain inference (s) | plain process (s) | CLI (s) | ratio | target "
        "| met | ratio to process |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        s = row.summary
        if s is None or row.failure:
            out.append(f"| {row.model} | {row.method} | error | | | | | | |")
            continue
        met = "-" if s.target is None else ("met" if s.ratio <= s.target else "**missed**")
        out.append(
            f"| {row.model} | {row.method} | {s.plain_inference_median:.3f} "
            f"| {s.plain_process_median:.2f} | {s.cli_median:.2f} "
            f"| {s.ratio:.2f}x | <= {fmt(s.target, 1)}x | {met} "
            f"| {s.ratio_process:.2f}x |"
        )
    return out


def _phase_table(rows: list[SpeedRow]) -> list[str]:
    found = sorted({k for r in rows if r.summary for k in r.summary.median_timings})
    phases = [p for p in PHASE_ORDER if p in found] + [p for p in found if p not in PHASE_ORDER]
    out = [
        "",
        prose.SPEED_PHASES,
        "",
        "| model | method | calib samples | verify samples | "
        + " | ".join(phases)
        + " | outside |",
        "|---|---|---|---|" + "---|" * (len(phases) + 1),
    ]
    for row in rows:
        assert row.summary is not None
        t = row.summary.median_timings
        median_wall = sorted(r.wall for r in row.cli_runs)[len(row.cli_runs) // 2]
        out.append(
            f"| {row.model} | {row.method} | {row.summary.calibration_samples} "
            f"| {row.summary.fidelity_samples} | "
            + " | ".join(fmt(t.get(p), 2) for p in phases)
            + f" | {median_wall - t.get('total', 0.0):.2f} |"
        )
    return out


def _repetitions(rows: list[SpeedRow]) -> list[str]:
    out = ["", "All repetitions (seconds, in run order):", ""]
    for row in rows:
        plain = ", ".join(f"{r.inference:.3f}" for r in row.plain_runs)
        cli = ", ".join(f"{r.wall:.2f}" for r in row.cli_runs)
        loads = ", ".join(
            f"{p.load1:.1f}/{c.load1:.1f}"
            for p, c in zip(row.plain_runs, row.cli_runs, strict=False)
        )
        out.append(
            f"- {row.model} / {row.method}: plain inference [{plain}], CLI [{cli}]; "
            f"load average before plain/CLI [{loads}]"
        )
    return out


def speed_section(results: Results) -> list[str]:
    speed: SpeedSection | None = results.speed
    if not speed:
        return []
    plan = results.meta.plan or FULL
    intro = prose.SPEED_INTRO.format(
        sparsity=SPEED_SPARSITY, samples=plan.speed_samples, batch=BATCH_SIZE,
        reps=plan.speed_reps,
    )  # fmt: skip
    out = ["## 2. Speed", "", *provenance(results, "speed"), intro, ""]
    out += [
        f"Interpreter start plus imports alone (`onnxprune --version`): "
        f"{speed.startup.median:.2f}s (median).",
        "",
    ]
    measured = [r for r in speed.rows if r.summary is not None and not r.failure]
    out += _speed_table(speed.rows) + _phase_table(measured) + _repetitions(measured)
    return [*out, ""]


def memory_section(results: Results) -> list[str]:
    memory = results.memory
    if not memory:
        return []
    plan = results.meta.plan or FULL
    how = {r.measured_with for row in memory.rows for r in row.runs}
    small_n, large_n = plan.memory_samples
    intro = prose.MEMORY_INTRO.format(
        how=", ".join(sorted(how)) or "-", sparsity=SPEED_SPARSITY, batch=BATCH_SIZE,
        small=small_n, large=large_n, ok=MEMORY_RATIO_OK,
    )  # fmt: skip
    out = ["## 3. Memory", "", *provenance(results, "memory"), intro, ""]
    out += [
        "| model | method | calib samples | peak RSS (MiB) | calib samples | peak RSS (MiB) "
        "| ratio | flat |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in memory.rows:
        if row.failure or len(row.runs) != 2 or row.ratio is None:
            out.append(f"| {row.model} | {row.method} | error | | | | | |")
            continue
        small, large = row.runs
        flat = "yes" if row.ratio <= MEMORY_RATIO_OK else "**no**"
        out.append(
            f"| {row.model} | {row.method} | {small.calibration_samples} "
            f"| {small.peak_rss_kib / 1024:.0f} | {large.calibration_samples} "
            f"| {large.peak_rss_kib / 1024:.0f} | {row.ratio:.2f} | {flat} |"
        )
    plain = [p for p in memory.plain if p.peak_rss_kib is not None]
    if plain:
        models = ", ".join(f"{p.model} {(p.peak_rss_kib or 0) / 1024:.0f} MiB" for p in plain)
        scale = prose.PLAIN_MEMORY.format(batch=BATCH_SIZE, samples=large_n, models=models)
        out += ["", scale]
    return [*out, ""]
