"""Graph surgery for structured removal: mask + compensate, then cut the channels out.

``zero_columns`` zeroes the readers' columns of the removed units and ``compensate`` adds their
mean contribution to the readers' biases: together the *masked* model, which computes exactly
what the shrunk model computes. ``cut_units`` (run between the two when cutting) deletes the
units' indices from every constant of their groups (weights, biases, BatchNorm vectors,
per-channel constants), rewrites the integers that count channels (Reshape targets, Split
sizes, a depthwise Conv's ``group``) and drops the stale shapes so that they are inferred
again.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx

from ..apply import add_bias, write_weight
from ..graph import GraphView
from ..layers import Layer
from .groups import Group
from .specs import AttrEdit, CountEdit


@dataclass
class Removal:
    group: Group
    units: np.ndarray  # removed unit indices, sorted


@dataclass
class ReaderChange:
    columns: np.ndarray  # matrix-view columns to zero
    delta: np.ndarray | None  # bias change [out]


def zero_columns(
    view: GraphView, layers: dict[str, Layer], changes: dict[str, ReaderChange]
) -> None:
    """Zero each reader's columns that read removed units."""
    for weight_name, change in changes.items():
        layer = layers[weight_name]
        matrix = layer.matrix()
        matrix[:, change.columns] = 0.0
        write_weight(view, layer, matrix)


def compensate(
    view: GraphView,
    layers: dict[str, Layer],
    changes: dict[str, ReaderChange],
    cut_rows: dict[str, np.ndarray],
) -> list[str]:
    """Add each reader's compensation to its bias, without the output rows the cut removed from
    it (``cut_rows``: a reader that is also a writer of a cut group); returns warnings."""
    warnings: list[str] = []
    for weight_name, change in changes.items():
        if change.delta is None:
            continue
        delta = np.delete(change.delta, cut_rows.get(weight_name, np.zeros(0, np.int64)))
        warnings += add_bias(view, layers[weight_name], delta)
    return warnings


def cut_units(view: GraphView, removals: list[Removal]) -> None:
    """Delete the removed units' indices everywhere their groups reach."""
    # (tensor, axis) -> indices: a layer's weight loses rows for one group and columns for another
    cuts: dict[tuple[str, int], set[int]] = defaultdict(set)
    amounts: dict[CountEdit | AttrEdit, int] = defaultdict(int)
    for removal in removals:
        if not len(removal.units):
            continue
        for tensor, site in removal.group.sites.items():
            owned = removal.group.indices(site, removal.units)
            cuts[tensor, site.axis].update(int(i) for i in owned)
        for edit in removal.group.edits:
            amounts[edit] += len(removal.units) * edit.per_unit
    for (tensor, axis), indices in cuts.items():
        value = view.constant_value(tensor)
        if value is not None:
            view.set_constant(tensor, np.delete(value, sorted(indices), axis=axis))
    nodes = list(view.model.graph.node)
    # constant name -> (node, input) reading it -> entry -> amount
    counts: dict[str, dict[tuple[int, int], dict[int, int]]] = defaultdict(dict)
    for edit, amount in amounts.items():
        if isinstance(edit, CountEdit):
            name = nodes[edit.node].input[edit.input_index]
            entries = counts[name].setdefault((edit.node, edit.input_index), {})
            entries[edit.entry] = entries.get(edit.entry, 0) + amount
        else:
            _shrink_attribute(nodes[edit.node], edit, amount)
    for name, uses in counts.items():
        _shrink_count(view, nodes, name, uses)
    # Shapes recorded before the cut are stale; shape inference fills them in again.
    del view.model.graph.value_info[:]


def _shrink_count(
    view: GraphView,
    nodes: list[onnx.NodeProto],
    name: str,
    uses: dict[tuple[int, int], dict[int, int]],
) -> None:
    """Lower entries of the integer constant ``name`` as read by ``uses``
    ((node, input) -> {entry: amount}; a Split's sizes may shrink for two groups at once). In
    place when every reader wants the same change (the q, k and v Reshapes of one attention
    sharing ``[heads, head_dim]``); otherwise each reader gets its own copy."""
    value = view.constant_value(name)
    assert value is not None
    readers = sum(list(node.input).count(name) for node in view.consumers.get(name, []))
    changes = {tuple(sorted(entries.items())) for entries in uses.values()}
    if len(changes) == 1 and readers == len(uses) and name not in view.graph_outputs:
        view.set_constant(name, _lowered(value, dict(changes.pop())))
        return
    for (node, input_index), entries in uses.items():
        copy = view.add_initializer(f"{name}_shrunk", _lowered(value, entries))
        nodes[node].input[input_index] = copy


def _lowered(value: np.ndarray, entries: dict[int, int]) -> np.ndarray:
    lowered = value.copy()
    flat = lowered.reshape(-1)
    for entry, amount in entries.items():
        flat[entry] -= amount
    return lowered


def _shrink_attribute(node: onnx.NodeProto, edit: AttrEdit, amount: int) -> None:
    for attribute in node.attribute:
        if attribute.name != edit.name:
            continue
        if edit.entry is None:
            attribute.i -= amount
        else:
            attribute.ints[edit.entry] -= amount
        return
    raise AssertionError(f"{node.name}: no attribute {edit.name}")
