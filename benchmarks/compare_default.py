"""The default pipeline's quality against the previous default, point by point.

Reads the quality rows of a new run of ``run_benchmarks.py`` restricted to the default row
(``--sections quality --labels contrib``) and the published ``benchmarks/results.json`` (the
previous default's run), and writes the section between ``<!-- default:begin -->`` and
``<!-- default:end -->`` of ``BENCHMARKS.md``: each model and sparsity with the users' measure
(accuracy, embedding cosine, top-1 agreement) before and after, and each run's wall time;
with ``contrib, --thorough`` rows in the new run (``--labels contrib "contrib, --thorough"``),
the opt-in beside the new default as well.

Usage::

    python benchmarks/run_benchmarks.py --sections quality --labels contrib \\
        --minilm-samples 256 --out-dir bench_default
    python benchmarks/compare_default.py bench_default/results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from markdown_section import write_section

HERE = Path(__file__).resolve().parent
MARKDOWN = HERE.parent / "BENCHMARKS.md"
BEGIN, END = "<!-- default:begin -->", "<!-- default:end -->"
TOLERANCE = 0.003  # the fast-default issue's quality bound
MEASURE = {
    "digits_cnn": "test accuracy",
    "digits_mlp": "test accuracy",
    "minilm": "embedding cosine",
    "mobile": "top-1 agreement",
}


THOROUGH = "contrib, --thorough"


def _points(
    results: dict[str, Any], label: str = "contrib"
) -> dict[tuple[str, str], dict[str, Any]]:
    """(model, point) -> the ``label`` row (the default's); the point is the sparsity or the
    N:M pattern."""
    found = {}
    for model, section in results.get("quality", {}).items():
        for row in section["rows"]:
            if row.get("label") != label or "value" not in row:
                continue
            sparsity = row["sparsity"]  # a number, or an N:M pattern such as "2:4"
            point = f"{sparsity:.1f}" if isinstance(sparsity, (int, float)) else str(sparsity)
            found[(model, str(point))] = row
    return found


def _commit(results: dict[str, Any]) -> str:
    """The commit the quality rows were measured on: the run's own, or, when a later partial
    run kept them (``--keep-sections-from``), the commit recorded for the kept section."""
    meta = results.get("meta", {})
    kept = (meta.get("kept_sections") or {}).get("quality")
    if kept:
        return str(kept.get("commit", "?")) + ("" if kept.get("clean", True) else " + changes")
    git = meta.get("git") or {}
    return str(git.get("commit", "?")) + (
        " + uncommitted changes" if git.get("uncommitted") else ""
    )


def render(new: dict[str, Any], old: dict[str, Any], new_path: str) -> str:
    before, after, thorough = _points(old), _points(new), _points(new, THOROUGH)
    lines = [
        BEGIN,
        "## The default after the fast-default change, against the previous default",
        "",
        f"New: `{new['meta'].get('command', new_path)}` (source {_commit(new)}); "
        f"previous: the published section 1 run (source {_commit(old)}). "
        "Same models, data and measures; wall times are each run's own (different days and "
        f"machine load: compare within a run). Bound: the new default within {TOLERANCE} "
        "of the previous one, or better.",
        "",
        "| model | measure | point | previous | new | change | within bound | wall previous | "
        "wall new |" + (" --thorough | wall --thorough |" if thorough else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if thorough else ""),
    ]
    for key in sorted(after, key=lambda k: (k[0], k[1])):
        model, point = key
        row = after[key]
        prior = before.get(key)
        value = float(row["value"])
        cells = [model, MEASURE.get(model, "metric"), point]
        if prior is None:
            cells += ["-", f"{value:.4f}", "", "", "", f"{row.get('wall', 0):.0f} s"]
        else:
            change = value - float(prior["value"])
            cells += [
                f"{float(prior['value']):.4f}",
                f"{value:.4f}",
                f"{change:+.4f}",
                "yes" if change >= -TOLERANCE else "**no**",
                f"{prior.get('wall', 0):.0f} s",
                f"{row.get('wall', 0):.0f} s",
            ]
        if thorough:
            opt_in = thorough.get(key)
            cells += (
                ["-", ""]
                if opt_in is None
                else [f"{float(opt_in['value']):.4f}", f"{opt_in.get('wall', 0):.0f} s"]
            )
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_markdown(section: str) -> None:
    write_section(MARKDOWN, BEGIN, END, section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("new", type=Path, help="results.json of the new default's run")
    parser.add_argument("--previous", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    new = json.loads(args.new.read_text())
    old = json.loads(args.previous.read_text())
    write_markdown(render(new, old, str(args.new)))


if __name__ == "__main__":
    main()
