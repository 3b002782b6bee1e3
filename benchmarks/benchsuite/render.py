"""BENCHMARKS.md from a ``Results`` record: the run's header, then each section's renderer."""

from __future__ import annotations

import statistics
from pathlib import Path

from . import prose
from .plan import QUICK
from .render_quality import quality_section
from .render_resources import memory_section, speed_section
from .results import SECTIONS, Results, RunMeta


def _source_lines(meta: RunMeta) -> list[str]:
    git = meta.git
    changes = (
        f" plus uncommitted changes to {len(git.uncommitted)} file(s) "
        f"({', '.join(git.uncommitted[:8])})"
        if git.uncommitted
        else " (clean tree)"
    )
    out = [f"- source: git {git.commit}{changes}"]
    if meta.source_digest_start != meta.source_digest_end:
        start, end = meta.source_digest_start, meta.source_digest_end
        out.append(prose.SOURCES_CHANGED.format(start=start, end=end))
    return out


def _quick_line(meta: RunMeta) -> list[str]:
    if meta.plan != QUICK:
        return []
    plan = meta.plan
    return [prose.QUICK.format(samples=plan.quality_samples, reps=plan.speed_reps)]


def _load_line(results: Results) -> list[str]:
    loads = results.loads()
    if not loads:
        return []
    nproc = results.meta.environment.nproc or 0
    busy = sum(x > nproc for x in loads)
    return [
        prose.LOAD.format(
            count=len(loads), low=min(loads), median=statistics.median(loads), high=max(loads),
            nproc=results.meta.environment.nproc, busy=busy,
        )
    ]  # fmt: skip


def _minilm_line(meta: RunMeta) -> list[str]:
    source = meta.minilm_source or {}
    if not source:
        return []
    tok = source["tokenization"]
    return [
        prose.MINILM_SOURCE.format(
            model=source["model"], text=source["text_source"], split=source["split"], tok=tok,
            pad=tok["padding_fraction"],
        )
    ]  # fmt: skip


def header(results: Results) -> list[str]:
    meta = results.meta
    env, versions = meta.environment, meta.environment.versions
    kept = ""
    if meta.kept_sections:
        sections = " and ".join(s for s in SECTIONS if s in meta.kept_sections)
        kept = prose.KEPT.format(sections=sections)
    return [
        "# onnxprune benchmarks",
        "",
        prose.HEADER.format(kept=kept),
        "",
        f"- command: `{meta.command}`",
        f"- date: {meta.started} (UTC), total runtime {(meta.runtime_seconds or 0.0) / 60:.1f} min",
        f"- machine: {env.nproc} CPUs (nproc; usable {env.usable_cpus}), "
        f"{env.cpu_model}, {env.ram_gib} GiB RAM, {env.platform}",
        f"- versions: onnxprune {versions['onnxprune']}, onnxruntime {versions['onnxruntime']}, "
        f"numpy {versions['numpy']}, onnx {versions['onnx']}, Python {versions['python']}",
        *_source_lines(meta),
        *_quick_line(meta),
        *_load_line(results),
        *_minilm_line(meta),
    ]


def error_section(results: Results) -> list[str]:
    failed = [r.failure for _, b in results.quality_blocks() for r in b.rows if r.failure]
    failed += [r.failure for r in (results.speed.rows if results.speed else ()) if r.failure]
    failed += [r.failure for r in (results.memory.rows if results.memory else ()) if r.failure]
    if not failed:
        return []
    out = ["## Errors", ""]
    for failure in failed:
        call = failure.call or failure.command
        out += [f"- `{call}`", "", "```", failure.traceback or failure.stderr or "", "```"]
    return [*out, ""]


def render_markdown(results: Results) -> str:
    out = header(results)
    out += quality_section(results)
    out += error_section(results)
    out += speed_section(results)
    out += memory_section(results)
    return "\n".join(out).rstrip() + "\n"


# Sections other scripts own (benchmarks/run_structured.py): carried over when rewriting.
KEPT_SECTIONS = (("<!-- structured:begin -->", "<!-- structured:end -->"),)


def write_markdown(path: Path, text: str) -> None:
    """Write ``text``, keeping the sections of ``path`` that other scripts generate."""
    old = path.read_text() if path.exists() else ""
    for begin, end in KEPT_SECTIONS:
        if begin in old and end in old and begin not in text:
            kept = begin + old.split(begin, 1)[1].split(end, 1)[0] + end + "\n"
            text = text.rstrip("\n") + "\n\n" + kept
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
