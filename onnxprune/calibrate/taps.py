"""Where a layer's statistics come back from the augmented graph (the tap records), and the
in-graph reductions of MatMul/Gemm inputs: ``x2d`` [rows, K] summed over rows, its K x K
product, the gated moments and the cross term with the dense model's input."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from .gates import GATE_BUILDERS, Gate, NodeSink
from .geometry import ConvGeometry

FLOAT = onnx.TensorProto.FLOAT


@dataclass(frozen=True)
class InputTap:
    shape: str  # [2] int64: (rows, K)
    x_sum: str  # [K]
    x_sq_sum: str  # [K]
    xtx: str | None = None  # [K, K] x2d^T x2d, for reconstruction (--update)


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


def tap_outputs(tap: NodeTaps) -> list[tuple[str, int]]:
    """(output name, element type) of every tensor a node's taps expose."""
    names: list[tuple[str, int]] = []
    if tap.input_tap:
        names.append((tap.input_tap.shape, onnx.TensorProto.INT64))
        names += [(tap.input_tap.x_sum, FLOAT), (tap.input_tap.x_sq_sum, FLOAT)]
        names += [(tap.input_tap.xtx, FLOAT)] if tap.input_tap.xtx else []
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


def _as_2d(sink: NodeSink, tensor: str, columns: int, real_rows: str | None = None) -> str:
    """``tensor`` as float [rows, K]; with ``real_rows`` (int64 [R'] row indices), only those
    rows: padding is dropped before any product is paid for."""
    as_float = sink.op("Cast", tensor, to=FLOAT)
    x2d = sink.op("Reshape", as_float, sink.const([-1, columns], dtype=np.int64))
    if real_rows is None:
        return x2d
    return sink.op("Gather", x2d, real_rows, axis=0, hint="x_real")


def reduce_rows(sink: NodeSink, op_type: str, x2d: str, opset: int, hint: str) -> str:
    """Sum over axis 0 without keeping it, in the form the model's opset accepts."""
    return reduce(sink, op_type, x2d, [0], opset, hint)


def reduce(sink: NodeSink, op_type: str, x: str, axes: list[int], opset: int, hint: str) -> str:
    """Reduce over ``axes`` without keeping them, in the form the model's opset accepts."""
    axes_as_input = opset >= 18 or (op_type == "ReduceSum" and opset >= 13)
    if axes_as_input:
        return sink.op(op_type, x, sink.const(axes, dtype=np.int64), keepdims=0, hint=hint)
    return sink.op(op_type, x, axes=axes, keepdims=0, hint=hint)


def input_tap(
    sink: NodeSink,
    data: str,
    columns: int,
    opset: int,
    hessian: bool = False,
    real_rows: str | None = None,
) -> InputTap:
    x2d = _as_2d(sink, data, columns, real_rows)
    xtx = None
    if hessian:
        xtx = sink.op("MatMul", sink.op("Transpose", x2d, perm=[1, 0]), x2d, hint="xtx")
    return InputTap(
        shape=sink.op("Shape", x2d, hint="x_shape"),
        x_sum=reduce_rows(sink, "ReduceSum", x2d, opset, "x_sum"),
        x_sq_sum=reduce_rows(sink, "ReduceSumSquare", x2d, opset, "x_sq_sum"),
        xtx=xtx,
    )


def cross_tap(
    sink: NodeSink,
    data: str,
    ref_data: str,
    columns: int,
    opset: int,
    real_rows: str | None = None,
) -> CrossTap:
    x2d = _as_2d(sink, data, columns, real_rows)  # [R, K]
    # [R, K], the same rows (same samples and positions) of the dense model's input
    ref2d = _as_2d(sink, ref_data, columns, real_rows)
    ref_t = sink.op("Transpose", ref2d, perm=[1, 0])  # [K, R]
    return CrossTap(
        cross=sink.op("MatMul", ref_t, x2d, hint="cross"),
        ref_sum=reduce_rows(sink, "ReduceSum", ref2d, opset, "ref_sum"),
    )


def squared_gate(sink: NodeSink, gate: Gate) -> str:
    z = sink.op("Cast", gate.z, to=FLOAT)
    g = GATE_BUILDERS[gate.kind](sink, z, gate.params)
    return sink.op("Mul", g, g, hint="g2")


def gated_tap(
    sink: NodeSink,
    data: str,
    columns: int,
    gate: Gate,
    rows: int,
    opset: int,
    real_rows: str | None = None,
) -> GatedTap:
    x2d = _as_2d(sink, data, columns, real_rows)  # [R, K]
    g2 = squared_gate(sink, gate)
    g2_2d = sink.op("Reshape", g2, sink.const([-1, rows], dtype=np.int64))  # [R, out]
    if real_rows is not None:
        g2_2d = sink.op("Gather", g2_2d, real_rows, axis=0, hint="g2_real")
    x_t = sink.op("Transpose", x2d, perm=[1, 0])  # [K, R]
    x_sq_t = sink.op("Transpose", sink.op("Mul", x2d, x2d), perm=[1, 0])
    return GatedTap(
        g2_sum=reduce_rows(sink, "ReduceSum", g2_2d, opset, "g2_sum"),
        gx_sum=sink.op("MatMul", x_t, g2_2d, hint="gx_sum"),
        gx_sq_sum=sink.op("MatMul", x_sq_t, g2_2d, hint="gx_sq_sum"),
    )
