"""Augment a copy of the graph so each layer's statistics come back as small extra outputs.

MatMul/Gemm: the layer input is viewed as ``x2d`` [rows, K] inside the graph and reduced there:
``sum(x)``, ``sum(x^2)`` [K], and, when the method needs the blind-range gates, the gated moments
``x2d^T @ g2`` and ``(x2d^2)^T @ g2`` [K, out] plus ``sum(g2)`` [out] (two matrix products per
batch, the cost of the layer's own forward pass). A tensor read by several layers (Q/K/V) is
reduced once (``taps``). With a sample mask, padded rows are gathered out before any sum or
product, so padding costs nothing. Conv: the same sums per conv group, also inside the graph
(``conv_taps``): a Gather (or, depthwise, a one-hot "patch" Conv) turns the input into its
im2col columns, then MatMuls and reductions over (batch, positions) return only [G, K, K]-sized
tensors per batch, in float32; the runner folds them into float64. Only with a reference model
(update_target "dense") are the raw conv input and ``g2`` exposed and folded with im2col in numpy
(``ConvTap``).

With a ``reference`` model (the dense original, for ``update_target="dense"``), a renamed copy of
it runs in the same graph on the same inputs, and each layer also gets the cross term
``x_ref2d^T @ x2d`` [K, K] and ``sum(x_ref)`` [K] of its dense-model input ``x_ref``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ..graph import GraphView
from ..layers import Layer
from .conv_taps import conv_graph_tap, grid_by_conv, position_step
from .gates import Gate, NodeSink, find_gate
from .geometry import ConvGeometry
from .padding import PadFolder, unpadded_input
from .taps import (
    FLOAT,
    ConvGraphTap,
    ConvTap,
    CrossTap,
    GatedTap,
    InputTap,
    NodeTaps,
    cross_tap,
    gated_tap,
    input_tap,
    squared_gate,
    tap_outputs,
)

__all__ = [
    "CalibrationPlan",
    "ConvGraphTap",
    "ConvTap",
    "CrossTap",
    "GatedTap",
    "InputTap",
    "NodeTaps",
    "build_plan",
    "has_subgraphs",
]


@dataclass
class CalibrationPlan:
    model: onnx.ModelProto
    taps: dict[str, list[NodeTaps]] = field(default_factory=dict)  # by weight name
    gates: dict[str, str] = field(default_factory=dict)  # weight name -> gate kind
    outputs: list[str] = field(default_factory=list)
    # Layers whose K x K input correlation would not fit (no reconstruction for them).
    too_wide: list[str] = field(default_factory=list)


# The largest K for which the K x K float64 input correlation is gathered (512 MiB per layer).
MAX_HESSIAN_COLUMNS = 8192
# Tensor names of the reference (dense) model's copy inside an augmented graph start with this.
REFERENCE_PREFIX = "onnxprune_dense/"


@dataclass
class _Builder:
    """What every layer's taps share while one augmented graph is built."""

    view: GraphView
    sink: NodeSink
    graph_inputs: set[str]
    conv_positions: dict[str, int]
    reference: bool
    real_rows: str | None  # int64 [R']: the unpadded rows of the flattened [B*S] sample mask
    masked_inputs: frozenset[str]
    # One tap per (tensor, K, hessian, masked): a tensor read by several layers (Q/K/V).
    input_taps: dict[tuple[str, int, bool, bool], InputTap] = field(default_factory=dict)
    cross_taps: dict[tuple[str, int, bool], CrossTap] = field(default_factory=dict)
    # The Pads' computed pads (``unpadded_input``), folded on first use.
    pad_folder: PadFolder = field(init=False)

    def __post_init__(self) -> None:
        self.pad_folder = PadFolder(self.view)

    def ref_name(self, name: str) -> str:
        return name if name in self.graph_inputs else REFERENCE_PREFIX + name


def build_plan(
    model: onnx.ModelProto,
    layers: list[Layer],
    gated: bool,
    hessian: bool = False,
    sample_mask: str | None = None,
    masked_inputs: frozenset[str] = frozenset(),
    base_dir: Path | None = None,
    reference: onnx.ModelProto | None = None,
    conv_positions: dict[str, int] | None = None,
) -> CalibrationPlan:
    """A copy of ``model`` with statistic outputs for every layer (the input stays untouched).

    ``sample_mask``: a graph input [batch, seq] (e.g. ``attention_mask``) whose zeros mark
    padding; statistics of the layers reading a tensor in ``masked_inputs`` ([batch, seq, K])
    then count real tokens only. ``base_dir``: where external tensors are read from.
    ``reference``: the dense model (same graph inputs and layer input names, no subgraphs); the
    layers with an input correlation also get the cross terms with its inputs (``CrossTap``).
    ``conv_positions``: output positions per sample of each Conv node (by output name), seen
    at run time; large outputs are subsampled (``position_step``).
    """
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    view = GraphView(augmented, base_dir)
    sink = NodeSink(view, "onnxprune")
    plan = CalibrationPlan(augmented)
    # Fed inputs only: an old-IR model also lists its initializers as graph inputs.
    stored = {t.name for t in model.graph.initializer}
    graph_inputs = {i.name for i in model.graph.input if i.name not in stored}
    real_rows = None
    if masked_inputs:
        assert sample_mask is not None
        flat = sink.op("Reshape", sample_mask, sink.const([-1], dtype=np.int64))  # [B*S]
        nonzero = sink.op("NonZero", sink.op("Cast", flat, to=onnx.TensorProto.BOOL))  # [1, R']
        real_rows = sink.op("Reshape", nonzero, sink.const([-1], dtype=np.int64), hint="real_rows")
    builder = _Builder(
        view, sink, graph_inputs, conv_positions or {}, reference is not None, real_rows,
        masked_inputs,
    )  # fmt: skip
    for layer in layers:
        _add_layer(builder, plan, layer, gated, hessian)

    if reference is not None:
        nodes, initializers = _renamed_reference(reference, graph_inputs)
        augmented.graph.node.extend(nodes)  # before the taps that read them
        augmented.graph.initializer.extend(initializers)
    augmented.graph.node.extend(sink.nodes)
    augmented.graph.initializer.extend(sink.initializers)
    _expose_outputs(plan)
    return plan


def _add_layer(
    builder: _Builder, plan: CalibrationPlan, layer: Layer, gated: bool, hessian: bool
) -> None:
    """The taps of every node of ``layer``, recorded in ``plan`` under its weight name."""
    rows, columns = layer.matrix_shape
    gates = [find_gate(builder.view, node) for node in layer.nodes]
    kinds = {g.kind for g in gates}
    # Nodes sharing a weight but followed by different activations: gate nothing.
    gate_kind = kinds.pop() if len(kinds) == 1 else "none"
    plan.gates[layer.weight_name] = gate_kind
    use_gate = gated and gate_kind != "none"
    use_hessian = hessian and columns <= MAX_HESSIAN_COLUMNS
    if hessian and not use_hessian:
        plan.too_wide.append(layer.weight_name)
    node_taps = []
    for node, gate in zip(layer.nodes, gates, strict=True):
        data = node.input[layer.op.data_input]
        if layer.op.stats_kind == "conv":
            tap = _conv_taps(builder, layer, node, gate if use_gate else None, use_hessian)
        else:
            tap = _matrix_taps(
                builder, data, rows, columns, gate if use_gate else None, use_hessian
            )
        node_taps.append(tap)
    plan.taps[layer.weight_name] = node_taps


def _conv_taps(
    builder: _Builder, layer: Layer, node: onnx.NodeProto, gate: Gate | None, hessian: bool
) -> NodeTaps:
    """A Conv node's taps: reduced in the graph, or (dense reference with an input correlation)
    the raw input exposed for numpy (``ConvTap``)."""
    sink = builder.sink
    rows, columns = layer.matrix_shape
    data = node.input[layer.op.data_input]
    geometry = ConvGeometry.from_node(node, layer.shape)
    if not builder.reference or not hessian:
        positions = builder.conv_positions.get(node.output[0], 0)
        step = position_step(positions, geometry, columns)
        g2 = None
        if gate is not None:
            # The gate on the grid only: subsampled before it is computed (by a strided identity
            # conv rather than Slice: see ``grid_by_conv``), in float32 like the patches.
            z = gate.z
            if step > 1:
                as_float = sink.op("Cast", gate.z, to=FLOAT)
                z = grid_by_conv(sink, as_float, layer.shape[0], len(layer.shape) - 2, step)
            g2 = squared_gate(sink, dataclasses.replace(gate, z=z))
        source, padded = unpadded_input(builder.view, data, geometry, builder.pad_folder)
        graph_tap = conv_graph_tap(
            sink, source, g2, padded, layer.shape, hessian, builder.view.opset, step
        )
        return NodeTaps(conv_graph=graph_tap)
    g2 = squared_gate(sink, gate) if gate is not None else None
    x = sink.op("Cast", data, to=FLOAT, hint="x")
    x_ref = sink.op("Cast", builder.ref_name(data), to=FLOAT, hint="x_ref")
    return NodeTaps(conv=ConvTap(x, g2, geometry, rows, hessian, x_ref))


def _matrix_taps(
    builder: _Builder, data: str, rows: int, columns: int, gate: Gate | None, hessian: bool
) -> NodeTaps:
    """A MatMul/Gemm node's taps on its input ``data`` viewed as [rows, K]."""
    sink, opset = builder.sink, builder.view.opset
    real_rows = builder.real_rows if data in builder.masked_inputs else None
    key = (data, columns, hessian, real_rows is not None)
    if key not in builder.input_taps:
        builder.input_taps[key] = input_tap(sink, data, columns, opset, hessian, real_rows)
    gated_moments = None
    if gate is not None:
        gated_moments = gated_tap(sink, data, columns, gate, rows, opset, real_rows)
    cross = None
    if builder.reference and hessian:
        cross_key = (data, columns, real_rows is not None)
        if cross_key not in builder.cross_taps:
            builder.cross_taps[cross_key] = cross_tap(
                sink, data, builder.ref_name(data), columns, opset, real_rows
            )
        cross = builder.cross_taps[cross_key]
    return NodeTaps(input_tap=builder.input_taps[key], gated=gated_moments, cross=cross)


def _expose_outputs(plan: CalibrationPlan) -> None:
    """Every tap tensor becomes a graph output once, in the order the layers were tapped."""
    graph = plan.model.graph
    existing = {o.name for o in graph.output}
    for taps in plan.taps.values():
        for tap in taps:
            for name, elem in tap_outputs(tap):
                if name not in existing:
                    existing.add(name)
                    plan.outputs.append(name)
                    graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))


def has_subgraphs(model: onnx.ModelProto) -> bool:
    """Whether a node of the main graph holds a subgraph (If, Loop, Scan)."""
    kinds = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    return any(a.type in kinds for node in model.graph.node for a in node.attribute)


def _renamed_reference(
    reference: onnx.ModelProto, graph_inputs: set[str]
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The reference model's nodes and initializers with every tensor and node name prefixed
    by ``REFERENCE_PREFIX``, except the graph inputs, which both copies read."""
    if has_subgraphs(reference):
        raise ValueError("a reference model with subgraphs cannot be merged")

    def rename(name: str) -> str:
        return name if not name or name in graph_inputs else REFERENCE_PREFIX + name

    nodes = []
    for node in reference.graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = REFERENCE_PREFIX + node.name if node.name else ""
        copy.input[:] = [rename(n) for n in node.input]
        copy.output[:] = [rename(n) for n in node.output]
        nodes.append(copy)
    initializers = []
    for tensor in reference.graph.initializer:
        renamed = onnx.TensorProto()
        renamed.CopyFrom(tensor)
        renamed.name = rename(tensor.name)
        initializers.append(renamed)
    return nodes, initializers
