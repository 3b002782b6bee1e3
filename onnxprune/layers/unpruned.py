"""Weight-bearing nodes left alone, and why: ops onnxprune does not prune and layers inside
Loop/If/Scan subgraphs."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import onnx

from ..graph import GraphView
from .ops import LAYER_OPS
from .records import LayerScan, SkippedLayer


class NotPruned(NamedTuple):
    """Why an op's weights are left alone, and which of its inputs hold them."""

    reason: str
    weight_inputs: tuple[int, ...]


_QUANTIZED_OP = "quantized op: prune the float model before quantization"
_RECURRENT = "recurrent weights are not supported"
# Ops that hold weights onnxprune does not prune; listed in the report so nothing is silent.
# An op is listed when one of its weight inputs is a stored constant; a Gather only when its
# data is a stored table (rank >= 2): exporters also Gather from Shape outputs with constant
# indices, which hold no weights.
NOT_PRUNED_OPS: dict[str, NotPruned] = {
    "Gather": NotPruned("embedding table (Gather) is never pruned", (0,)),
    "ConvTranspose": NotPruned("ConvTranspose is not supported", (1,)),
    "LSTM": NotPruned(_RECURRENT, (1, 2)),
    "GRU": NotPruned(_RECURRENT, (1, 2)),
    "RNN": NotPruned(_RECURRENT, (1, 2)),
    "QLinearConv": NotPruned(_QUANTIZED_OP, (3,)),
    "QLinearMatMul": NotPruned(_QUANTIZED_OP, (0, 3)),
    "MatMulInteger": NotPruned(_QUANTIZED_OP, (0, 1)),
    "ConvInteger": NotPruned(_QUANTIZED_OP, (1,)),
}


def holds_unpruned_weight(node: onnx.NodeProto, is_stored: Callable[[str], bool]) -> bool:
    """Whether ``node`` is an op of NOT_PRUNED_OPS reading a stored weight (``is_stored``
    tells a stored constant of the right shape) at one of its weight inputs."""
    entry = NOT_PRUNED_OPS.get(node.op_type)
    indices = entry.weight_inputs if entry is not None else ()
    return any(i < len(node.input) and node.input[i] and is_stored(node.input[i]) for i in indices)


def _stored_weight(view: GraphView, node: onnx.NodeProto) -> Callable[[str], bool]:
    """``holds_unpruned_weight``'s test in the main graph: a stored constant, and for a Gather
    a table (rank >= 2) rather than a shape vector."""

    def stored(name: str) -> bool:
        if not view.is_constant(name):
            return False
        if node.op_type != "Gather":
            return True
        meta = view.constant_meta(name)
        return meta is None or len(meta[1]) >= 2

    return stored


SUBGRAPH_REASON = "inside a Loop/If/Scan subgraph: not pruned"
# Layers in the branches of a top-level If: a run with calibration data prunes them
# (``onnxprune.branches``); inspect lists them with this reason.
IF_BRANCH_REASON = "inside an If branch"


def _skip_subgraph_layers(
    view: GraphView,
    graph: onnx.GraphProto,
    prefix: str,
    constants: set[str],
    scan: LayerScan,
    top: onnx.NodeProto | None = None,
) -> None:
    """List every weight-bearing node of every subgraph (at any depth) as skipped; ``top``:
    the main-graph node the subgraph is nested in (None: ``graph`` is the main graph)."""
    constants = constants | {t.name for t in graph.initializer}
    constants |= {n.output[0] for n in graph.node if n.op_type == "Constant" and n.output}
    for node in graph.node:
        for attr in node.attribute:
            subgraphs = [*attr.graphs, *([attr.g] if attr.HasField("g") else [])]
            for sub in subgraphs:
                parent = f"{prefix}{view.node_name(node)}/{attr.name}/"
                inner = constants | {t.name for t in sub.initializer}
                inner |= {n.output[0] for n in sub.node if n.op_type == "Constant" and n.output}
                if top is not None:
                    reason = (
                        f"{SUBGRAPH_REASON} (nested in {top.op_type} {view.node_name(top)}; "
                        "only the branches of a top-level If are pruned)"
                    )
                elif node.op_type == "If":
                    reason = (
                        f"{IF_BRANCH_REASON} ({view.node_name(node)} {attr.name}): pruned by a "
                        "run from the calibration batches that take it"
                    )
                else:
                    reason = (
                        f"{SUBGRAPH_REASON} ({node.op_type} {view.node_name(node)}: its body "
                        "runs once per iteration; only the branches of a top-level If are "
                        "pruned)"
                    )
                for child in sub.node:
                    spec = LAYER_OPS.get(child.op_type)
                    if spec is not None:
                        bears = len(child.input) > spec.weight_input and (
                            child.input[spec.weight_input] in inner
                        )
                    else:
                        bears = holds_unpruned_weight(child, inner.__contains__)
                    if bears:
                        scan.skipped.append(
                            SkippedLayer(parent + view.node_name(child), child.op_type, reason)
                        )
                _skip_subgraph_layers(view, sub, parent, inner, scan, top or node)
