"""Prunable layer types (one registry entry per op) and discovery of the layers in a model.

Every layer is handled through its weight *matrix view* ``W`` of shape ``(out, K)``:
- MatMul ``Y = X @ B`` with ``B[in, out]``: ``W = B.T``.
- Gemm: ``W = B`` if ``transB`` else ``B.T``.
- Conv ``W[Cout, Cin/g, *kernel]``: rows are output channels, columns are im2col patch entries in
  (kernel position, input channel) order, so that consecutive columns walk input channels
  (the reduction axis TensorRT's 2:4 patterns use). Grouped convs: rows of group ``k`` only see
  the columns of group ``k``'s input channels; statistics are kept per group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from .config import PruneConfig
from .graph import GraphView

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
    weight_input: int
    data_input: int
    # Index of the bias input (Gemm C, Conv B); None: the bias is a following Add (MatMul).
    bias_input: int | None
    # "dense": statistics from a [rows, K] matrix built in the graph; "conv": from im2col.
    stats_kind: str
    check: Callable[[onnx.NodeProto, tuple[int, ...]], str | None]
    to_matrix: Callable[[np.ndarray, onnx.NodeProto], np.ndarray]
    from_matrix: Callable[[np.ndarray, onnx.NodeProto, tuple[int, ...]], np.ndarray]
    num_groups: Callable[[onnx.NodeProto], int] = lambda node: 1
    # z = weight_scale * W x + bias_scale * b (Gemm alpha/beta); 1 for the others.
    weight_scale: Callable[[onnx.NodeProto], float] = lambda node: 1.0
    bias_scale: Callable[[onnx.NodeProto], float] = lambda node: 1.0


LAYER_OPS: dict[str, LayerOp] = {}


def register_layer_op(spec: LayerOp) -> LayerOp:
    LAYER_OPS[spec.op_type] = spec
    return spec


def _matmul_check(node: onnx.NodeProto, shape: tuple[int, ...]) -> str | None:
    return None if len(shape) == 2 else f"MatMul weight has rank {len(shape)}, expected 2"


register_layer_op(
    LayerOp(
        op_type="MatMul",
        weight_input=1,
        data_input=0,
        bias_input=None,
        stats_kind="dense",
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
        weight_input=1,
        data_input=0,
        bias_input=2,
        stats_kind="dense",
        check=_gemm_check,
        to_matrix=_gemm_to_matrix,
        from_matrix=lambda m, node, shape: _gemm_to_matrix(m, node),
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


def _conv_from_matrix(m: np.ndarray, node: onnx.NodeProto, shape: tuple[int, ...]) -> np.ndarray:
    moved = (shape[0], *shape[2:], shape[1])
    return np.moveaxis(m.reshape(moved), -1, 1)


register_layer_op(
    LayerOp(
        op_type="Conv",
        weight_input=1,
        data_input=0,
        bias_input=2,
        stats_kind="conv",
        check=_conv_check,
        to_matrix=_conv_to_matrix,
        from_matrix=_conv_from_matrix,
        num_groups=lambda node: int(_attr(node, "group", 1)),  # type: ignore[call-overload]
    )
)

# Ops that hold weights onnxprune does not prune; listed in the report so nothing is silent.
NOT_PRUNED_OPS: dict[str, str] = {
    "Gather": "embedding table (Gather) is never pruned",
    "ConvTranspose": "ConvTranspose is not supported",
    "LSTM": "recurrent weights are not supported",
    "GRU": "recurrent weights are not supported",
    "RNN": "recurrent weights are not supported",
    "QLinearConv": "quantized op: prune the float model before quantization",
    "QLinearMatMul": "quantized op: prune the float model before quantization",
    "MatMulInteger": "quantized op: prune the float model before quantization",
    "ConvInteger": "quantized op: prune the float model before quantization",
}


@dataclass
class Layer:
    """One prunable weight and the nodes that use it (several when the weight is shared)."""

    name: str
    weight_name: str
    op: LayerOp
    nodes: list[onnx.NodeProto]
    weight: np.ndarray  # as stored, original dtype and layout
    storage: str  # "initializer" or "Constant node"

    @property
    def groups(self) -> int:
        return self.op.num_groups(self.nodes[0])

    def matrix(self) -> np.ndarray:
        """The ``(out, K)`` float64 view (a copy)."""
        return np.array(self.op.to_matrix(self.weight, self.nodes[0]), dtype=np.float64)

    def from_matrix(self, matrix: np.ndarray) -> np.ndarray:
        out = self.op.from_matrix(matrix, self.nodes[0], self.weight.shape)
        return np.ascontiguousarray(out.astype(self.weight.dtype))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.weight.shape)

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """(out, K) of the matrix view, without copying the weight."""
        rows = self.op.to_matrix(self.weight, self.nodes[0])
        return int(rows.shape[0]), int(rows.shape[1])


@dataclass(frozen=True)
class SkippedLayer:
    name: str
    op_type: str
    reason: str


@dataclass
class LayerScan:
    layers: list[Layer] = field(default_factory=list)
    skipped: list[SkippedLayer] = field(default_factory=list)


def find_layers(view: GraphView, config: PruneConfig) -> LayerScan:
    """All prunable layers of the main graph, and every weight-bearing node left alone with why."""
    scan = LayerScan()
    by_weight: dict[str, list[onnx.NodeProto]] = {}
    for node in view.model.graph.node:
        name = view.node_name(node)
        spec = LAYER_OPS.get(node.op_type)
        if spec is None:
            if node.op_type in NOT_PRUNED_OPS and any(view.is_constant(i) for i in node.input):
                scan.skipped.append(SkippedLayer(name, node.op_type, NOT_PRUNED_OPS[node.op_type]))
            continue
        if len(node.input) <= spec.weight_input:
            continue
        weight_name = node.input[spec.weight_input]
        if not view.is_constant(weight_name):
            via = view.traces_to_constant(weight_name)
            if via is not None:
                reason = f"weight is computed by {via.op_type} from a constant, not stored"
                scan.skipped.append(SkippedLayer(name, node.op_type, reason))
            # Otherwise both operands are activations (e.g. attention scores): not a layer.
            continue
        by_weight.setdefault(weight_name, []).append(node)

    for weight_name, nodes in by_weight.items():
        first = nodes[0]
        name = view.node_name(first)
        skip = _skip_reason(view, config, weight_name, nodes)
        if skip is not None:
            scan.skipped.append(SkippedLayer(name, first.op_type, skip))
            continue
        weight = view.constant_value(weight_name)
        assert weight is not None
        storage = "initializer" if weight_name in view.initializers else "Constant node"
        scan.layers.append(
            Layer(name, weight_name, LAYER_OPS[first.op_type], nodes, weight, storage)
        )
    return scan


def _skip_reason(
    view: GraphView, config: PruneConfig, weight_name: str, nodes: list[onnx.NodeProto]
) -> str | None:
    first = nodes[0]
    names = [view.node_name(n) for n in nodes]
    if config.is_excluded(weight_name, *names):
        return "excluded by --exclude"
    spec = LAYER_OPS[first.op_type]
    weight = view.constant_value(weight_name)
    if weight is None:
        return "weight value could not be read"
    if weight.dtype not in FLOAT_DTYPES:
        return f"weight dtype {weight.dtype} is not float16/float32/float64"
    if weight.size == 0:
        return "weight is empty"
    for node in nodes:
        problem = spec.check(node, tuple(weight.shape))
        if problem:
            return problem
        if node.op_type != first.op_type or node.attribute != first.attribute:
            return "weight is shared by nodes of different kinds"
        if view.is_constant(node.input[spec.data_input]):
            return "both operands are constants"
    readers = view.consumers.get(weight_name, [])
    others = [n for n in readers if n not in nodes]
    if others:
        return f"weight also feeds {others[0].op_type} ({view.node_name(others[0])})"
    if weight_name in view.used_in_subgraphs:
        return "weight is also read inside a subgraph"
    if weight_name in view.graph_outputs:
        return "weight is a graph output"
    return None
