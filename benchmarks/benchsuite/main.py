"""The command line: which sections, models and rows a run measures, and where it writes."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .codec import to_json
from .machine import environment, git_state, source_digest
from .memory import plain_memory, run_memory
from .mobile import run_quality_mobile
from .models import (
    ALL_MODELS,
    DEFAULT_MARKDOWN,
    DEFAULT_RESULTS,
    DIGITS_MODELS,
    METRIC,
    ModelFiles,
    copy_digits_bundle,
    ensure_models,
    model_files,
)
from .plan import (
    FULL,
    MINILM_SAMPLES,
    QUICK,
    QUICK_SPARSITIES,
    SHORT_KINDS,
    SPARSITIES,
    SPEED_METHODS,
    SPEED_MODELS,
    Plan,
    grid_configs,
)
from .processes import plain_inference_main
from .quality import run_quality
from .records import GridConfig, MemorySection, QualityBlock, SpeedSection
from .render import render_markdown, write_markdown
from .results import SECTIONS, Results, RunMeta, keep_sections, load_results, save_results
from .speed import run_speed, startup_time

USAGE = """\
--quick runs every section on the digits models only (the committed bundle, copied into
OUT_DIR/models; built with benchmarks/build_digits.py when the checkout lacks it), at
sparsities 0.5 and 0.9, with the methods' default rows, 64 calibration samples and one
repetition: a smoke test of the whole suite. It and any run restricted with --models /
--methods / --labels / --sparsities / --sections write BENCHMARKS.md and results.json into
--out-dir instead of over the published files (override with --markdown and --results).
--render-only regenerates the markdown from an existing results file."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark onnxprune: quality grid, speed against plain inference, peak "
        "memory; one run.",
        epilog=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--out-dir", type=Path, default=Path("bench_out"))
    add("--quick", action="store_true", help="digits only, few samples: a smoke test")
    add("--methods", nargs="+", help="only rows whose method is one of these")
    add("--labels", nargs="+", help="only quality rows with one of these labels")
    add("--sparsities", nargs="+", type=float)
    add("--models", nargs="+", choices=ALL_MODELS)
    add("--minilm-samples", type=int, default=MINILM_SAMPLES,
        help="calibration samples for MiniLM in the quality grid")  # fmt: skip
    add("--sections", nargs="+", choices=SECTIONS, default=None)
    add("--markdown", type=Path, help="where to write BENCHMARKS.md")
    add("--results", type=Path, help="where to write results.json")
    add("--render-only", action="store_true", help="rewrite the markdown from --results")
    add("--keep-sections-from", type=Path, metavar="RESULTS",
        help="take the sections this run did not measure (speed, memory) from an earlier "
        "results.json; the markdown names the run each section comes from")  # fmt: skip
    add("--plain-inference", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def output_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """Where the markdown and the results go: the published files only for a full run."""
    partial = bool(
        args.quick or args.models or args.methods or args.labels or args.sparsities or args.sections
    )
    out_dir: Path = args.out_dir.resolve()
    markdown = args.markdown or (out_dir / "BENCHMARKS.md" if partial else DEFAULT_MARKDOWN)
    results = args.results or (out_dir / "results.json" if partial else DEFAULT_RESULTS)
    published = {DEFAULT_MARKDOWN.resolve(), DEFAULT_RESULTS.resolve()}
    if args.quick and {markdown.resolve(), results.resolve()} & published:
        sys.exit("run_benchmarks.py: --quick never writes the published BENCHMARKS.md or results")
    return markdown, results


def render_only(markdown: Path, results_path: Path, earlier: Results | None) -> int:
    loaded = load_results(results_path)
    if earlier is not None:
        loaded = keep_sections(loaded, earlier)
        save_results(results_path, loaded)
    write_markdown(markdown, render_markdown(loaded))
    print(f"wrote {markdown}")
    return 0


@dataclass
class Run:
    """One run in progress: its options, models and the results measured so far (saved after
    every model, so an interrupted run keeps what it measured)."""

    args: argparse.Namespace
    plan: Plan
    results: Results
    results_path: Path
    files: dict[str, ModelFiles]
    work_dir: Path
    started: float

    def save(self, **sections: object) -> None:
        meta = dataclasses.replace(self.results.meta, runtime_seconds=time.perf_counter()
                                   - self.started, source_digest_end=source_digest())  # fmt: skip
        self.results = dataclasses.replace(self.results, meta=meta, **sections)  # type: ignore[arg-type]
        save_results(self.results_path, self.results)


def start(args: argparse.Namespace, argv: Sequence[str] | None, results_path: Path) -> Run:
    started = time.perf_counter()
    plan = QUICK if args.quick else FULL
    models = tuple(args.models or (DIGITS_MODELS if args.quick else ALL_MODELS))
    sparsities = tuple(args.sparsities or (QUICK_SPARSITIES if args.quick else SPARSITIES))
    configs = grid_configs(args.methods)
    if args.labels:
        configs = [c for c in configs if c.label in args.labels]
    shown_argv = list(argv) if argv is not None else sys.argv[1:]
    out_dir = args.out_dir.resolve()
    meta = RunMeta(
        command=shlex.join(["python", "benchmarks/run_benchmarks.py", *shown_argv]),
        started=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        environment=environment(), git=git_state(), source_digest_start=source_digest(),
        models=models, sparsities=sparsities, minilm_samples=args.minilm_samples,
        configs=tuple(configs), plan=plan,
    )  # fmt: skip
    print(json.dumps(to_json(meta.environment), indent=1))
    models_dir, work_dir = out_dir / "models", out_dir / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    missing = any(not p.is_file() for n in models if n in DIGITS_MODELS
                  for p in model_files(models_dir, n).paths())  # fmt: skip
    if args.quick and missing:
        copy_digits_bundle(models_dir)
    source = ensure_models(models_dir, models)
    meta = dataclasses.replace(meta, minilm_source=source)
    files = {name: model_files(models_dir, name) for name in models}
    return Run(args, plan, Results(meta), results_path, files, work_dir, started)


def configs_for(run: Run, model: str) -> list[GridConfig]:
    kinds = SHORT_KINDS if METRIC[model] == "embedding" else run.plan.digits_kinds
    return [c for c in run.results.meta.configs if kinds is None or c.kind in kinds]


def measure_quality(run: Run) -> None:
    blocks: dict[str, QualityBlock] = {}
    args, sparsities = run.args, run.results.meta.sparsities
    for name, files in run.files.items():
        if METRIC[name] == "agreement":
            blocks[name] = run_quality_mobile(files, sparsities, args.methods, args.labels)
        else:
            samples = args.minilm_samples if METRIC[name] == "embedding" else None
            samples = run.plan.quality_samples if samples is None else samples
            block = run_quality(files, configs_for(run, name), sparsities, samples, run.work_dir)
            blocks[name] = block
        run.save(quality=dict(blocks))


def measure_resources(run: Run, sections: Sequence[str]) -> None:
    methods = [m for m in SPEED_METHODS if not run.args.methods or m in run.args.methods]
    models = [m for m in SPEED_MODELS if m in run.files]
    if not (methods and models):
        return
    if "speed" in sections:
        startup = startup_time(run.plan)
        speed = SpeedSection(startup, ())
        for name in models:
            rows = run_speed(run.files[name], methods, run.work_dir, run.plan)
            speed = dataclasses.replace(speed, rows=speed.rows + tuple(rows))
            run.save(speed=speed)
    if "memory" in sections:
        memory = MemorySection((), ())
        for name in models:
            plain = (*memory.plain, plain_memory(run.files[name], run.plan))
            measured = run_memory(run.files[name], methods, run.work_dir, run.plan)
            memory = MemorySection(memory.rows + tuple(measured), plain)
            run.save(memory=memory)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plain_inference:
        return plain_inference_main(args.plain_inference)
    markdown, results_path = output_paths(args)
    earlier = load_results(args.keep_sections_from) if args.keep_sections_from else None
    if args.render_only:
        return render_only(markdown, results_path, earlier)
    run = start(args, argv, results_path)
    sections = list(args.sections or SECTIONS)
    if "quality" in sections:
        measure_quality(run)
    measure_resources(run, sections)
    if earlier is not None:
        run.results = keep_sections(run.results, earlier)
    run.save()
    write_markdown(markdown, render_markdown(run.results))
    shutil.rmtree(run.work_dir, ignore_errors=True)
    elapsed = time.perf_counter() - run.started
    print(f"\nwrote {markdown} and {results_path} in {elapsed:.0f}s")
    return 0
