"""Shared pieces of the markdown: number formatting, the grid table, kept-section notes."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from . import prose
from .results import Results


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def provenance(results: Results, section: str) -> list[str]:
    """A line naming the earlier run a kept section comes from (nothing for this run's)."""
    kept = (results.meta.kept_sections or {}).get(section)
    if not kept:
        return []
    clean = " (clean tree)" if kept.clean else " (with uncommitted changes)"
    text = prose.PROVENANCE.format(
        command=kept.command, started=kept.started, commit=kept.commit, clean=clean,
        minutes=kept.runtime_seconds / 60,
    )  # fmt: skip
    return [text, ""]


def grid_table(
    rows: Sequence[Any],
    sparsities: Sequence[float],
    value: Callable[[Any], float | None],
    digits: int = 4,
    bold: bool = True,
) -> list[str]:
    """Rows = config, columns = sparsity; the best shown value of each column in bold."""
    labels = list(dict.fromkeys(r.label for r in rows))
    cell = {(r.label, r.sparsity): r for r in rows}
    best: dict[float, str] = {}
    for s in sparsities:
        shown = [fmt(value(cell[(lb, s)]), digits) for lb in labels if (lb, s) in cell]
        numbers = [float(x) for x in shown if x != "-"]
        if numbers and bold:
            best[s] = fmt(max(numbers), digits)
    header = "| method / config | group | " + " | ".join(f"{s:g}" for s in sparsities) + " |"
    lines = [header, "|" + "---|" * (len(sparsities) + 2)]
    for label in labels:
        some = next(r for r in rows if r.label == label)
        cells = []
        for s in sparsities:
            row = cell.get((label, s))
            if row is None:
                cells.append("")
            elif row.failure is not None:
                cells.append("error")
            else:
                text = fmt(value(row), digits)
                cells.append(f"**{text}**" if text == best.get(s) else text)
        lines.append(f"| {label} | {some.group_label or '-'} | " + " | ".join(cells) + " |")
    return lines
