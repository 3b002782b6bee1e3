"""Sites, links and the op-spec registry, and the helpers every op spec uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnx


@dataclass(frozen=True)
class Site:
    tensor: str
    axis: int  # negative: counted from the last axis
    offset: int
    block: int


@dataclass(frozen=True)
class CountEdit:
    """Entry ``entry`` of the integer constant feeding input ``input_index`` of node ``node``
    holds ``per_unit`` elements per unit (a Reshape target dim, a Split size)."""

    node: int  # index of the node in graph.node
    input_index: int
    entry: int
    per_unit: int


@dataclass(frozen=True)
class AttrEdit:
    """Integer attribute (or entry of an integer-list attribute) counting ``per_unit`` per unit."""

    node: int
    name: str
    entry: int | None
    per_unit: int


Link = Site | CountEdit | AttrEdit


class Freeze(Exception):
    """The group cannot be shrunk through this node; the message says why."""


class Coarsen(Exception):
    """The units must be merged ``factor`` at a time to map through this node."""

    def __init__(self, factor: int, why: str) -> None:
        super().__init__(why)
        self.factor = factor


@dataclass(frozen=True)
class Port:
    kind: str  # "in" or "out"
    index: int


class SpecContext(Protocol):
    units: int

    def shape(self, tensor: str) -> tuple[int, ...] | None: ...

    def constant(self, tensor: str) -> np.ndarray | None: ...

    def producer(self, tensor: str) -> tuple[int, onnx.NodeProto] | None: ...

    def node_index(self, node: onnx.NodeProto) -> int: ...

    def node(self, index: int) -> onnx.NodeProto: ...

    def is_static(self, tensor: str) -> bool: ...

    @property
    def opset(self) -> int: ...


OpSpec = Callable[[SpecContext, onnx.NodeProto, Port, Site], list[Link]]
OP_SPECS: dict[str, OpSpec] = {}
# Op types that can contract the channels (their output then does not carry them): such a node
# must be a prunable layer, whose bias takes the compensation, or the group freezes.
CONTRACTING: set[str] = set()


def op_spec(*op_types: str, contracts: bool = False) -> Callable[[OpSpec], OpSpec]:
    def register(function: OpSpec) -> OpSpec:
        for op_type in op_types:
            OP_SPECS[op_type] = function
            if contracts:
                CONTRACTING.add(op_type)
        return function

    return register


def attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _shape(ctx: SpecContext, tensor: str) -> tuple[int, ...]:
    shape = ctx.shape(tensor)
    if shape is None:
        raise Freeze(f"the shape of {tensor!r} is unknown")
    return shape


def _moved(site: Site, tensor: str, axis: int | None = None, offset: int | None = None) -> Site:
    return Site(
        tensor,
        site.axis if axis is None else axis,
        site.offset if offset is None else offset,
        site.block,
    )


def _carries(shape: tuple[int, ...], axis: int) -> bool:
    """Whether a tensor of ``shape`` has the channel axis (not broadcast along it)."""
    return len(shape) >= -axis and shape[axis] != 1


def _axis(ctx: SpecContext, node: onnx.NodeProto, tensor: str, default: int = 0) -> int:
    """The node's ``axis`` attribute counted from the right (negative), for ``tensor``'s rank."""
    axis = int(attr(node, "axis", default))  # type: ignore[call-overload]
    return axis - len(_shape(ctx, tensor)) if axis >= 0 else axis


def _to_all(site: Site, names: list[str]) -> list[Link]:
    """The same site moved to every named tensor but the one it is on (empty names skipped)."""
    return [_moved(site, name) for name in names if name and name != site.tensor]
