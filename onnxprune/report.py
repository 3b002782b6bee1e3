"""The run's report: counts, per-layer sparsity, fidelity, timings; table and JSON; exit code."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .checks import GateFailure
from .deploy import ArtifactStage
from .errors import EXIT_GATE_FAILED, EXIT_OK
from .layers import SkippedLayer
from .structure import GroupReport
from .verify import Fidelity


@dataclass
class LayerReport:
    name: str
    op_type: str
    weight: str
    shape: list[int]
    storage: str
    gate: str
    params: int
    nonzero_before: int
    nonzero_after: int
    # The --layer override that set this layer's sparsity / method, if any.
    override: str | None = None

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero_after / self.params if self.params else 0.0


@dataclass
class Report:
    """What one ``prune()`` run did and measured (``to_dict()`` / ``to_json()`` for --report).

    Main fields: ``model`` / ``output`` (paths; ``output_written``), ``method``, ``pattern``,
    ``group``, ``target_sparsity`` (what was asked, or what --sparsity auto found) and
    ``achieved_sparsity`` (zeros over the pruned layers' weights); ``params_*`` /
    ``nonzero_*`` (float weights of the whole model), ``file_size_*`` / ``gzip_size_*``
    (bytes); ``calibration_samples`` (samples statistics were gathered on); ``layers``
    (per pruned layer) and ``skipped`` (left alone, with why); ``fidelity`` (pruned vs
    original on the held-out or --eval samples: ``fidelity.samples`` and
    ``fidelity.source`` say which); ``curve`` (points of a search or sweep, each with the
    ``samples`` it was measured on: a search uses calibration samples, a sweep the held-out
    ones); ``gates`` / ``gate_failures`` (``exit_code`` 5 when one failed); ``warnings``
    (also logged on stderr where they mean something silently did nothing); ``recipe``
    (the replayable ``<output>.recipe.json``); ``timings`` (seconds per stage).
    """

    model: str
    output: str | None
    method: str
    pattern: str
    group: str
    target_sparsity: float
    seed: int
    arguments: dict[str, Any]
    versions: dict[str, str]
    # Float weights in the model before and after (they differ when --structured shrinks it).
    params_before: int = 0
    params_total: int = 0
    nonzero_before: int = 0
    nonzero_after: int = 0
    file_size_before: int = 0
    file_size_after: int = 0
    gzip_size_before: int | None = None
    gzip_size_after: int | None = None
    calibration_samples: int = 0
    layers: list[LayerReport] = field(default_factory=list)
    skipped: list[SkippedLayer] = field(default_factory=list)
    fidelity: Fidelity | None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    status: str = "pruned"
    # --group auto: the metric score (``metric.decision_score``) of each selection tried (on
    # calibration samples).
    group_trials: dict[str, float] = field(default_factory=dict)
    # The scoring variant that ran, when --group auto picked one of the method's variants.
    variant: str | None = None
    # Fidelity gates asked for, and every limit the final model failed (exit code 5).
    gates: dict[str, float] = field(default_factory=dict)
    gate_failures: list[GateFailure] = field(default_factory=list)
    # Points measured by --sparsity auto or --sweep: sparsity, score (the metric), cosine,
    # top1, accuracy, passes.
    curve: list[dict[str, Any]] = field(default_factory=list)
    # op type -> [count before, count after]
    op_counts: dict[str, list[int]] = field(default_factory=dict)
    output_written: bool = False
    # Input whose zeros marked padding in the statistics (None: every row counted).
    sample_mask: str | None = None
    recipe: str | None = None
    # --structured: every dependency group, its units before and after, why it was frozen.
    structured: list[GroupReport] = field(default_factory=list)
    # Calibration passes over the data (the one-shot pass, --structured's pass over the original,
    # and one per --sequential stage after the first for every candidate built), and the number
    # of --sequential stages.
    calibration_passes: int = 0
    stages: int | None = None
    # --allocation sensitivity / measured: single-layer candidates judged to measure the layers.
    sensitivity_builds: int = 0
    # --quantize / --storage sparse: each stage of the written artifact (pruned, + int8,
    # + sparse storage) with its file and gzip size and its fidelity against the original.
    artifact_stages: list[ArtifactStage] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """Errors never reach a Report (they raise); a finished run exits 0, or 5 when the
        pruned model failed a fidelity gate."""
        return EXIT_GATE_FAILED if self.gate_failures else EXIT_OK

    @property
    def prunable_params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def achieved_sparsity(self) -> float:
        """Share of zeros over the weights of the layers reported as pruned."""
        params = self.prunable_params
        zeros = sum(layer.params - layer.nonzero_after for layer in self.layers)
        return zeros / params if params else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["achieved_sparsity"] = self.achieved_sparsity
        data["prunable_params"] = self.prunable_params
        data["exit_code"] = self.exit_code
        for layer_data, layer in zip(data["layers"], self.layers, strict=True):
            layer_data["sparsity"] = layer.sparsity
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def format_table(self) -> str:
        lines = [
            f"onnxprune: {self.model} -> "
            + (str(self.output) if self.output_written else "(no output written)"),
            f"method {self.method}"
            + (f" (auto chose {self.variant})" if self.variant not in (None, self.method) else "")
            + f", group {self.group}, pattern {self.pattern}, target sparsity "
            f"{self.target_sparsity:.2f}, calibration samples {self.calibration_samples}"
            + (", --update" if self.arguments.get("update") else "")
            + (
                f", structured {self.arguments['structured']:g} of the units "
                f"({self.arguments['structured_score']})"
                if self.arguments.get("structured")
                else ""
            ),
        ]
        if self.group_trials:
            tried = ", ".join(f"{g} {c:.5f}" for g, c in self.group_trials.items())
            metric = self.arguments.get("metric") or "standardized"
            lines.append(f"group auto tried ({metric} score on calibration samples): {tried}")
        if self.stages is not None:
            lines.append(
                f"sequential: {self.stages} stages, {self.calibration_passes} calibration passes"
            )
        if self.sensitivity_builds:
            lines.append(
                f"allocation: {self.arguments.get('allocation', 'sensitivity')} "
                f"({self.sensitivity_builds} single-layer candidates judged); per-layer sparsity "
                "in the layer table"
            )
        if self.status != "pruned":
            lines.append(f"status: {self.status}")
        lines += ["", f"{'':<22}{'before':>14}{'after':>14}{'change':>10}"]
        lines.append(_row("parameters", self.params_before, self.params_total))
        lines.append(_row("non-zeros", self.nonzero_before, self.nonzero_after))
        lines.append(_row("file size (bytes)", self.file_size_before, self.file_size_after))
        if self.gzip_size_before is not None and self.gzip_size_after is not None:
            lines.append(_row("gzip size (bytes)", self.gzip_size_before, self.gzip_size_after))
        elif self.output_written:
            lines.append(
                f"{'gzip size (bytes)':<22}  not computed above 512 MB (it would take seconds)"
            )
        lines.append(
            f"{'prunable sparsity':<22}{'':>14}{self.achieved_sparsity:>14.4f}"
            f"  over {self.prunable_params:,} weights in {len(self.layers)} layers"
        )
        if self.layers:
            width = max(24, *(len(layer.name) for layer in self.layers)) + 2
            lines += ["", f"{'layer':<{width}}{'op':<8}{'shape':<18}{'params':>10}{'sparsity':>10}"]
            for layer in self.layers:
                shape = "x".join(str(d) for d in layer.shape)
                lines.append(
                    f"{layer.name:<{width}}{layer.op_type:<8}{shape:<18}"
                    f"{layer.params:>10,}{layer.sparsity:>10.3f}"
                    + (f"  --layer {layer.override}" if layer.override else "")
                )
        if self.structured:
            lines += _structured_lines(self.structured)
        if self.op_counts:
            lines += ["", f"{'op':<22}{'before':>14}{'after':>14}{'change':>10}"]
            for op, (before, after) in sorted(self.op_counts.items()):
                diff = f"{after - before:+d}" if after != before else ""
                lines.append(f"{op:<22}{before:>14,}{after:>14,}{diff:>10}")
        if self.skipped:
            lines += ["", "skipped:"]
            lines += [f"  {s.name} ({s.op_type}): {s.reason}" for s in self.skipped]
        if self.fidelity is not None:
            lines += _fidelity_lines(self.fidelity)
        if self.artifact_stages:
            lines += _artifact_lines(self.artifact_stages, self.file_size_before)
        if self.curve:
            used = sorted({str(p["samples"]) for p in self.curve if "samples" in p})
            lines.append("")
            if used:  # the search measures on calibration samples, a sweep on held-out ones
                lines.append(f"fidelity curve on {' / '.join(used)} samples")
            lines.append(
                f"{'sparsity':>10}{'score':>10}{'cosine':>10}{'top-1':>10}{'accuracy':>10}  gates"
            )
            for point in sorted(self.curve, key=lambda p: p["sparsity"]):
                passes = {True: "pass", False: "fail", None: ""}[point.get("passes")]
                lines.append(
                    f"{point['sparsity']:>10.3f}{_maybe(point.get('score')):>10}"
                    f"{point['cosine']:>10.5f}"
                    f"{_maybe(point.get('top1')):>10}{_maybe(point.get('accuracy')):>10}  {passes}"
                )
        if self.gates:
            limits = ", ".join(f"{k} {v:g}" for k, v in self.gates.items())
            verdict = "FAILED" if self.gate_failures else "passed"
            lines += ["", f"fidelity gates ({limits}): {verdict}"]
            lines += [f"  {failure.describe()}" for failure in self.gate_failures]
        if self.timings:
            parts = ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items())
            lines += ["", f"time: {parts}"]
        return "\n".join(lines)


def _structured_lines(groups: list[GroupReport]) -> list[str]:
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


def _row(label: str, before: int, after: int) -> str:
    change = f"{(after - before) / before:+.1%}" if before else ""
    return f"{label:<22}{before:>14,}{after:>14,}{change:>10}"


def _artifact_lines(stages: list[ArtifactStage], original_size: int) -> list[str]:
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


def _fidelity_lines(fidelity: Fidelity) -> list[str]:
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
