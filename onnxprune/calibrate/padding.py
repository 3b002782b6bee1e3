"""A conv behind a zero-constant ``Pad``: its statistics are read from the Pad's input with the
pads folded into the patch Conv, so onnxruntime keeps the model's Pad fused into its Conv."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx

from ..graph import GraphView
from .geometry import ConvGeometry


def unpadded_input(
    view: GraphView, data: str, geo: ConvGeometry, folder: PadFolder
) -> tuple[str, ConvGeometry]:
    """``data`` and ``geo``, or, when ``data`` comes from a zero-constant spatial ``Pad`` (as
    TF-style exporters write "same" padding), the Pad's input and ``geo`` with those pads
    added: the patch Conv then pads by itself, and the model's Pad, no longer read by a tap,
    stays fused into its Conv (tapping the padded tensor made onnxruntime run it alone, 13%
    of EfficientNet-Lite0's calibration pass)."""
    pad = view.producer.get(data)
    if pad is None or pad.op_type != "Pad" or geo.auto_pad not in ("NOTSET", ""):
        return data, geo
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in pad.attribute}
    mode = attrs.get("mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        return data, geo
    if "pads" in attrs:  # opset < 11
        pads: list[int] | None = [int(v) for v in attrs["pads"]]
        fill = float(attrs.get("value", 0.0))
    else:
        found = folder.value(pad.input[1]) if len(pad.input) > 1 else None
        pads = None if found is None else [int(v) for v in found.reshape(-1)]
        value = pad.input[2] if len(pad.input) > 2 and pad.input[2] else None
        constant = folder.value(value) if value else np.zeros(1)
        fill = np.nan if constant is None else float(np.asarray(constant).reshape(-1)[0])
        if len(pad.input) > 3 and pad.input[3]:  # explicit axes (opset 18): not handled
            pads = None
    spatial = len(geo.kernel)
    rank = spatial + 2
    if pads is None or len(pads) != 2 * rank or fill != 0.0 or min(pads) < 0:
        return data, geo
    begins, ends = pads[:rank], pads[rank:]
    if any(begins[:2]) or any(ends[:2]):  # batch or channel padding
        return data, geo
    own = list(geo.pads) if geo.pads else [0] * (2 * spatial)
    merged = [a + b for a, b in zip(own, begins[2:] + ends[2:], strict=True)]
    return pad.input[0], dataclasses.replace(geo, pads=tuple(merged))


# The most nodes a computed constant (e.g. a Pad's pads built from Constant, ConstantOfShape,
# Concat, Slice, ...) may take to evaluate; longer chains are left alone.
MAX_FOLDED_NODES = 32


class PadFolder:
    """The values of the computed ``pads`` and ``constant_value`` inputs of a graph's Pads,
    folded on first use all together: one run of onnx's reference evaluator instead of one
    per Pad (EfficientNet-Lite0's 17 Pads each compute their pads with a 15-node chain; one
    evaluator per Pad took 0.2 s of building the calibration graph)."""

    def __init__(self, view: GraphView) -> None:
        self.view = view
        self._values: dict[str, np.ndarray | None] | None = None

    def value(self, name: str) -> np.ndarray | None:
        """``name``'s value when it is stored or computed only from stored values by a few
        nodes; None when it depends on a graph input (or cannot be evaluated)."""
        stored = self.view.constant_value(name)
        if stored is not None:
            return stored
        if self._values is None:
            self._values = self._fold_every_pad()
        if name not in self._values:
            chain = _chain(self.view, name)
            values = None if chain is None else _evaluate(self.view, [name], *chain)
            self._values[name] = None if values is None else values[0]
        return self._values[name]

    def _fold_every_pad(self) -> dict[str, np.ndarray | None]:
        view = self.view
        wanted = {
            tensor: chain
            for node in view.model.graph.node
            if node.op_type == "Pad"
            for tensor in node.input[1:3]
            if tensor and view.constant_value(tensor) is None
            for chain in [_chain(view, tensor)]
            if chain is not None
        }
        names = list(wanted)
        nodes = {id(n): n for chain_nodes, _ in wanted.values() for n in chain_nodes}
        leaves = set().union(*(chain_leaves for _, chain_leaves in wanted.values()))
        values = _evaluate(view, names, list(nodes.values()), leaves) if names else None
        # Not evaluable together (an op the evaluator lacks somewhere): one at a time, on use.
        return {} if values is None else dict(zip(names, values, strict=True))


def _chain(view: GraphView, name: str) -> tuple[list[onnx.NodeProto], set[str]] | None:
    """The nodes computing ``name`` and the stored tensors they start from; None when it
    depends on a graph input, a subgraph or more than MAX_FOLDED_NODES nodes."""
    nodes: list[onnx.NodeProto] = []
    leaves: set[str] = set()
    pending, seen = [name], set()
    while pending:
        tensor = pending.pop()
        if not tensor or tensor in seen:
            continue
        seen.add(tensor)
        if view.is_constant(tensor) and tensor not in view.constant_nodes:
            leaves.add(tensor)
            continue
        node = view.producer.get(tensor)
        if node is None or len(nodes) >= MAX_FOLDED_NODES:
            return None  # a graph input, or too long a chain
        if any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for a in node.attribute
        ):
            return None
        nodes.append(node)
        pending.extend(node.input)
    return nodes, leaves


def _evaluate(
    view: GraphView, names: list[str], nodes: list[onnx.NodeProto], leaves: set[str]
) -> list[np.ndarray] | None:
    """``names`` computed by ``nodes`` (in graph order) from the stored ``leaves``, with onnx's
    reference evaluator; None when it cannot run them."""
    chosen = {id(n) for n in nodes}
    ordered = [n for n in view.model.graph.node if id(n) in chosen]
    initializers = [view.initializers[t] for t in sorted(leaves)]
    graph = onnx.helper.make_graph(
        ordered,
        "folded",
        [],
        [onnx.helper.make_value_info(n, onnx.TypeProto()) for n in names],
        initializers,
    )
    model = onnx.helper.make_model(graph, opset_imports=list(view.model.opset_import))
    # Imported here: onnx's reference evaluator takes about 0.05 s to import, which a model
    # without computed pads should not pay at every start.
    from onnx.reference import ReferenceEvaluator

    try:
        values = ReferenceEvaluator(model).run(names, {})
    except Exception:  # an op the evaluator lacks, unreadable data: leave the taps where they are
        return None
    return [np.asarray(v) for v in values]
