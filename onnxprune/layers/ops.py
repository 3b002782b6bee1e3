"""The registry of prunable op types (MatMul, Gemm, Conv): how each exposes its weight as the
``(out, K)`` matrix view and back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

FLOAT_DTYPES = (np.float16, np.float32, np.float64)


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


@dataclass(frozen=True)
class LayerOp:
    """How one op type exposes a prunable weight."""

    op_type: str
    check: Callable[[onnx.NodeProto, tuple[int, ...]], str | None]
    to_matrix: Callable[[np.ndarray, onnx.NodeProto], np.ndarray]
    from_matrix: Callable[[np.ndarray, onnx.NodeProto, tuple[int, ...]], np.ndarray]
    # Every registered op reads its data at input 0 and its weight at input 1.
    weight_input: int = 1
    data_input: int = 0
    # Index of the bias input (Gemm C, Conv B); None: the bias is a following Add (MatMul).
    bias_input: int | None = None
    # "dense": statistics from a [rows, K] matrix built in the graph; "conv": from im2col.
    stats_kind: str = "dense"
    num_groups: Callable[[onnx.NodeProto], int] = lambda node: 1
    # z = weight_scale * W x + bias_scale * b (Gemm alpha/beta); 1 for the others.
    weight_scale: Callable[[onnx.NodeProto], float] = lambda node: 1.0
    bias_scale: Callable[[onnx.NodeProto], float] = lambda node: 1.0
    # Columns of the matrix view that read the given input channels (the last axis of a
    # MatMul/Gemm input, axis 1 of a Conv input), for a weight of the given shape.
    input_columns: Callable[[np.ndarray, tuple[int, ...]], np.ndarray] = lambda channels, shape: (
        channels
    )
    # Length of one contiguous run of the reduction axis in the matrix view, for a weight of
    # the given shape: K for MatMul/Gemm, input channels per group for Conv (the runs repeat
    # per kernel position). N:M groups of M must fit inside it.
    reduction_run: Callable[[onnx.NodeProto, tuple[int, ...]], int] = lambda node, shape: shape[0]


LAYER_OPS: dict[str, LayerOp] = {}


def register_layer_op(spec: LayerOp) -> LayerOp:
    LAYER_OPS[spec.op_type] = spec
    return spec


def _matmul_check(node: onnx.NodeProto, shape: tuple[int, ...]) -> str | None:
    return None if len(shape) == 2 else f"MatMul weight has rank {len(shape)}, expected 2"


register_layer_op(
    LayerOp(
        op_type="MatMul",
        check=_matmul_check,
        to_matrix=lambda w, node: w.T,
        from_matrix=lambda m, node, shape: m.T,
    )
)


def _gemm_check(node: onnx.NodeProto, shape: tuple[int, ...]) -> str | None:
    if len(shape) != 2:
        return f"Gemm weight has rank {len(shape)}, expected 2"
    if _attr(node, "transA", 0):
        return "Gemm with transA=1 is not supported"
    return None


def _gemm_to_matrix(w: np.ndarray, node: onnx.NodeProto) -> np.ndarray:
    return w if _attr(node, "transB", 0) else w.T


register_layer_op(
    LayerOp(
        op_type="Gemm",
        bias_input=2,
        check=_gemm_check,
        to_matrix=_gemm_to_matrix,
        from_matrix=lambda m, node, shape: _gemm_to_matrix(m, node),
        reduction_run=lambda node, shape: shape[1] if _attr(node, "transB", 0) else shape[0],
        weight_scale=lambda node: float(_attr(node, "alpha", 1.0)),  # type: ignore[arg-type]
        bias_scale=lambda node: float(_attr(node, "beta", 1.0)),  # type: ignore[arg-type]
    )
)


def _conv_check(node: onnx.NodeProto, shape: tuple[int, ...]) -> str | None:
    if len(shape) not in (3, 4):
        return f"Conv with {len(shape) - 2} spatial dims is not supported (1-D and 2-D are)"
    return None


def _conv_to_matrix(w: np.ndarray, node: onnx.NodeProto) -> np.ndarray:
    # [Cout, Cg, *k] -> [Cout, *k, Cg] -> [Cout, prod(k) * Cg]
    return np.moveaxis(w, 1, -1).reshape(w.shape[0], -1)


def _conv_columns(channels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    # column = kernel position * (Cin / group) + input channel (see _conv_to_matrix)
    positions = np.arange(int(np.prod(shape[2:])))
    return (positions[:, None] * shape[1] + channels[None, :]).reshape(-1)


def _conv_from_matrix(m: np.ndarray, node: onnx.NodeProto, shape: tuple[int, ...]) -> np.ndarray:
    moved = (shape[0], *shape[2:], shape[1])
    return np.moveaxis(m.reshape(moved), -1, 1)


register_layer_op(
    LayerOp(
        op_type="Conv",
        check=_conv_check,
        bias_input=2,
        stats_kind="conv",
        to_matrix=_conv_to_matrix,
        from_matrix=_conv_from_matrix,
        num_groups=lambda node: int(_attr(node, "group", 1)),  # type: ignore[call-overload]
        input_columns=lambda channels, shape: _conv_columns(channels, shape),
        reduction_run=lambda node, shape: shape[1],
    )
)
