"""Write pruned weights and bias compensation back into the graph (unstructured pruning).

Weights keep their name, dtype, layout and storage (initializer or Constant node); a weight
reached through a Transpose / Cast is zeroed in its stored form. A bias change
``delta`` [out] is in units of ``W @ x``; it lands in Gemm's C (scaled by alpha/beta), Conv's B,
or the Add that follows a MatMul, and a bias is created when the layer has none.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx

from .graph import GraphView
from .layers import Layer, stored_keep_mask

log = logging.getLogger(__name__)


def write_weight(view: GraphView, layer: Layer, matrix: np.ndarray) -> None:
    """Store the pruned ``matrix``. A weight reached through views (Transpose, Cast) keeps its
    stored values and is zeroed where the layer's pruned weight is zero, mapped back through
    the views, so that what the layer reads is exactly the pruned weight."""
    seen = layer.from_matrix(matrix)
    if not layer.views:
        view.set_constant(layer.weight_name, seen)
        return
    stored = view.constant_value(layer.weight_name)
    assert stored is not None
    keep = stored_keep_mask(layer.views, seen != 0)
    view.set_constant(layer.weight_name, np.where(keep, stored, np.zeros((), stored.dtype)))


def add_bias(view: GraphView, layer: Layer, delta: np.ndarray) -> list[str]:
    """Add ``delta`` to the bias of every node using ``layer``'s weight; returns warnings."""
    if not np.any(delta):
        return []
    warnings = []
    # Bias already changed for this layer: original name -> name now holding the sum.
    done: dict[str, str] = {}
    for node in layer.nodes:
        problem = _add_to_node_bias(view, layer, node, delta, done)
        if problem:
            warnings.append(f"{layer.name}: bias not compensated ({problem})")
    return warnings


def _add_to_node_bias(
    view: GraphView, layer: Layer, node: onnx.NodeProto, delta: np.ndarray, done: dict[str, str]
) -> str | None:
    spec = layer.op
    beta = spec.bias_scale(node)
    if beta == 0.0:
        return "beta is 0"
    change = delta * spec.weight_scale(node) / beta
    if spec.bias_input is None:
        return _add_to_following_add(view, layer, node, change, done)
    index = spec.bias_input
    if len(node.input) > index and node.input[index]:
        name = node.input[index]
        if name in done:
            node.input[index] = done[name]
            return None
        current = view.constant_value(name)
        if current is None:
            return "bias is computed, not stored"
        if current.size != 1 and current.shape[-1] != change.size:
            return f"bias shape {list(current.shape)} does not hold one value per output"
        updated = _added(current, change)
        done[name] = _store_bias(view, name, updated)
        node.input[index] = done[name]
        return None
    while len(node.input) < index:
        node.input.append("")
    bias = change.astype(layer.dtype)
    new_name = view.add_initializer(f"{layer.weight_name}_bias", bias)
    if len(node.input) > index:
        node.input[index] = new_name
    else:
        node.input.append(new_name)
    return None


def _store_bias(view: GraphView, name: str, value: np.ndarray) -> str:
    """Write a changed bias: in place when only this layer reads it, else as a new tensor."""
    if len(view.consumers.get(name, [])) > 1 or name in view.used_in_subgraphs:
        return view.add_initializer(name + "_pruned", value)
    view.set_constant(name, value)
    return name


def _added(current: np.ndarray, change: np.ndarray) -> np.ndarray:
    """current (scalar, [out], [1, out], ...) + change [out], in the current dtype."""
    if current.size == 1:
        result = current.reshape(()).astype(np.float64) + change
    else:
        result = current.astype(np.float64) + change.reshape((1,) * (current.ndim - 1) + (-1,))
    return np.ascontiguousarray(result.astype(current.dtype))


def _add_to_following_add(
    view: GraphView, layer: Layer, node: onnx.NodeProto, change: np.ndarray, done: dict[str, str]
) -> str | None:
    out = node.output[0]
    readers = view.consumers.get(out, [])
    if len(readers) == 1 and readers[0].op_type == "Add" and out not in view.graph_outputs:
        add = readers[0]
        other_index = 1 if add.input[0] == out else 0
        other = add.input[other_index]
        value = view.constant_value(other)
        # A bias holding exactly one value per output ([out], [1, out], [1, 1, out]).
        if value is not None and value.ndim >= 1 and value.size == change.size == value.shape[-1]:
            if other not in done:
                done[other] = _store_bias(view, other, _added(value, change))
            add.input[other_index] = done[other]
            return None
    # No bias to fold into: insert ``Add(matmul_out, new_bias)`` under the original name.
    renamed = view.unique_name(out + "_unbiased")
    bias = view.add_initializer(f"{layer.weight_name}_bias", change.astype(layer.dtype))
    node.output[0] = renamed
    add_node = onnx.helper.make_node("Add", [renamed, bias], [out], name=renamed + "_bias_add")
    view.insert_after(renamed, add_node)
    view.producer[renamed] = node
    view.producer[out] = add_node
    view.consumers[renamed] = [add_node]
    return None
