"""Weight views: ops between a stored constant and the layer that reads it (Transpose, Cast,
Identity are followed; the others name why the layer is skipped)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from ..graph import GraphView
from .ops import FLOAT_DTYPES, _attr

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
