"""Prunable layer types (one registry entry per op) and discovery of the layers in a model.

Every layer is handled through its weight *matrix view* ``W`` of shape ``(out, K)``:
- MatMul ``Y = X @ B`` with ``B[in, out]``: ``W = B.T``.
- Gemm: ``W = B`` if ``transB`` else ``B.T``.
- Conv ``W[Cout, Cin/g, *kernel]``: rows are output channels, columns are im2col patch entries in
  (kernel position, input channel) order, so that consecutive columns walk input channels
  (the reduction axis TensorRT's 2:4 patterns use). Grouped convs: rows of group ``k`` only see
  the columns of group ``k``'s input channels; statistics are kept per group.

A weight may also reach its layer through *weight view* ops (``WEIGHT_VIEWS``): a 2-D
``Transpose``, a float-to-float ``Cast`` or an ``Identity`` of a stored constant that nothing else
reads. The layer is then scored on what it sees, and the stored constant is zeroed where the
mask, mapped back through the views, says so. Other ops between a constant and a layer
(``Reshape``, ``DequantizeLinear``, ...) have a registry entry that says why the layer is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import onnx

from .config import LayerOverride, PruneConfig
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
        weight_input=1,
        data_input=0,
        bias_input=2,
        stats_kind="conv",
        check=_conv_check,
        to_matrix=_conv_to_matrix,
        from_matrix=_conv_from_matrix,
        num_groups=lambda node: int(_attr(node, "group", 1)),  # type: ignore[call-overload]
        input_columns=lambda channels, shape: _conv_columns(channels, shape),
        reduction_run=lambda node, shape: shape[1],
    )
)


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


# ---------------------------------------------------------------------------------------------
# Weight views: ops between a stored constant and the layer that reads it


QUANTISED_WEIGHT = "quantised weight: prune the float model before quantization"


@dataclass(frozen=True)
class WeightView:
    """An op a stored weight may pass through on its way to a layer.

    ``refuse`` set: a layer whose weight comes through this op is skipped with that reason.
    Otherwise ``check`` (None when the node is supported for this input value), ``forward``
    (the op on the value) and ``mask_back`` (a keep mask in the op's output layout -> in its
    input layout) let the stored constant be pruned for what the layer sees.
    """

    op_type: str
    refuse: str | None = None
    check: Callable[[onnx.NodeProto, np.ndarray], str | None] = lambda node, value: None
    forward: Callable[[np.ndarray, onnx.NodeProto], np.ndarray] = lambda value, node: value
    mask_back: Callable[[np.ndarray, onnx.NodeProto], np.ndarray] = lambda mask, node: mask


WEIGHT_VIEWS: dict[str, WeightView] = {}


def register_weight_view(spec: WeightView) -> WeightView:
    WEIGHT_VIEWS[spec.op_type] = spec
    return spec


def _perm(node: onnx.NodeProto, ndim: int) -> list[int]:
    perm = _attr(node, "perm", None)
    return list(perm) if perm else list(reversed(range(ndim)))  # type: ignore[call-overload]


def _transpose_check(node: onnx.NodeProto, value: np.ndarray) -> str | None:
    if value.ndim != 2:
        return f"weight is transposed from a rank-{value.ndim} constant (only 2-D is supported)"
    return None


def _is_float(dtype: np.dtype) -> bool:
    return dtype in FLOAT_DTYPES or dtype.name == "bfloat16"


def _cast_target(node: onnx.NodeProto) -> np.dtype:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(_attr(node, "to", 0))))  # type: ignore[call-overload]


def _cast_check(node: onnx.NodeProto, value: np.ndarray) -> str | None:
    try:
        target = _cast_target(node)
    except (KeyError, ValueError, TypeError):
        return "weight is cast from a constant to an unknown type"
    if not (_is_float(value.dtype) and _is_float(target)):
        return f"weight is cast from a {value.dtype} constant to {target} (only float to float)"
    return None


register_weight_view(
    WeightView(
        "Transpose",
        check=_transpose_check,
        forward=lambda value, node: np.transpose(value, _perm(node, value.ndim)),
        mask_back=lambda mask, node: np.transpose(mask, np.argsort(_perm(node, mask.ndim))),
    )
)
register_weight_view(
    WeightView(
        "Cast", check=_cast_check, forward=lambda value, node: value.astype(_cast_target(node))
    )
)
register_weight_view(WeightView("Identity"))
for _op in ("Reshape", "Squeeze", "Unsqueeze", "Flatten"):
    register_weight_view(
        WeightView(_op, refuse=f"weight is computed by {_op} from a constant (not supported)")
    )
register_weight_view(WeightView("DequantizeLinear", refuse=QUANTISED_WEIGHT))
register_weight_view(WeightView("QuantizeLinear", refuse=QUANTISED_WEIGHT))


@dataclass(frozen=True)
class WeightTrace:
    """A stored constant and the view nodes (stored -> layer) that lead to a layer's input."""

    stored: str
    views: tuple[onnx.NodeProto, ...]
    refuse: str | None


def trace_weight(view: GraphView, name: str, depth: int = 4) -> WeightTrace | None:
    """How the layer input ``name`` is computed from a stored constant through weight views;
    None when it is not (an activation, or too long a chain)."""
    chain: list[onnx.NodeProto] = []
    current = name
    for _ in range(depth):
        node = view.producer.get(current)
        if node is None or node.op_type not in WEIGHT_VIEWS or not node.input:
            return None
        chain.insert(0, node)
        current = node.input[0]
        if view.is_constant(current):
            refuse = next(
                (WEIGHT_VIEWS[n.op_type].refuse for n in chain if WEIGHT_VIEWS[n.op_type].refuse),
                None,
            )
            return WeightTrace(current, tuple(chain), refuse)
    return None


def _view_problem(view: GraphView, trace: WeightTrace) -> str | None:
    """Why a weight reached through views cannot be pruned (shared tensors, unsupported op)."""
    names = [trace.stored] + [n.output[0] for n in trace.views[:-1]]
    for tensor, reader in zip(names, trace.views, strict=True):
        others = [n for n in view.consumers.get(tensor, []) if n is not reader]
        if others:
            return (
                f"weight {tensor} reaches the layer through {reader.op_type} but also feeds "
                f"{others[0].op_type} ({view.node_name(others[0])})"
            )
        if tensor in view.used_in_subgraphs:
            return f"weight {tensor} is also read inside a subgraph"
        if tensor in view.graph_outputs:
            return f"weight {tensor} is a graph output"
    value = view.constant_value(trace.stored)
    if value is None:
        return "weight value could not be read"
    for node in trace.views:
        problem = WEIGHT_VIEWS[node.op_type].check(node, value)
        if problem:
            return problem
        value = WEIGHT_VIEWS[node.op_type].forward(value, node)
    return None


def seen_value(view: GraphView, trace: WeightTrace) -> np.ndarray:
    """The weight as the layer reads it: the stored constant through the trace's views."""
    value = view.constant_value(trace.stored)
    assert value is not None
    for node in trace.views:
        value = WEIGHT_VIEWS[node.op_type].forward(value, node)
    return value


def stored_keep_mask(views: tuple[onnx.NodeProto, ...], keep: np.ndarray) -> np.ndarray:
    """A keep mask in the layout the layer reads -> in the stored constant's layout."""
    for node in reversed(views):
        keep = WEIGHT_VIEWS[node.op_type].mask_back(keep, node)
    return keep


# ---------------------------------------------------------------------------------------------
# Layers


@dataclass
class Layer:
    """One prunable weight and the nodes that use it (several when the weight is shared).

    ``weight_name`` is the stored constant that is rewritten; ``weight`` is the value the nodes
    compute with: the stored value itself, or the stored value through ``views`` (stored ->
    layer order). In big-model mode (the view reads external data) the value is not kept: every
    access to ``weight`` reads it again, so only the layer being worked on is in memory.
    """

    name: str
    weight_name: str
    op: LayerOp
    nodes: list[onnx.NodeProto]
    value: np.ndarray | None  # the weight as the layer reads it, or None: read on access
    storage: str  # "initializer" or "Constant node", plus the views it passes through
    views: tuple[onnx.NodeProto, ...] = ()
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))
    shape: tuple[int, ...] = ()
    load: Callable[[], np.ndarray] | None = None
    # The first --layer override matching the layer's node or weight name (never a skip).
    override: LayerOverride | None = None

    @property
    def weight(self) -> np.ndarray:
        """As the layer reads it: dtype and layout."""
        if self.value is not None:
            return self.value
        assert self.load is not None
        return self.load()

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def groups(self) -> int:
        return self.op.num_groups(self.nodes[0])

    def matrix(self) -> np.ndarray:
        """The ``(out, K)`` float64 view (a copy)."""
        return np.array(self.op.to_matrix(self.weight, self.nodes[0]), dtype=np.float64)

    def from_matrix(self, matrix: np.ndarray) -> np.ndarray:
        out = self.op.from_matrix(matrix, self.nodes[0], self.shape)
        return np.ascontiguousarray(out.astype(self.dtype))

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """(out, K) of the matrix view, without reading or copying the weight."""
        if len(self.shape) != 2:  # Conv: (Cout, prod(kernel) * Cin/g)
            return self.shape[0], math.prod(self.shape[1:])
        stand_in = np.broadcast_to(np.zeros((), dtype=np.int8), self.shape)
        rows = self.op.to_matrix(stand_in, self.nodes[0])
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
    """All prunable layers of the main graph, and every weight-bearing node left alone with why
    (including those inside If/Loop/Scan subgraphs)."""
    scan = LayerScan()
    by_weight: dict[str, list[onnx.NodeProto]] = {}
    traces: dict[str, WeightTrace] = {}
    for node in view.model.graph.node:
        name = view.node_name(node)
        spec = LAYER_OPS.get(node.op_type)
        if spec is None:
            if holds_unpruned_weight(node, _stored_weight(view, node)):
                scan.skipped.append(
                    SkippedLayer(name, node.op_type, NOT_PRUNED_OPS[node.op_type].reason)
                )
            continue
        if len(node.input) <= spec.weight_input:
            continue
        weight_name = node.input[spec.weight_input]
        if not view.is_constant(weight_name):
            trace = trace_weight(view, weight_name)
            if trace is None:
                continue  # both operands are activations (e.g. attention scores): not a layer
            if trace.refuse is not None:
                scan.skipped.append(SkippedLayer(name, node.op_type, trace.refuse))
                continue
            traces[weight_name] = trace
        by_weight.setdefault(weight_name, []).append(node)

    for weight_name, nodes in by_weight.items():
        first = nodes[0]
        name = view.node_name(first)
        trace = traces.get(weight_name)
        skip = _skip_reason(view, config, weight_name, nodes, trace)
        if skip is not None:
            scan.skipped.append(SkippedLayer(name, first.op_type, skip))
            continue
        stored = trace.stored if trace is not None else weight_name
        storage = "initializer" if stored in view.initializers else "Constant node"
        views = trace.views if trace is not None else ()
        if views:
            storage += " via " + "+".join(n.op_type for n in views)
        load = _loader(view, stored, trace)
        if view.base_dir is None:  # the whole model is in memory: keep the value
            weight: np.ndarray | None = load()
            assert weight is not None
            dtype, shape = weight.dtype, tuple(weight.shape)
        else:
            weight = None
            meta = _seen_meta(view, stored, trace)
            assert meta is not None
            dtype, shape = meta
        override = config.override_for(weight_name, stored, *(view.node_name(n) for n in nodes))
        scan.layers.append(
            Layer(name, stored, LAYER_OPS[first.op_type], nodes, weight, storage, views,
                  dtype, shape, load, override)
        )  # fmt: skip
    _skip_subgraph_layers(view, view.model.graph, "", set(view.initializers), scan)
    return scan


def _loader(view: GraphView, stored: str, trace: WeightTrace | None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        if trace is not None:
            return seen_value(view, trace)
        value = view.constant_value(stored)
        assert value is not None
        return value

    return load


def _seen_meta(
    view: GraphView, stored: str, trace: WeightTrace | None
) -> tuple[np.dtype, tuple[int, ...]] | None:
    """(dtype, shape) as the layer reads the weight; reads the value only through views."""
    if trace is not None:
        value = seen_value(view, trace)
        return value.dtype, tuple(value.shape)
    return view.constant_meta(stored)


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


def nm_problem(
    spec: LayerOp, node: onnx.NodeProto, shape: tuple[int, ...], config: PruneConfig
) -> str | None:
    """Why an N:M pattern cannot apply to a layer: its reduction runs (a depthwise filter's
    single channel, a stem conv's 3 colour channels) are not a multiple of M. Such a layer stays
    dense, as sparse tensor cores would run it dense anyway."""
    if config.nm is None:
        return None
    run = spec.reduction_run(node, shape)
    if run % config.nm.m == 0:
        return None
    return (
        f"kept dense under {config.nm}: {run} input channel(s) per reduction run, not a "
        f"multiple of {config.nm.m}"
    )


def _skip_reason(
    view: GraphView,
    config: PruneConfig,
    weight_name: str,
    nodes: list[onnx.NodeProto],
    trace: WeightTrace | None = None,
) -> str | None:
    first = nodes[0]
    names = [view.node_name(n) for n in nodes]
    stored = trace.stored if trace is not None else weight_name
    if config.is_excluded(weight_name, stored, *names):
        return "excluded by --exclude"
    override = config.override_for(weight_name, stored, *names)
    if override is not None and override.skip:
        return f"skipped by --layer {override.text}"
    spec = LAYER_OPS[first.op_type]
    if trace is not None:
        problem = _view_problem(view, trace)
        if problem:
            return problem
    meta = _seen_meta(view, weight_name, trace)
    if meta is None:
        return "weight value could not be read"
    dtype, shape = meta
    if dtype.name == "bfloat16":
        return (
            f"{first.op_type} computes in bfloat16: onnxruntime has no CPU kernel to calibrate "
            "it (a bfloat16 weight behind a Cast to float is pruned)"
        )
    if dtype not in FLOAT_DTYPES:
        return f"weight dtype {dtype} is not float16/float32/float64"
    if math.prod(shape) == 0:
        return "weight is empty"
    for node in nodes:
        problem = spec.check(node, shape)
        if problem:
            return problem
        if node.op_type != first.op_type or node.attribute != first.attribute:
            return "weight is shared by nodes of different kinds"
        if view.is_constant(node.input[spec.data_input]):
            return "both operands are constants"
    problem = nm_problem(spec, first, shape, config)
    if problem:
        return problem
    readers = view.consumers.get(weight_name, [])
    others = [n for n in readers if n not in nodes]
    if others:
        return f"weight also feeds {others[0].op_type} ({view.node_name(others[0])})"
    if weight_name in view.used_in_subgraphs:
        return "weight is also read inside a subgraph"
    if weight_name in view.graph_outputs:
        return "weight is a graph output"
    return None
