"""The report's table sections as text lines (``Report.format_table``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .deploy import ArtifactStage
    from .report import LayerReport
    from .structure import GroupReport
    from .verify import Fidelity


def layer_lines(layers: list[LayerReport]) -> list[str]:
    width = max(24, *(len(layer.name) for layer in layers)) + 2
    lines = ["", f"{'layer':<{width}}{'op':<8}{'shape':<18}{'params':>10}{'sparsity':>10}"]
    for layer in layers:
        shape = "x".join(str(d) for d in layer.shape)
        lines.append(
            f"{layer.name:<{width}}{layer.op_type:<8}{shape:<18}"
            f"{layer.params:>10,}{layer.sparsity:>10.3f}"
            + (f"  --layer {layer.override}" if layer.override else "")
        )
    return lines


def op_count_lines(op_counts: dict[str, list[int]]) -> list[str]:
    lines = ["", f"{'op':<22}{'before':>14}{'after':>14}{'change':>10}"]
    for op, (before, after) in sorted(op_counts.items()):
        diff = f"{after - before:+d}" if after != before else ""
        lines.append(f"{op:<22}{before:>14,}{after:>14,}{diff:>10}")
    return lines


def curve_lines(curve: list[dict[str, Any]]) -> list[str]:
    used = sorted({str(p["samples"]) for p in curve if "samples" in p})
    lines = [""]
    if used:  # the search measures on calibration samples, a sweep on held-out ones
        lines.append(f"fidelity curve on {' / '.join(used)} samples")
    lines.append(f"{'sparsity':>10}{'score':>10}{'cosine':>10}{'top-1':>10}{'accuracy':>10}  gates")
    for point in sorted(curve, key=lambda p: p["sparsity"]):
        passes = {True: "pass", False: "fail", None: ""}[point.get("passes")]
        lines.append(
            f"{point['sparsity']:>10.3f}{_maybe(point.get('score')):>10}"
            f"{point['cosine']:>10.5f}"
            f"{_maybe(point.get('top1')):>10}{_maybe(point.get('accuracy')):>10}  {passes}"
        )
    return lines


def structured_lines(groups: list[GroupReport]) -> list[str]:
    width = max(24, *(len(g.name) for g in groups)) + 2
    lines = [
        "",
        f"{'structured group':<{width}}{'kind':<10}{'units':>8}{'kept':>8}  frozen because",
    ]
    for group in groups:
        why = group.frozen[0] if group.frozen else ""
        if len(group.frozen) > 1:
            why += f" (+{len(group.frozen) - 1} more)"
        lines.append(
            f"{group.name:<{width}}{group.kind:<10}{group.units_before:>8}"
            f"{group.units_after:>8}  {why}"
        )
    return lines


def _maybe(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def row(label: str, before: int, after: int) -> str:
    change = f"{(after - before) / before:+.1%}" if before else ""
    return f"{label:<22}{before:>14,}{after:>14,}{change:>10}"


def artifact_lines(stages: list[ArtifactStage], original_size: int) -> list[str]:
    """Each stage of the written artifact: what it costs in fidelity, what it saves."""
    width = max([34, *(len(stage.name) + 2 for stage in stages)])
    lines = [
        "",
        "artifact stages (the last is written; fidelity against the original)",
        f"{'stage':<{width}}{'file bytes':>12}{'ratio':>7}{'gzip bytes':>12}{'cosine':>10}"
        f"{'top-1':>8}{'accuracy':>10}",
    ]
    for stage in stages:
        fid = stage.fidelity
        cosines = [o.cosine for o in fid.outputs] if fid else []
        top1 = (
            [o.top1_agreement for o in fid.outputs if o.top1_agreement is not None] if fid else []
        )
        ratio = f"{stage.file_size / original_size:.2f}x" if original_size else "-"
        gzip = "-" if stage.gzip_size is None else f"{stage.gzip_size:,}"
        lines.append(
            f"{stage.name:<{width}}{stage.file_size:>12,}{ratio:>7}{gzip:>12}"
            f"{_maybe(min(cosines) if cosines else None):>10}"
            f"{_maybe(min(top1) if top1 else None):>8}"
            f"{_maybe(fid.accuracy_pruned if fid else None):>10}"
            + (
                f"  ({stage.sparse_tensors} tensors sparse)"
                if stage.sparse_tensors is not None
                else ""
            )
        )
    if any(stage.gzip_size is None for stage in stages):
        lines.append("gzip size not computed above 512 MB")
    return lines


def fidelity_lines(fidelity: Fidelity) -> list[str]:
    lines = [
        "",
        f"fidelity on {fidelity.samples} {fidelity.source} samples (pruned vs original)",
        f"{'output':<24}{'cosine':>10}{'max abs err':>14}{'mean abs err':>14}{'top-1 agree':>13}",
    ]
    for out in fidelity.outputs:
        top1 = "-" if out.top1_agreement is None else f"{out.top1_agreement:.4f}"
        if out.exact:  # integer/bool: exact agreement only (in the top-1 column)
            lines.append(f"{out.name:<24}{'-':>10}{'-':>14}{'-':>14}{top1:>13}  (exact)")
            continue
        lines.append(
            f"{out.name:<24}{out.cosine:>10.5f}{out.max_abs_error:>14.4g}"
            f"{out.mean_abs_error:>14.4g}{top1:>13}"
            + (f"  ({out.nonfinite} NaN/inf)" if out.nonfinite else "")
        )
    if fidelity.accuracy_original is not None and fidelity.accuracy_pruned is not None:
        lines.append(
            f"accuracy: original {fidelity.accuracy_original:.4f}, "
            f"pruned {fidelity.accuracy_pruned:.4f} "
            f"({fidelity.accuracy_pruned - fidelity.accuracy_original:+.4f})"
        )
    if fidelity.score is not None:
        # The number decisions optimised and --min-score gates (onnxprune.metric).
        lines.append(f"score ({fidelity.metric}): {fidelity.score:.5f}")
        if len(fidelity.metric_parts) > 1:
            lines += [f"  {part}: {value:.5f}" for part, value in fidelity.metric_parts.items()]
    return lines
