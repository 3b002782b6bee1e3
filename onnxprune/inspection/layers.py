"""``inspect``: a model's prunable layers, the nodes left alone and, with data, each
layer's sensitivity (pruned alone)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..calibrate.gates import find_gate
from ..calibrate.sources import DataSource
from ..config import PruneConfig
from ..graph import GraphView
from ..inputs import resolve_model
from ..io import load_for_reading
from ..layers import IF_BRANCH_REASON, LayerScan, SkippedLayer, find_layers
from ..metric import decision_score, suggest_for_model
from ..options import default
from ..pipeline import Pruner, mean_cosine


@dataclass
class InspectedLayer:
    name: str
    op_type: str
    weight: str
    shape: list[int]
    params: int
    storage: str
    dtype: str
    gate: str
    # Mean output cosine against the original with only this layer pruned (None: no data).
    cosine_alone: float | None = None
    # The metric score (``metric.decision_score``, default standardized) in the same run.
    score_alone: float | None = None


@dataclass
class InspectReport:
    model: str
    layers: list[InspectedLayer]
    skipped: list[SkippedLayer]
    sensitivity_sparsity: float | None = None
    sensitivity_method: str | None = None
    sensitivity_samples: int = 0
    sensitivity_source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # A --metric preset the output shapes suggest, and why (``metric.suggest_preset``).
    suggested_metric: str | None = None
    suggested_because: str | None = None

    @property
    def exit_code(self) -> int:
        return 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def format_table(self) -> str:
        total = sum(layer.params for layer in self.layers)
        lines = [
            f"onnxprune inspect: {self.model}",
            f"{len(self.layers)} prunable layers, {total:,} weights; {len(self.skipped)} skipped",
            "",
        ]
        width = max([24, *(len(layer.name) + 2 for layer in self.layers)])
        stored = max([15, *(len(layer.storage) + 2 for layer in self.layers)])
        header = f"{'layer':<{width}}{'op':<8}{'shape':<18}{'params':>10}  {'stored as':<{stored}}"
        header += f"{'dtype':<9}{'gate':<11}"
        if self.sensitivity_sparsity is not None:
            header += f"{'cosine alone':>13}{'score alone':>13}"
        lines.append(header)
        for layer in self.layers:
            shape = "x".join(str(d) for d in layer.shape)
            line = (
                f"{layer.name:<{width}}{layer.op_type:<8}{shape:<18}{layer.params:>10,}  "
                f"{layer.storage:<{stored}}{layer.dtype:<9}{layer.gate:<11}"
            )
            if layer.cosine_alone is not None:
                line += f"{layer.cosine_alone:>13.5f}"
            if layer.score_alone is not None:
                line += f"{layer.score_alone:>13.5f}"
            lines.append(line)
        if self.sensitivity_sparsity is not None:
            lines += [
                "",
                f"cosine alone: mean output cosine against the original when only that layer is "
                f"pruned to {self.sensitivity_sparsity:g} ({self.sensitivity_method}, per row), "
                f"on {self.sensitivity_samples} {self.sensitivity_source} samples; "
                "the lowest are the most sensitive; score alone: the same by the standardized "
                "metric (what the decisions optimise, README 'Choosing the metric')",
            ]
        if self.suggested_metric is not None:
            lines += [
                "",
                f"suggested metric: --metric {self.suggested_metric} ({self.suggested_because})",
            ]
        if self.skipped:
            lines += ["", "skipped:"]
            lines += [f"  {s.name} ({s.op_type}): {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def inspect_model(
    model: str | Path,
    calib: DataSource | None = None,
    *,
    sparsity: float = 0.5,
    method: str = default("method"),
    num_samples: int | None = default("num_samples"),
    batch_size: int = default("batch_size"),
    seed: int = default("seed"),
    progress: bool = False,
) -> InspectReport:
    """Describe ``model``'s prunable layers without writing anything.

    Args:
        model: an ``.onnx`` path, or a directory holding one.
        calib: optional calibration data (any form :func:`onnxprune.prune` takes, except
            raw text and images); with it each layer is pruned alone to ``sparsity`` by
            ``method`` and the loss of output cosine measured (its sensitivity).
        num_samples, batch_size, seed: as for :func:`onnxprune.prune`.

    Returns:
        An ``InspectReport``: ``layers`` (name, op, shape, storage, and sensitivity with
        data), ``skipped`` (weight-bearing nodes left alone, with why); ``format_table()``,
        ``to_json()``.
    """
    model_path = resolve_model(Path(model))
    config = PruneConfig(
        sparsity=sparsity,
        method=method,
        group="row",
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
        min_row_weights=0,
        # Each layer alone, as documented: no reconstruction, no re-allocation.
        update=False,
        allocation="group",
    )
    view = GraphView(*load_for_reading(model_path))
    scan = find_layers(view, config)
    branched = any(s.reason.startswith(IF_BRANCH_REASON) for s in scan.skipped)
    pruner: Pruner | None = None
    if calib is not None and (scan.layers or branched):
        # With data, the layers of the If branches the data takes are listed too.
        pruner = Pruner(model_path, calib, config, progress=progress)
        scan = pruner.scan
    try:
        report = _inspected(model_path, view, scan, pruner)
        if pruner is not None and report.layers:  # with data and layers to measure
            _measure_alone(pruner, report)
    finally:
        if pruner is not None:
            pruner.close()
    return report


def _measure_alone(pruner: Pruner, report: InspectReport) -> None:
    """Each listed layer pruned alone (to the pruner's sparsity, by its method) and compared
    with the original on the verification samples: its sensitivity, in ``report``."""
    reference = pruner.verification_reference()
    report.sensitivity_sparsity = pruner.config.sparsity
    report.sensitivity_method = pruner.config.method
    report.sensitivity_source = reference.source
    report.sensitivity_samples = int(reference.selected.sum())
    stats = pruner.statistics()
    for inspected, layer in zip(report.layers, pruner.layers, strict=True):
        if pruner.branches.owns(layer):  # its nodes are not in the main graph
            inspected.gate = stats[layer.weight_name].gate_kind
        candidate = pruner.build(only={inspected.weight})
        fidelity = pruner.compare(candidate, reference)
        inspected.cosine_alone = mean_cosine(fidelity)
        inspected.score_alone = decision_score(fidelity)


def _inspected(
    model_path: Path, view: GraphView, scan: LayerScan, pruner: Pruner | None
) -> InspectReport:
    """The report's layer and skipped lists (no sensitivity yet)."""
    layers = [
        InspectedLayer(
            name=layer.name,
            op_type=layer.op.op_type,
            weight=layer.weight_name,
            shape=list(layer.shape),
            params=layer.size,
            storage=layer.storage,
            dtype=str(layer.dtype),
            gate="?"
            if pruner is not None and pruner.branches.owns(layer)
            else find_gate(view, layer.nodes[0]).kind,
        )
        for layer in scan.layers
    ]
    report = InspectReport(
        str(model_path),
        layers,
        list(scan.skipped),
    )
    suggestion = suggest_for_model(view.model)
    if suggestion is not None:
        report.suggested_metric, report.suggested_because = suggestion
    return report
