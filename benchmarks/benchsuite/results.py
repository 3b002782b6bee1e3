"""A whole run's results: what ran where (``RunMeta``) and each section's records."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .codec import OMIT, from_json, to_json
from .plan import Plan
from .records import GridConfig, MemorySection, QualityBlock, SpeedSection

SECTIONS = ("quality", "speed", "memory")


@dataclass(frozen=True)
class Environment:
    nproc: int | None
    usable_cpus: int | None
    cpu_model: str
    ram_gib: float | None
    platform: str
    versions: dict[str, str]


@dataclass(frozen=True)
class GitState:
    commit: str
    uncommitted: tuple[str, ...]


@dataclass(frozen=True)
class KeptSection:
    """The earlier run a section was taken from (``--keep-sections-from``)."""

    command: str
    started: str
    commit: str
    clean: bool
    runtime_seconds: float


@dataclass(frozen=True)
class RunMeta:
    command: str
    started: str  # UTC, "YYYY-MM-DD HH:MM"
    environment: Environment
    git: GitState
    source_digest_start: str
    models: tuple[str, ...]
    sparsities: tuple[float, ...]
    minilm_samples: int
    configs: tuple[GridConfig, ...]
    plan: Plan | None = field(default=None, metadata=OMIT)  # None: the full plan (plan.FULL)
    # build_minilm.build's record of the MiniLM model, text and split ({} without MiniLM).
    minilm_source: dict[str, Any] | None = field(default=None, metadata=OMIT)
    # Set when the results are saved (after every model of a section).
    runtime_seconds: float | None = field(default=None, metadata=OMIT)
    source_digest_end: str | None = field(default=None, metadata=OMIT)
    kept_sections: dict[str, KeptSection] | None = field(default=None, metadata=OMIT)


@dataclass(frozen=True)
class Results:
    meta: RunMeta
    quality: dict[str, QualityBlock] | None = field(default=None, metadata=OMIT)
    speed: SpeedSection | None = field(default=None, metadata=OMIT)
    memory: MemorySection | None = field(default=None, metadata=OMIT)

    def quality_blocks(self) -> Iterator[tuple[str, QualityBlock]]:
        yield from (self.quality or {}).items()

    def loads(self) -> list[float]:
        """Every 1-minute load average sampled before a measurement, in section order."""
        loads = [r.load1 for _, b in self.quality_blocks() for r in b.rows]
        for row in self.speed.rows if self.speed else ():
            loads += [p.load1 for p in row.plain_runs] + [c.load1 for c in row.cli_runs]
        for mrow in self.memory.rows if self.memory else ():
            loads += [m.load1 for m in mrow.runs]
        return [x for x in loads if x is not None]


def load_results(path: Path) -> Results:
    return from_json(Results, json.loads(path.read_text()))


def save_results(path: Path, results: Results) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(results), indent=1) + "\n")


def keep_sections(results: Results, earlier: Results) -> Results:
    """``results`` plus the sections it lacks from ``earlier``, each labelled with the run it
    comes from (``meta.kept_sections``)."""
    kept = dict(results.meta.kept_sections or {})
    taken: dict[str, Any] = {}
    for section in SECTIONS:
        if getattr(results, section) is not None or getattr(earlier, section) is None:
            continue
        taken[section] = getattr(earlier, section)
        meta = earlier.meta
        kept[section] = KeptSection(
            command=meta.command,
            started=meta.started,
            commit=meta.git.commit,
            clean=not meta.git.uncommitted,
            runtime_seconds=meta.runtime_seconds or 0.0,
        )
    meta = dataclasses.replace(results.meta, kept_sections=kept)
    return dataclasses.replace(results, meta=meta, **taken)
