"""Augment a copy of the graph so each layer's statistics come back as small extra outputs.

MatMul/Gemm: the layer input is viewed as ``x2d`` [rows, K] inside the graph and reduced there:
``sum(x)``, ``sum(x^2)`` [K], and, when the method needs the blind-range gates, the gated moments
``x2d^T @ g2`` and ``(x2d^2)^T @ g2`` [K, out] plus ``sum(g2)`` [out] (two matrix products per
batch, the cost of the layer's own forward pass). A tensor read by several layers (Q/K/V) is
reduced once. Conv: the same sums per conv group, also inside the graph (``_conv_graph_tap``):
a one-hot "patch" Conv turns the input into its im2col columns, then MatMuls and reductions over
(batch, positions) return only [G, K, K]-sized tensors per batch, in float32; the runner folds
them into float64. Only with a reference model (update_target "dense") are the raw conv input
and ``g2`` exposed and folded with im2col in numpy (``ConvTap``).

With a ``reference`` model (the dense original, for ``update_target="dense"``), a renamed copy of
it runs in the same graph on the same inputs, and each layer also gets the cross term
``x_ref2d^T @ x2d`` [K, K] and ``sum(x_ref)`` [K] of its dense-model input ``x_ref``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ..graph import GraphView
from ..layers import Layer
from .gates import GATE_BUILDERS, Gate, NodeSink, find_gate
from .stats import ConvGeometry

FLOAT = onnx.TensorProto.FLOAT


@dataclass(frozen=True)
class InputTap:
    shape: str  # [2] int64: (rows, K)
    x_sum: str  # [K]
    x_sq_sum: str  # [K]
    xtx: str | None = None  # [K, K] x2d^T x2d, for reconstruction (--update)
    # With a sample mask: the number of real (unpadded) rows, float []; replaces shape[0].
    count: str | None = None


@dataclass(frozen=True)
class GatedTap:
    g2_sum: str  # [out]
    gx_sum: str  # [K, out]
    gx_sq_sum: str  # [K, out]


@dataclass(frozen=True)
class ConvTap:
    x: str  # [N, C, *spatial] float32
    g2: str | None  # [N, Cout, *spatial_out] float32
    geometry: ConvGeometry
    out_channels: int
    hessian: bool = False  # also fold patches^T patches per group (for --update)
    x_ref: str | None = None  # [N, C, *spatial]: the dense model's input (update_target dense)


@dataclass(frozen=True)
class ConvGraphTap:
    """A Conv layer's moments reduced inside the graph, per conv group G (K = Cg * prod(kernel)
    columns ordered (kernel position, input channel), Rg = Cout / G rows)."""

    shape: str  # [4] int64: the patch tensor's (N, G, K, P), P output positions per sample
    x_sum: str  # [G, K]
    x_sq_sum: str  # [G, K]
    xtx: str | None = None  # [G, K, K]
    g2_sum: str | None = None  # [G, Rg]
    gx_sum: str | None = None  # [G, K, Rg]
    gx_sq_sum: str | None = None  # [G, K, Rg]


@dataclass(frozen=True)
class CrossTap:
    """The dense model's input ``x_ref`` of a MatMul/Gemm layer against the model's own ``x``."""

    cross: str  # [K, K] x_ref2d^T x2d
    ref_sum: str  # [K]


@dataclass(frozen=True)
class NodeTaps:
    """Where one node's statistics come back from the augmented graph."""

    input_tap: InputTap | None = None
    gated: GatedTap | None = None
    conv: ConvTap | None = None
    conv_graph: ConvGraphTap | None = None
    cross: CrossTap | None = None


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
    input_taps: dict[tuple[str, int, bool, bool], InputTap] = {}
    cross_taps: dict[tuple[str, int, bool], CrossTap] = {}
    # Fed inputs only: an old-IR model also lists its initializers as graph inputs.
    stored = {t.name for t in model.graph.initializer}
    graph_inputs = {i.name for i in model.graph.input if i.name not in stored}

    def ref_name(name: str) -> str:
        return name if name in graph_inputs else REFERENCE_PREFIX + name

    row_weights = None
    if masked_inputs:
        assert sample_mask is not None
        flat = sink.op("Reshape", sample_mask, sink.const([-1, 1], dtype=np.int64))
        row_weights = sink.op("Cast", flat, to=FLOAT, hint="row_weight")  # [B*S, 1]
    for layer in layers:
        rows, columns = layer.matrix_shape
        gates = [find_gate(view, node) for node in layer.nodes]
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
                geometry = ConvGeometry.from_node(node, layer.shape)
                if reference is None or not use_hessian:
                    positions = (conv_positions or {}).get(node.output[0], 0)
                    step = position_step(positions, geometry, columns * geometry.group)
                    g2 = None
                    if use_gate:
                        # The gate on the grid only: sliced before it is computed.
                        axes = list(range(2, len(layer.shape)))
                        z = gate.z if step == 1 else _every(sink, gate.z, axes, step)
                        g2 = _squared_gate(sink, dataclasses.replace(gate, z=z))
                    graph_tap = _conv_graph_tap(
                        sink, data, g2, geometry, layer.shape, use_hessian, view.opset, step
                    )
                    node_taps.append(NodeTaps(conv_graph=graph_tap))
                    continue
                g2 = _squared_gate(sink, gate) if use_gate else None
                x = sink.op("Cast", data, to=FLOAT, hint="x")
                x_ref = sink.op("Cast", ref_name(data), to=FLOAT, hint="x_ref")
                conv_tap = ConvTap(x, g2, geometry, rows, use_hessian, x_ref)
                node_taps.append(NodeTaps(conv=conv_tap))
                continue
            weights = row_weights if data in masked_inputs else None
            key = (data, columns, use_hessian, weights is not None)
            if key not in input_taps:
                input_taps[key] = _input_tap(sink, data, columns, view.opset, use_hessian, weights)
            gated_tap = None
            if use_gate:
                gated_tap = _gated_tap(sink, data, columns, gate, rows, view.opset, weights)
            cross_tap = None
            if reference is not None and use_hessian:
                cross_key = (data, columns, weights is not None)
                if cross_key not in cross_taps:
                    cross_taps[cross_key] = _cross_tap(
                        sink, data, ref_name(data), columns, view.opset, weights
                    )
                cross_tap = cross_taps[cross_key]
            node_taps.append(NodeTaps(input_tap=input_taps[key], gated=gated_tap, cross=cross_tap))
        plan.taps[layer.weight_name] = node_taps

    if reference is not None:
        nodes, initializers = _renamed_reference(reference, graph_inputs)
        augmented.graph.node.extend(nodes)  # before the taps that read them
        augmented.graph.initializer.extend(initializers)
    augmented.graph.node.extend(sink.nodes)
    augmented.graph.initializer.extend(sink.initializers)
    existing = {o.name for o in augmented.graph.output}
    for taps in plan.taps.values():
        for tap in taps:
            for name, elem in _tap_outputs(tap):
                if name not in existing:
                    existing.add(name)
                    plan.outputs.append(name)
                    augmented.graph.output.append(
                        onnx.helper.make_tensor_value_info(name, elem, None)
                    )
    return plan


def _tap_outputs(tap: NodeTaps) -> list[tuple[str, int]]:
    """(output name, element type) of every tensor a node's taps expose."""
    names: list[tuple[str, int]] = []
    if tap.input_tap:
        names.append((tap.input_tap.shape, onnx.TensorProto.INT64))
        names += [(tap.input_tap.x_sum, FLOAT), (tap.input_tap.x_sq_sum, FLOAT)]
        names += [(n, FLOAT) for n in (tap.input_tap.xtx, tap.input_tap.count) if n]
    if tap.gated:
        names += [(n, FLOAT) for n in (tap.gated.g2_sum, tap.gated.gx_sum, tap.gated.gx_sq_sum)]
    if tap.conv:
        names += [(n, FLOAT) for n in (tap.conv.x, tap.conv.g2, tap.conv.x_ref) if n]
    if tap.conv_graph:
        c = tap.conv_graph
        names.append((c.shape, onnx.TensorProto.INT64))
        floats = (c.x_sum, c.x_sq_sum, c.xtx, c.g2_sum, c.gx_sum, c.gx_sq_sum)
        names += [(n, FLOAT) for n in floats if n]
    if tap.cross:
        names += [(tap.cross.cross, FLOAT), (tap.cross.ref_sum, FLOAT)]
    return names


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


def _as_2d(sink: NodeSink, tensor: str, columns: int) -> str:
    as_float = sink.op("Cast", tensor, to=FLOAT)
    return sink.op("Reshape", as_float, sink.const([-1, columns], dtype=np.int64))


def _reduce_rows(sink: NodeSink, op_type: str, x2d: str, opset: int, hint: str) -> str:
    """Sum over axis 0 without keeping it, in the form the model's opset accepts."""
    return _reduce(sink, op_type, x2d, [0], opset, hint)


def _reduce(sink: NodeSink, op_type: str, x: str, axes: list[int], opset: int, hint: str) -> str:
    """Reduce over ``axes`` without keeping them, in the form the model's opset accepts."""
    axes_as_input = opset >= 18 or (op_type == "ReduceSum" and opset >= 13)
    if axes_as_input:
        return sink.op(op_type, x, sink.const(axes, dtype=np.int64), keepdims=0, hint=hint)
    return sink.op(op_type, x, axes=axes, keepdims=0, hint=hint)


def patch_kernel(weight_shape: tuple[int, ...], groups: int) -> np.ndarray:
    """One-hot weights [G * K, Cg, *kernel] of a Conv whose output channel g*K + p*Cg + c copies
    input channel c of group g at kernel position p (row-major): with the layer's strides,
    pads, dilations and group, that Conv's output holds the layer's im2col columns in the
    (kernel position, input channel) order of ``layers._conv_to_matrix``."""
    channels = weight_shape[1]  # Cg
    kernel = tuple(weight_shape[2:])
    positions = int(np.prod(kernel))
    columns = positions * channels
    one_hot = np.zeros((columns, channels, positions), dtype=np.float32)
    p, c = np.divmod(np.arange(columns), channels)
    one_hot[np.arange(columns), c, p] = 1.0
    repeats = (groups, *([1] * (1 + len(kernel))))
    return np.tile(one_hot.reshape(columns, channels, *kernel), repeats)


# Conv statistics are gathered on at most about this many output positions per sample: a
# regular grid of every ``step``-th row and column (neighbouring positions see overlapping
# patches, so a sparser grid loses little, while the K x K products cost K^2 per position).
MAX_CONV_POSITIONS = 256
# ... and on fewer where a position's patch column (input channels x kernel, all groups) is
# wide: at most about MAX_PATCH_VALUES patch values per sample, never fewer than
# MIN_CONV_POSITIONS positions. A 5x5 depthwise conv over 672 channels at 14x14 has 16800
# values per position: all 196 positions made a 420 MB patch tensor per batch of 32 and
# cost more than the rest of the calibration pass, for 25 x 25 problems that 64 samples x
# 16 positions (1024 rows) already determine well.
MAX_PATCH_VALUES = 1 << 18
MIN_CONV_POSITIONS = 16


def position_step(positions: int, geo: ConvGeometry, patch_width: int = 1) -> int:
    """The grid step (per spatial axis) for a Conv with ``positions`` outputs per sample and
    ``patch_width`` patch values per position: 1 (every position) for small outputs,
    unknown sizes and auto_pad convs (whose padding depends on the stride)."""
    wanted = min(MAX_CONV_POSITIONS, max(MIN_CONV_POSITIONS, MAX_PATCH_VALUES // patch_width))
    if positions <= wanted or geo.auto_pad not in ("NOTSET", ""):
        return 1
    spatial = len(geo.kernel)
    return max(1, math.ceil((positions / wanted) ** (1.0 / spatial)))


def _every(sink: NodeSink, x: str, axes: list[int], step: int) -> str:
    """Every ``step``-th element of ``x`` along ``axes``, from the first."""
    big = np.iinfo(np.int64).max
    return sink.op(
        "Slice",
        x,
        sink.const([0] * len(axes), dtype=np.int64),
        sink.const([big] * len(axes), dtype=np.int64),
        sink.const(axes, dtype=np.int64),
        sink.const([step] * len(axes), dtype=np.int64),
        hint="grid",
    )


def _conv_graph_tap(
    sink: NodeSink,
    data: str,
    g2: str | None,
    geo: ConvGeometry,
    weight_shape: tuple[int, ...],
    hessian: bool,
    opset: int,
    step: int = 1,
) -> ConvGraphTap:
    """Moments of a Conv's input per conv group, reduced inside the graph.

    ``patches`` [N, G*K, *out] comes from a one-hot Conv (``patch_kernel``) with the layer's
    geometry; a pointwise conv with unit strides and no padding is its own im2col. Viewed as
    [N, G, K, P], the sums reduce over (N, P) and the products are batched MatMuls over (N, G)
    summed over N: the cost of the layer's own forward pass, for K x K instead of Cout x K.
    ``step`` > 1: only every ``step``-th output position along each spatial axis is gathered
    (the patch Conv's strides times ``step``; ``g2`` must be on the same grid).
    """
    groups = geo.group
    rows = weight_shape[0] // groups  # Rg
    columns = int(np.prod(weight_shape[1:]))  # K = Cg * prod(kernel)
    x = sink.op("Cast", data, to=FLOAT, hint="conv_x")
    spatial = len(weight_shape) - 2
    pointwise = (
        all(k == 1 for k in weight_shape[2:])
        and all(s == 1 for s in geo.strides)
        and not any(geo.pads)
        and geo.auto_pad in ("NOTSET", "", "VALID")
    )
    axes = list(range(2, 2 + spatial))
    if pointwise:
        patches = x if step == 1 else _every(sink, x, axes, step)
    else:
        attrs: dict[str, object] = {
            "group": groups,
            "strides": [s * step for s in geo.strides],
            "dilations": list(geo.dilations),
            "kernel_shape": list(weight_shape[2:]),
        }
        if geo.auto_pad in ("NOTSET", ""):
            attrs["pads"] = list(geo.pads) if geo.pads else [0] * (2 * spatial)
        else:
            attrs["auto_pad"] = geo.auto_pad
        kernel = sink.const(patch_kernel(weight_shape, groups), dtype=np.float32)
        patches = sink.op("Conv", x, kernel, hint="patches", **attrs)  # [N, G*K, *out]
    p4 = sink.op(  # [N, G, K, P]
        "Reshape", patches, sink.const([0, groups, columns, -1], dtype=np.int64), hint="p4"
    )
    # Samples and positions side by side, [G, K, N*P]: every sum below is then one MatMul or
    # reduction per group, with no [N, G, K, K] intermediate to sum over N (for a pointwise
    # conv over 1152 channels that intermediate was 6x the patch tensor, and summing it cost
    # as much as the products).
    pg = _by_group(sink, p4, groups, columns, "pg")
    xtx = gx_sum = gx_sq_sum = g2_sum = None
    if hessian:
        # A Transpose read only by the MatMul: onnxruntime fuses the pair (no transposed copy).
        pg_t = sink.op("Transpose", pg, perm=[0, 2, 1], hint="pg_t")  # [G, N*P, K]
        xtx = sink.op("MatMul", pg, pg_t, hint="conv_xtx")  # [G, K, K]
    if g2 is not None:
        g4 = sink.op(  # [N, G, Rg, P]
            "Reshape", g2, sink.const([0, groups, rows, -1], dtype=np.int64), hint="g4"
        )
        gg = _by_group(sink, g4, groups, rows, "gg")  # [G, Rg, N*P]
        g2_sum = _reduce(sink, "ReduceSum", gg, [2], opset, "conv_g2_sum")  # [G, Rg]
        # Products as patches @ gates^T ([G, K, Rg]): the gate map is transposed, never the
        # (larger) patch tensor; the sums are swapped to [G, Rg, K] in numpy.
        gg_t = sink.op("Transpose", gg, perm=[0, 2, 1], hint="gg_t")  # [G, N*P, Rg]
        gx_sum = sink.op("MatMul", pg, gg_t, hint="conv_gx")
        pg_sq = sink.op("Mul", pg, pg, hint="pg_sq")
        gx_sq_sum = sink.op("MatMul", pg_sq, gg_t, hint="conv_gx_sq")
    return ConvGraphTap(
        shape=sink.op("Shape", p4, hint="p4_shape"),
        x_sum=_reduce(sink, "ReduceSum", pg, [2], opset, "conv_x_sum"),  # [G, K]
        x_sq_sum=_reduce(sink, "ReduceSumSquare", pg, [2], opset, "conv_x_sq_sum"),
        xtx=xtx,
        g2_sum=g2_sum,
        gx_sum=gx_sum,
        gx_sq_sum=gx_sq_sum,
    )


def _by_group(sink: NodeSink, x4: str, groups: int, width: int, hint: str) -> str:
    """[N, G, W, P] -> [G, W, N*P]."""
    moved = sink.op("Transpose", x4, perm=[1, 2, 0, 3], hint=f"{hint}_t")  # [G, W, N, P]
    return sink.op("Reshape", moved, sink.const([groups, width, -1], dtype=np.int64), hint=hint)


def _input_tap(
    sink: NodeSink,
    data: str,
    columns: int,
    opset: int,
    hessian: bool = False,
    row_weights: str | None = None,
) -> InputTap:
    x2d = _as_2d(sink, data, columns)
    count = None
    if row_weights is not None:
        # Padded rows become zeros (weights are 0/1, so (x m)^2 = x^2 m) and are not counted.
        x2d = sink.op("Mul", x2d, row_weights, hint="x_masked")
        count = sink.op("ReduceSum", row_weights, keepdims=0, hint="count")
    xtx = None
    if hessian:
        xtx = sink.op("MatMul", sink.op("Transpose", x2d, perm=[1, 0]), x2d, hint="xtx")
    return InputTap(
        shape=sink.op("Shape", x2d, hint="x_shape"),
        x_sum=_reduce_rows(sink, "ReduceSum", x2d, opset, "x_sum"),
        x_sq_sum=_reduce_rows(sink, "ReduceSumSquare", x2d, opset, "x_sq_sum"),
        xtx=xtx,
        count=count,
    )


def _cross_tap(
    sink: NodeSink,
    data: str,
    ref_data: str,
    columns: int,
    opset: int,
    row_weights: str | None = None,
) -> CrossTap:
    x2d = _as_2d(sink, data, columns)  # [R, K]
    ref2d = _as_2d(sink, ref_data, columns)  # [R, K], same rows (same samples and positions)
    if row_weights is not None:
        ref2d = sink.op("Mul", ref2d, row_weights, hint="x_ref_masked")  # 0/1: masks the product
    ref_t = sink.op("Transpose", ref2d, perm=[1, 0])  # [K, R]
    return CrossTap(
        cross=sink.op("MatMul", ref_t, x2d, hint="cross"),
        ref_sum=_reduce_rows(sink, "ReduceSum", ref2d, opset, "ref_sum"),
    )


def _squared_gate(sink: NodeSink, gate: Gate) -> str:
    z = sink.op("Cast", gate.z, to=FLOAT)
    g = GATE_BUILDERS[gate.kind](sink, z, gate.params)
    return sink.op("Mul", g, g, hint="g2")


def _gated_tap(
    sink: NodeSink,
    data: str,
    columns: int,
    gate: Gate,
    rows: int,
    opset: int,
    row_weights: str | None = None,
) -> GatedTap:
    x2d = _as_2d(sink, data, columns)  # [R, K]
    g2 = _squared_gate(sink, gate)
    g2_2d = sink.op("Reshape", g2, sink.const([-1, rows], dtype=np.int64))  # [R, out]
    if row_weights is not None:
        g2_2d = sink.op("Mul", g2_2d, row_weights, hint="g2_masked")
    x_t = sink.op("Transpose", x2d, perm=[1, 0])  # [K, R]
    x_sq_t = sink.op("Transpose", sink.op("Mul", x2d, x2d), perm=[1, 0])
    return GatedTap(
        g2_sum=_reduce_rows(sink, "ReduceSum", g2_2d, opset, "g2_sum"),
        gx_sum=sink.op("MatMul", x_t, g2_2d, hint="gx_sum"),
        gx_sq_sum=sink.op("MatMul", x_sq_t, g2_2d, hint="gx_sq_sum"),
    )
