"""Dependency groups: the smallest sets of tensors that must drop the same channels together.

A group starts from the output of a prunable layer (its *writer*) and grows through the op specs
(``specs.py``) in both directions: forward to every reader of the channels, backward to every
other writer of a coupled stream (the other branch of a residual Add, the K and V projections
of an attention head). It ends at layers that contract the channels (*readers*: their weight
loses the matching columns and their bias takes the mean compensation). Anything that cannot
follow the channels freezes the group; the reasons are kept for the report.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..graph import GraphView
from ..layers import Layer
from .specs import CONTRACTING, OP_SPECS, AttrEdit, Coarsen, CountEdit, Freeze, Port, Site

# Ops in these domains are standard ONNX; anything else has no spec.
_STANDARD_DOMAINS = ("", "ai.onnx")


class GraphIndex:
    """The model seen by the op specs: run-time shapes, constants, producers and consumers."""

    def __init__(self, model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> None:
        self.view = GraphView(model)
        self.nodes = list(model.graph.node)
        self._positions = {id(node): i for i, node in enumerate(self.nodes)}
        self._shapes = shapes
        self._constants: dict[str, np.ndarray | None] = {}
        self.units = 0

    @property
    def opset(self) -> int:
        return self.view.opset

    def constant(self, tensor: str) -> np.ndarray | None:
        if tensor not in self._constants:
            self._constants[tensor] = self.view.constant_value(tensor)
        return self._constants[tensor]

    def shape(self, tensor: str) -> tuple[int, ...] | None:
        value = self.constant(tensor)
        if value is not None:
            return tuple(value.shape)
        return self._shapes.get(tensor)

    def producer(self, tensor: str) -> tuple[int, onnx.NodeProto] | None:
        node = self.view.producer.get(tensor)
        return None if node is None else (self.node_index(node), node)

    def node_index(self, node: onnx.NodeProto) -> int:
        return self._positions[id(node)]

    def node(self, index: int) -> onnx.NodeProto:
        return self.nodes[index]

    def is_static(self, tensor: str, depth: int = 4) -> bool:
        """A constant, or computed from constants only (a weight seen through a Transpose or
        Cast view)."""
        if self.view.is_constant(tensor):
            return tensor not in self.view.graph_inputs
        node = self.view.producer.get(tensor)
        if node is None or depth == 0 or not node.input:
            return False
        return all(self.is_static(name, depth - 1) for name in node.input if name)


@dataclass
class Reader:
    layer: Layer
    site: Site  # on the layer's data input


@dataclass
class Group:
    name: str
    units: int
    sites: dict[str, Site]
    edits: set[CountEdit | AttrEdit] = field(default_factory=set)
    frozen: list[str] = field(default_factory=list)
    writers: list[Layer] = field(default_factory=list)
    readers: list[Reader] = field(default_factory=list)
    kind: str = "neurons"
    # Nodes whose spec linked them into the group.
    visited: list[onnx.NodeProto] = field(default_factory=list)

    def freeze(self, reason: str) -> None:
        if reason not in self.frozen:
            self.frozen.append(reason)

    def indices(self, site: Site, units: np.ndarray) -> np.ndarray:
        """Indices along ``site``'s axis owned by ``units``."""
        within = np.arange(site.block)
        return (site.offset + units[:, None] * site.block + within[None, :]).reshape(-1)


def find_groups(index: GraphIndex, layers: list[Layer]) -> list[Group]:
    """One group per set of coupled layer outputs, in layer order."""
    claimed: set[str] = set()
    groups = []
    for layer in layers:
        for node in layer.nodes:
            output = node.output[0]
            shape = index.shape(output)
            if output in claimed or shape is None:
                continue
            axis = -1 if layer.op.stats_kind == "dense" else 1 - len(shape)
            group = grow(index, layer.name, Site(output, axis, 0, 1), shape[axis])
            claimed |= set(group.sites)
            _assign_roles(group, layers)
            groups.append(group)
    return groups


def grow(index: GraphIndex, name: str, seed: Site, channels: int) -> Group:
    """Propagate ``seed`` until closed; merge units whenever an op asks for it."""
    factor = 1
    while True:
        units = channels // factor
        index.units = units
        try:
            return _walk(index, name, Site(seed.tensor, seed.axis, 0, factor), units)
        except Coarsen as coarsen:
            factor *= coarsen.factor
            if channels % factor or channels // factor < 2:
                group = Group(name, 1, {seed.tensor: seed})
                group.freeze(f"{coarsen}: fewer than 2 units would remain")
                return group


def _walk(index: GraphIndex, name: str, seed: Site, units: int) -> Group:
    group = Group(name, units, {})
    queue = deque([seed])
    view = index.view
    while queue:
        site = queue.popleft()
        known = group.sites.get(site.tensor)
        if known is not None:
            if known != site:
                group.freeze(f"{site.tensor!r} would lose two different sets of channels")
            continue
        group.sites[site.tensor] = site
        _check_tensor(index, group, site)
        visits: list[tuple[onnx.NodeProto, Port]] = []
        producer = view.producer.get(site.tensor)
        if producer is not None and producer.op_type != "Constant":
            visits.append((producer, Port("out", list(producer.output).index(site.tensor))))
        for consumer in view.consumers.get(site.tensor, []):
            for position, name_in in enumerate(consumer.input):
                if name_in == site.tensor:
                    visits.append((consumer, Port("in", position)))
        for node, port in visits:
            spec = OP_SPECS.get(node.op_type) if node.domain in _STANDARD_DOMAINS else None
            label = f"{view.node_name(node)} ({node.op_type})"
            if spec is None:
                group.freeze(f"{label}: no op spec")
                continue
            try:
                links = spec(index, node, port, site)
            except Freeze as freeze:
                group.freeze(f"{label}: {freeze}")
                continue
            if all(node is not seen for seen in group.visited):
                group.visited.append(node)
            for link in links:
                if isinstance(link, Site):
                    queue.append(link)
                else:
                    group.edits.add(link)
    return group


def _check_tensor(index: GraphIndex, group: Group, site: Site) -> None:
    view = index.view
    tensor = site.tensor
    if tensor in view.graph_outputs:
        group.freeze(f"{tensor!r} is a graph output")
    if tensor in view.graph_inputs:
        group.freeze(f"{tensor!r} is a graph input")
    if tensor in view.used_in_subgraphs:
        group.freeze(f"{tensor!r} is read inside a subgraph")
    shape = index.shape(tensor)
    if shape is None:
        group.freeze(f"the shape of {tensor!r} is unknown")
    elif len(shape) < -site.axis or shape[site.axis] < site.offset + group.units * site.block:
        group.freeze(f"{tensor!r} is too small for the channels mapped onto it")


def _assign_roles(group: Group, layers: list[Layer]) -> None:
    """Writers produce the channels; readers contract them (their output does not carry the
    channels). Every node that contracts them must be a layer whose bias can take the
    compensation, else the group is frozen."""
    readers: dict[str, Reader] = {}
    reader_nodes: set[int] = set()
    for layer in layers:
        for node in layer.nodes:
            data = group.sites.get(node.input[layer.op.data_input])
            out = group.sites.get(node.output[0])
            if out is not None and data is None:
                if layer not in group.writers:
                    group.writers.append(layer)
                if out.block > 1 and layer.op.stats_kind == "dense":
                    group.kind = "heads"
                elif layer.op.stats_kind == "conv":
                    group.kind = "channels"
            elif data is not None and out is None:
                known = readers.get(layer.weight_name)
                if known is not None and known.site != data:
                    group.freeze(f"{layer.name}: a shared weight reads the channels twice")
                readers[layer.weight_name] = Reader(layer, data)
                reader_nodes.add(id(node))
    group.readers = list(readers.values())
    for node in group.visited:
        absorbs = not any(out in group.sites for out in node.output)
        if node.op_type in CONTRACTING and absorbs and id(node) not in reader_nodes:
            group.freeze(
                f"{node.name or node.op_type} ({node.op_type}) contracts the channels but is not "
                "a prunable layer"
            )
    if not group.readers:
        group.freeze("no prunable layer reads these channels")
    if not group.writers:
        group.freeze("no prunable layer writes these channels")
