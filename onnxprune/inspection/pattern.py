"""``check-pattern``: whether every prunable layer of a model holds an N:M pattern."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..branches import static_branch_layers
from ..config import PruneConfig, parse_pattern
from ..errors import EXIT_GATE_FAILED, UsageError
from ..graph import GraphView
from ..inputs import resolve_model
from ..io import load_for_reading
from ..layers import find_layers, nm_problem


@dataclass
class PatternLayer:
    name: str
    op_type: str
    weight: str
    groups: int  # complete groups of M along the reduction axis, over all rows
    conforming: int  # of those, groups with at most N non-zeros
    # Why the pattern does not apply (reduction runs not a multiple of M: pruning keeps such a
    # layer dense); None when it does.
    not_applicable: str | None = None

    @property
    def ok(self) -> bool:
        if self.not_applicable is not None:
            return True
        return self.groups > 0 and self.conforming == self.groups


@dataclass
class PatternReport:
    model: str
    pattern: str
    layers: list[PatternLayer]

    @property
    def applicable(self) -> list[PatternLayer]:
        return [layer for layer in self.layers if layer.not_applicable is None]

    @property
    def exit_code(self) -> int:
        """5 (a check failed) when a layer the pattern applies to breaks it; 0 otherwise, also
        when it applies to no layer (nothing breaks it; the verdict says so)."""
        return 0 if all(layer.ok for layer in self.applicable) else EXIT_GATE_FAILED

    def verdict(self) -> str:
        if not self.applicable:
            found = (
                f"{len(self.layers)} prunable layer(s), all kept dense"
                if self.layers
                else ("no prunable layer")
            )
            return f"no layer the {self.pattern} pattern applies to ({found}): nothing to check"
        if self.exit_code == 0:
            return "every layer conforms"
        return "NOT every layer conforms"

    def to_json(self) -> str:
        data = asdict(self)
        data["all_conform"] = self.exit_code == 0
        data["applicable_layers"] = len(self.applicable)
        data["verdict"] = self.verdict()
        for item, layer in zip(data["layers"], self.layers, strict=True):
            item["ok"] = layer.ok
        return json.dumps(data, indent=2, sort_keys=True)

    def format_table(self) -> str:
        width = max([24, *(len(layer.name) + 2 for layer in self.layers)])
        lines = [
            f"onnxprune check-pattern: {self.model} ({self.pattern} along the reduction axis)",
            "",
            f"{'layer':<{width}}{'op':<8}{'groups':>12}{'conforming':>12}  ok",
        ]
        for layer in self.layers:
            lines.append(
                f"{layer.name:<{width}}{layer.op_type:<8}{layer.groups:>12,}"
                f"{layer.conforming:>12,}  "
                + ("n/a (kept dense)" if layer.not_applicable else "yes" if layer.ok else "NO")
            )
        lines += ["", self.verdict()]
        return "\n".join(lines)


def check_pattern(model: str | Path, pattern: str = "2:4") -> PatternReport:
    """Which prunable layers keep at most N of every M weights along the reduction axis (the
    axis TensorRT's sparse tensor cores use: MatMul B[K, N] axis 0, Gemm by transB, Conv input
    channels). Trailing groups shorter than M are not counted.

    Args:
        model: an ``.onnx`` path, or a directory holding one.
        pattern: ``"N:M"``, e.g. ``"2:4"``.

    Returns:
        A ``PatternReport`` with one entry per layer; ``exit_code`` is 5 unless every layer
        conforms.
    """
    nm = parse_pattern(pattern)
    if nm is None:
        raise UsageError("check-pattern needs an N:M pattern such as 2:4")
    model_path = resolve_model(Path(model))
    view = GraphView(*load_for_reading(model_path))
    reading = PruneConfig(sparsity=0.0, min_row_weights=0)
    scan = find_layers(view, reading)
    # Layers inside If branches are pruned too (their weights are read without data).
    found = scan.layers + static_branch_layers(view.model, reading, view.base_dir)
    config = PruneConfig(sparsity=nm.sparsity, pattern=str(nm))
    layers = []
    for layer in found:
        problem = nm_problem(layer.op, layer.nodes[0], layer.shape, config)
        if problem is not None:
            layers.append(
                PatternLayer(layer.name, layer.op.op_type, layer.weight_name, 0, 0, problem)
            )
            continue
        matrix = layer.matrix()  # [out, K], K in (kernel position, input channel) order for Conv
        rows, columns = matrix.shape
        full = columns - columns % nm.m
        nonzero = np.count_nonzero(matrix[:, :full].reshape(rows, -1, nm.m), axis=2)
        layers.append(
            PatternLayer(
                layer.name,
                layer.op.op_type,
                layer.weight_name,
                int(nonzero.size),
                int((nonzero <= nm.n).sum()),
            )
        )
    return PatternReport(str(model_path), str(nm), layers)
