"""Section 1 of BENCHMARKS.md: one block per model, shaped by what its metric is."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from . import prose
from .models import METRIC
from .plan import DEFAULT_MIN_ROW_WEIGHTS, FAST, MINILM_SAMPLES, MOBILE_PATTERN
from .records import AccuracyScore, GridRow, MobileRow, QualityBlock
from .results import Results
from .tables import fmt, grid_table

# The published methods the default must beat (issue 6).
RIVALS = ("wanda", "ria", "sparsegpt")


def choices_table(rows: Sequence[GridRow], sparsities: Sequence[float]) -> list[str]:
    """Per cell, the selection group (and scoring variant) a default-group run ended up with."""
    chosen = {(r.label, r.sparsity): r for r in rows if r.outcome and r.group is None}
    resolved = [
        r
        for r in chosen.values()
        if r.outcome
        and (
            r.outcome.effective_group != r.group_label.removesuffix(" (default)")
            or r.outcome.variant not in (None, r.method)
        )
    ]
    labels = list(dict.fromkeys(r.label for r in resolved))
    if not labels:
        return []
    out = [prose.CHOICES, "", "| method / config | " + " | ".join(f"{s:g}" for s in sparsities)]
    out[-1] += " |"
    out.append("|---|" + "---|" * len(sparsities))
    for label in labels:
        cells = [_choice(chosen.get((label, s))) for s in sparsities]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*out, ""]


def _choice(row: GridRow | None) -> str:
    if row is None or row.outcome is None:
        return ""
    text = row.outcome.effective_group
    if row.outcome.variant not in (None, row.method):
        text += f" ({row.outcome.variant})"
    if row.allocation == "sensitivity":
        text += ", sensitivity"
    return text


def contrib_lines(rows: Sequence[GridRow | MobileRow], points: Sequence[Any]) -> list[str]:
    """Per point: the default ``contrib`` row against each of wanda, ria and sparsegpt (their
    best row: default or ``min_row_weights=0``), and the fast path against the same."""
    lines = []
    for s in points:
        # (row, its value) of the measured cells at this point
        measured = [(r, r.value) for r in rows if r.sparsity == s and r.value is not None]
        default = [v for r, v in measured if r.label == "contrib"]
        fast = [v for r, v in measured if r.label == FAST]
        best_rival: dict[str, tuple[Any, float]] = {}
        for name in RIVALS:
            kinds = ("method", "baseline-mrw0")
            candidates = [(r, v) for r, v in measured if r.method == name and r.kind in kinds]
            if candidates:
                best_rival[name] = max(candidates, key=lambda rv: rv[1])
        if not default or not best_rival:
            continue
        ours = default[0]
        top, top_value = max(best_rival.values(), key=lambda rv: rv[1])
        line = prose.CONTRIB_LINE.format(
            point=s if isinstance(s, str) else f"{s:g}", ours=ours,
            rivals=", ".join(f"{name} {v:.4f}" for name, (_, v) in best_rival.items()),
            verdict="yes" if ours >= top_value else "no", margin=ours - top_value,
            best=top.label,
        )  # fmt: skip
        if fast:
            line += f"; fast path {fast[0]:.4f}"
        lines.append(line)
    return lines


def mobile_block(block: QualityBlock, sparsities: Sequence[float]) -> list[str]:
    rows = [r for r in block.rows if isinstance(r, MobileRow)]
    points: list[Any] = [*sparsities, MOBILE_PATTERN]
    out = [
        prose.MOBILE_METRIC.format(eval_samples=block.dense.eval_samples),
        "",
        "| method / config | group | " + " | ".join(str(p) for p in points) + " |",
        "|" + "---|" * (len(points) + 2),
    ]
    cell = {(r.label, r.sparsity): r for r in rows}
    for label in dict.fromkeys(r.label for r in rows):
        group = next(r for r in rows if r.label == label).group_label
        cells = []
        for p in points:
            row = cell.get((label, p))
            if row is None:
                cells.append("")
            elif row.outcome is None or row.failure is not None:
                cells.append("error")
            else:
                cells.append(f"{row.outcome.top1_agreement:.4f} / {row.outcome.tool_cosine:.4f}")
        out.append(f"| {label} | {group} | " + " | ".join(cells) + " |")
    off = [r for r in rows if r.outcome and abs(r.outcome.achieved_sparsity - _target(r)) > 5e-3]
    out += [""]
    out += [
        f"- achieved sparsity off target: {r.label} at {r.sparsity}: {r.achieved_sparsity:.4f}"
        for r in off
    ] or ["Achieved sparsity is within 0.005 of the target in every cell."]
    out += ["", "contrib (default) vs the published methods (top-1 agreement):", ""]
    out += contrib_lines(rows, points) or ["- (not measured)"]
    return [*out, ""]


def _target(row: MobileRow) -> float:
    return 0.5 if row.sparsity == MOBILE_PATTERN else float(row.sparsity)


def _tool(name: str) -> Callable[[GridRow], float | None]:
    """A grid cell's value read from the tool's own report (``PruneOutcome.<name>``)."""
    return lambda r: getattr(r.outcome, name) if r.outcome else None


def _score(name: str) -> Callable[[GridRow], float | None]:
    return lambda r: getattr(r.score, name) if r.score else None


def embedding_block(results: Results, block: QualityBlock, rows: list[GridRow]) -> list[str]:
    sparsities = results.meta.sparsities
    calib = (results.meta.minilm_source or {}).get("split", {}).get("calib", "?")
    why = "."
    if block.num_samples != MINILM_SAMPLES:
        why = prose.EMBEDDING_SAMPLES.format(default=MINILM_SAMPLES)
    out = [
        prose.EMBEDDING_METRIC.format(
            eval_samples=block.dense.eval_samples, num_samples=block.num_samples, calib=calib,
            why=why,
        ),
        "",
    ]  # fmt: skip
    out += grid_table(rows, sparsities, lambda r: r.value)
    out += ["", "Lowest per-sentence embedding cosine:", ""]
    out += grid_table(rows, sparsities, _score("cosine_min"))
    out += ["", prose.TOOL_COSINE, ""]
    return out + grid_table(rows, sparsities, _tool("tool_cosine"))


def accuracy_block(results: Results, block: QualityBlock, rows: list[GridRow]) -> list[str]:
    measured = [r for r in rows if r.value is not None and r.outcome]
    tool_dense = sorted(
        {x for r in measured if r.outcome and (x := r.outcome.tool_accuracy_original) is not None}
    )
    used = rows[0].outcome.calibration_samples if rows[0].outcome else "?"
    calibration = f"all {used} training samples"
    if block.num_samples is not None:
        calibration = f"`num_samples={block.num_samples}` of the training samples ({used} used)"
    out = [
        prose.ACCURACY_METRIC.format(
            eval_samples=block.dense.eval_samples, dense=fmt(block.dense.metric),
            tool_dense=", ".join(fmt(v) for v in tool_dense), calibration=calibration,
        ),
        "",
    ]  # fmt: skip
    out += grid_table(rows, results.meta.sparsities, _tool("tool_accuracy_pruned"))
    mismatch = [
        r
        for r in measured
        if isinstance(r.score, AccuracyScore)
        and abs(r.score.accuracy - (_tool("tool_accuracy_pruned")(r) or -1)) > 1e-9
    ]
    same = "equals the tool's in every cell."
    if mismatch:
        same = f"differs from the tool's in {len(mismatch)} cell(s) (see results.json)."
    return [*out, "", "Cross-check: this script's own accuracy of each pruned model " + same]


def achieved_lines(rows: list[GridRow], sparsities: Sequence[float]) -> list[str]:
    off = [r for r in rows if r.outcome and abs(r.outcome.achieved_sparsity - r.sparsity) > 5e-3]
    out = [""]
    if off:
        out.append("Achieved sparsity more than 0.005 away from the target:")
        out += [f"- {r.label} at {r.sparsity:g}: {r.achieved_sparsity:.4f}" for r in off]
    else:
        achieved = [r.outcome.achieved_sparsity - r.sparsity for r in rows
                    if r.value is not None and r.outcome]  # fmt: skip
        if achieved:
            out.append(
                "Achieved sparsity (`report.achieved_sparsity`) is within 0.005 of the "
                f"target in every cell (largest deviation {max(achieved, key=abs):+.4f})."
            )
    out += ["", "<details><summary>achieved sparsity per cell</summary>", ""]
    out += grid_table(rows, sparsities, lambda r: r.achieved_sparsity, bold=False)
    return [*out, "", "</details>", ""]


GRID_BLOCKS = {"accuracy": accuracy_block, "embedding": embedding_block}


def grid_block(results: Results, model: str, block: QualityBlock) -> list[str]:
    rows = [r for r in block.rows if isinstance(r, GridRow)]
    sparsities = results.meta.sparsities
    out = GRID_BLOCKS[METRIC[model]](results, block, rows)
    out += ["", "contrib (default) vs the baselines:", ""]
    out += contrib_lines(rows, sparsities) or ["- (not measured in this run)"]
    out += achieved_lines(rows, sparsities)
    return out + choices_table(rows, sparsities)


def quality_section(results: Results) -> list[str]:
    meta = results.meta
    intro = prose.QUALITY_INTRO.format(
        sparsities=", ".join(f"{s:g}" for s in meta.sparsities), mrw=DEFAULT_MIN_ROW_WEIGHTS
    )
    out = ["", "## 1. Quality", "", intro, ""]
    for model, block in results.quality_blocks():
        out += [f"### {model}", ""]
        if METRIC[model] == "agreement":
            out += mobile_block(block, meta.sparsities)
        else:
            out += grid_block(results, model, block)
    return out
