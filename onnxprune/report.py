"""The run's report: counts, per-layer sparsity, fidelity, timings; table and JSON; exit code."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .checks import GateFailure
from .deploy import ArtifactStage
from .errors import EXIT_GATE_FAILED, EXIT_OK
from .layers import SkippedLayer
from .report_text import (
    artifact_lines,
    curve_lines,
    fidelity_lines,
    layer_lines,
    op_count_lines,
    row,
    structured_lines,
)
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
    # ... and the layers too small to be worth measuring, kept dense (UNMEASURED_SHARE).
    unmeasured_layers: list[str] = field(default_factory=list)
    # ... and the layers past the judging budget (``judging_budget_runs``), kept at the share the
    # selection group gives them.
    base_share_layers: list[str] = field(default_factory=list)
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
        lines = self._header_lines()
        lines += self._size_lines()
        if self.layers:
            lines += layer_lines(self.layers)
        if self.structured:
            lines += structured_lines(self.structured)
        if self.op_counts:
            lines += op_count_lines(self.op_counts)
        if self.skipped:
            lines += ["", "skipped:"]
            lines += [f"  {s.name} ({s.op_type}): {s.reason}" for s in self.skipped]
        if self.fidelity is not None:
            lines += fidelity_lines(self.fidelity)
        if self.artifact_stages:
            lines += artifact_lines(self.artifact_stages, self.file_size_before)
        if self.curve:
            lines += curve_lines(self.curve)
        if self.gates:
            limits = ", ".join(f"{k} {v:g}" for k, v in self.gates.items())
            verdict = "FAILED" if self.gate_failures else "passed"
            lines += ["", f"fidelity gates ({limits}): {verdict}"]
            lines += [f"  {failure.describe()}" for failure in self.gate_failures]
        if self.timings:
            parts = ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items())
            lines += ["", f"time: {parts}"]
        return "\n".join(lines)

    def _structured_text(self) -> str:
        """ ", structured R of the units (scorer[, allocation])" when --structured ran."""
        arguments = self.arguments
        if not arguments.get("structured"):
            return ""
        how = [arguments["structured_score"]]
        if arguments.get("structured_allocation"):
            how.append(f"{arguments['structured_allocation']} allocation")
        return f", structured {arguments['structured']:g} of the units ({', '.join(how)})"

    def _header_lines(self) -> list[str]:
        """What ran: paths, method, group, sparsity asked, and what the searches tried."""
        lines = [
            f"onnxprune: {self.model} -> "
            + (str(self.output) if self.output_written else "(no output written)"),
            f"method {self.method}"
            + (f" (auto chose {self.variant})" if self.variant not in (None, self.method) else "")
            + f", group {self.group}, pattern {self.pattern}, target sparsity "
            f"{self.target_sparsity:.2f}, calibration samples {self.calibration_samples}"
            + (", --update" if self.arguments.get("update") else "")
            + self._structured_text(),
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
            notes = [f"{self.sensitivity_builds} single-layer candidates judged"]
            dense = len(self.unmeasured_layers)
            if dense:
                plural = "s" if dense > 1 else ""
                notes.append(f"{dense} smallest layer{plural} not measured, kept dense")
            at_share = len(self.base_share_layers)
            if at_share:
                notes.append(
                    f"{at_share} layer{'s' if at_share > 1 else ''} past the judging budget "
                    "kept at the group's share"
                )
            lines.append(
                f"allocation: {self.arguments.get('allocation', 'sensitivity')} "
                f"({'; '.join(notes)}); per-layer sparsity in the layer table"
            )
        if self.status != "pruned":
            lines.append(f"status: {self.status}")
        return lines

    def _size_lines(self) -> list[str]:
        """Parameters, non-zeros and file sizes before and after; the sparsity achieved."""
        lines = ["", f"{'':<22}{'before':>14}{'after':>14}{'change':>10}"]
        lines.append(row("parameters", self.params_before, self.params_total))
        lines.append(row("non-zeros", self.nonzero_before, self.nonzero_after))
        lines.append(row("file size (bytes)", self.file_size_before, self.file_size_after))
        if self.gzip_size_before is not None and self.gzip_size_after is not None:
            lines.append(row("gzip size (bytes)", self.gzip_size_before, self.gzip_size_after))
        elif self.output_written:
            lines.append(
                f"{'gzip size (bytes)':<22}  not computed above 512 MB (it would take seconds)"
            )
        lines.append(
            f"{'prunable sparsity':<22}{'':>14}{self.achieved_sparsity:>14.4f}"
            f"  over {self.prunable_params:,} weights in {len(self.layers)} layers"
        )
        return lines
