"""How each op type carries a channel axis from one of its tensors to the others (op specs).

A *site* says where a group's units live in one tensor: along ``axis`` (negative, counted from
the right, so that broadcasting lines up), unit ``u`` owns the indices
``[offset + u * block, offset + (u + 1) * block)``. ``block`` > 1 appears after a Flatten
(channel ``c`` of NCHW owns ``H * W`` columns) or for attention heads (one head owns
``head_dim`` channels of the projection).

An op spec is one function ``spec(ctx, node, port, site) -> links``: given that the tensor at
``port`` of ``node`` carries ``site``, it returns the sites of the node's other tensors that must
drop the same units, plus edits of integer constants / attributes that hold the channel count
(Reshape targets, Split sizes, a depthwise Conv's ``group``). It raises ``Freeze`` when the op
reads the channel axis in a way that removal would change (normalising over it, a contraction
between two activations, no spec at all), and ``Coarsen`` when the units must be merged to map
(a Reshape that splits channels into heads). Adding an op type is one ``@op_spec`` entry; the
grouping code in ``groups.py`` never names op types.
"""

from __future__ import annotations

import math
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


# -- element-wise ops (broadcasting) ----------------------------------------------------------

ELEMENTWISE = (
    # unary
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Gelu", "Erf",
    "Elu", "Selu", "Celu", "Softplus", "Softsign", "Mish", "ThresholdedRelu", "Abs", "Neg",
    "Sqrt", "Exp", "Log", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Cast",
    "Identity", "Dropout", "Clip", "Not", "IsNaN", "IsInf",
    # binary / variadic, numpy broadcasting
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Less",
    "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "BitShift", "Mod",
)  # fmt: skip


@op_spec(*ELEMENTWISE)
def elementwise(ctx: SpecContext, node: onnx.NodeProto, port: Port, site: Site) -> list[Link]:
    """Every input and output that is not broadcast along the axis drops the same indices
    (constants such as a ``[C, 1, 1]`` scale or a PRelu slope are sliced, scalars stay)."""
    links: list[Link] = []
    names = list(node.input) + list(node.output)
    for name in names:
        if not name or name == site.tensor:
            continue
        if _carries(_shape(ctx, name), site.axis):
            links.append(_moved(site, name))
    return links


# -- normalisation -----------------------------------------------------------------------------


@op_spec("BatchNormalization", "InstanceNormalization")
def per_channel_norm(ctx: SpecContext, node: onnx.NodeProto, port: Port, site: Site) -> list[Link]:
    """X [N, C, ...]: each channel is normalised on its own; the [C] vectors follow axis 1."""
    rank = len(_shape(ctx, node.input[0]))
    channel_axis = 1 - rank
    # a [C] parameter's only axis is the data's channel axis
    axis = channel_axis if port.kind == "in" and port.index > 0 else site.axis
    if axis != channel_axis:
        if node.op_type == "InstanceNormalization":
            raise Freeze("InstanceNormalization normalises over the spatial axes")
        return [_moved(site, node.input[0], axis), _moved(site, node.output[0], axis)]
    links: list[Link] = [
        _moved(site, node.input[0], channel_axis),
        _moved(site, node.output[0], channel_axis),
    ]
    links += [_moved(site, name, -1) for name in node.input[1:] if name]
    return [link for link in links if not (isinstance(link, Site) and link.tensor == site.tensor)]


@op_spec("LayerNormalization", "Softmax", "LogSoftmax", "Hardmax")
def along_axis(ctx: SpecContext, node: onnx.NodeProto, port: Port, site: Site) -> list[Link]:
    """Ops that mix values along ``axis`` (LayerNorm: from ``axis`` to the end)."""
    if port.kind == "in" and port.index > 0:
        raise Freeze(f"{node.op_type} parameters are indexed by the channels")
    rank = len(_shape(ctx, node.input[0]))
    default = -1 if node.op_type == "LayerNormalization" or ctx.opset >= 13 else 1
    axis = int(attr(node, "axis", default))  # type: ignore[call-overload]
    axis = axis - rank if axis >= 0 else axis
    to_end = node.op_type == "LayerNormalization" or ctx.opset < 13
    if site.axis == axis or (to_end and site.axis > axis):
        raise Freeze(f"{node.op_type} normalises over the channel axis")
    return [
        _moved(site, name) for name in [node.input[0], *node.output] if name and name != site.tensor
    ]


# -- pooling -----------------------------------------------------------------------------------


@op_spec("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def pooling(ctx: SpecContext, node: onnx.NodeProto, port: Port, site: Site) -> list[Link]:
    rank = len(_shape(ctx, node.input[0]))
    if site.axis != 1 - rank:
        raise Freeze(f"{node.op_type} pools over the channel axis")
    return [
        _moved(site, name) for name in [node.input[0], *node.output] if name and name != site.tensor
    ]


# -- layers ------------------------------------------------------------------------------------


@op_spec("MatMul", contracts=True)
def matmul(ctx: SpecContext, node: onnx.NodeProto, port: Port, site: Site) -> list[Link]:
    """Y[..., M, N] = A[..., M, K] @ B[..., K, N]. K is contracted: A's -1 pairs with B's -2 and
    Y does not carry it (B constant: Y is read by a layer, the reader); M and N pass to Y;
    batch axes pass to every operand that is not broadcast along them."""
    a, b, y = node.input[0], node.input[1], node.output[0]
    if len(_shape(ctx, a)) < 2 or len(_shape(ctx, b)) < 2:
        raise Freeze("MatMul with a 1-D operand")
    tensor = (a, b, y)[port.index if port.kind == "in" else 2]
    axis = site.axis
    links: list[Link] = []
    contraction = (tensor == a and axis == -1) or (tensor == b and axis == -2)
    if contraction:
        if not ctx.is_static(a) and not ctx.is_static(b):
            raise Freeze("a MatMul of two activations contracts over the channel axis")
        links.append(_moved(site, b, -2) if tensor == a else _moved(site, a, -1))
    elif axis == -2 and tensor in (a, y):
        links.append(_moved(site, y if tensor == a else a, -2))
    elif axis == -1 and tensor in (b, y):
        links.append(_moved(site, y if tensor == b else b, -1))
    elif axis <= -3:
        for name in (a, b, y):
            if name != tensor and _carries(_shape(ctx, name), axis):
                links.append(_moved(site, name))
    else:
        raise Freeze("MatMul axis mapping not understood")
    return links


@op_spec("Gemm", contracts=True)
def gemm(ctx: SpecContext, node: onnx.NodeProto, port: Port, site: Site) -> list[Link]:
    """Y[M, N] = alpha A[M, K] B[K, N] (B[N, K] when transB) + beta C (broadcast to [M, N])."""
    if attr(node, "transA", 0):
        raise Freeze("Gemm with transA=1")
    trans_b = bool(attr(node, "transB", 0))
    a, b, y = node.input[0], node.input[1], node.output[0]
    c = node.input[2] if len(node.input) > 2 and node.input[2] else None
    b_k, b_n = (-1, -2) if trans_b else (-2, -1)
    tensor = site.tensor
    axis = site.axis
    if tensor == a:
        if axis != -1:
            raise Freeze("Gemm rows carry the channels")
        return [_moved(site, b, b_k)]
    if tensor == b and axis == b_k:
        return [_moved(site, a, -1)]
    if (tensor == b and axis == b_n) or (tensor in (y, c) and axis == -1):
        links: list[Link] = [_moved(site, y, -1), _moved(site, b, b_n)]
        if c is not None and _carries(_shape(ctx, c), -1):
            links.append(_moved(site, c, -1))
        return [link for link in links if isinstance(link, Site) and link.tensor != tensor]
    raise Freeze("Gemm rows carry the channels")


@op_spec("Conv", contracts=True)
def conv(ctx: SpecContext, node: onnx.NodeProto, port: Port, site: Site) -> list[Link]:
    """X[N, C, *S], W[Cout, C / group, *k], B[Cout]. group 1: input channels are contracted
    (the Conv reads them: W axis 1); output channels are W axis 0 and B. Depthwise
    (group == C == Cout): channel c in gives channel c out, so it passes through and ``group``
    counts the channels."""
    x, w, y = node.input[0], node.input[1], node.output[0]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    w_shape = _shape(ctx, w)
    rank = len(w_shape)
    group = int(attr(node, "group", 1))  # type: ignore[call-overload]
    depthwise = group > 1 and w_shape[1] == 1 and w_shape[0] == group
    if group > 1 and not depthwise:
        raise Freeze("grouped Conv (neither group=1 nor depthwise)")
    channel_axis = 1 - rank
    tensor = site.tensor
    on_input = tensor == x or (tensor == w and site.axis == 1 - rank and not depthwise)
    if tensor in (x, y) and site.axis != channel_axis:
        raise Freeze("Conv spatial axes carry the channels")
    if tensor == w and site.axis not in (-rank, 1 - rank):
        raise Freeze("Conv kernel axes carry the channels")
    input_links: list[Link] = [_moved(site, x, channel_axis)]
    output_links: list[Link] = [_moved(site, y, channel_axis), _moved(site, w, -rank)]
    if bias is not None:
        output_links.append(_moved(site, bias, -1))
    if depthwise:
        links = input_links + output_links
        links.append(AttrEdit(ctx.node_index(node), "group", None, site.block))
    elif on_input:
        links = [*input_links, _moved(site, w, 1 - rank)]
    else:
        links = output_links
    return [link for link in links if not (isinstance(link, Site) and link.tensor == tensor)]


# -- layout ops --------------------------------------------------------------------------------


@op_spec("Transpose")
def transpose(ctx: SpecContext, node: onnx.NodeProto, port: Port, site: Site) -> list[Link]:
    rank = len(_shape(ctx, node.input[0]))
    perm = [int(p) for p in attr(node, "perm", list(range(rank))[::-1])]  # type: ignore[attr-defined]
    position = rank + site.axis
    if port.kind == "in":
        return [_moved(site, node.output[0], perm.index(position) - rank)]
    return [_moved(site, node.input[0], perm[position] - rank)]


def map_reshape(
    source: tuple[int, ...], target: tuple[int, ...], site: Site, units: int
) -> tuple[int, int, int]:
    """(axis, offset, block) of ``site`` (on a tensor of shape ``source``) in the reshaped
    tensor of shape ``target``. The units must stay whole contiguous runs of the row-major
    trailing block; raises ``Coarsen`` when only merged units would, ``Freeze`` when the
    reshape mixes the channels with axes to their left."""
    inner = math.prod(source[site.axis + 1 :]) if site.axis < -1 else 1
    trailing = math.prod(source[site.axis :])
    start, length = site.offset * inner, site.block * inner  # in trailing-block elements
    best_factor: int | None = None
    for axis in range(-1, -len(target) - 1, -1):
        if math.prod(target[axis:]) != trailing:
            continue
        inner_out = math.prod(target[axis + 1 :]) if axis < -1 else 1
        if length % inner_out == 0 and start % inner_out == 0:
            return axis, start // inner_out, length // inner_out
        factor = inner_out // math.gcd(length, inner_out)
        if start % inner_out == 0 and (best_factor is None or factor < best_factor):
            best_factor = factor
    if best_factor is not None and units % best_factor == 0:
        raise Coarsen(best_factor, "a reshape splits the channels into groups")
    raise Freeze("a reshape mixes the channels with other axes")


@op_spec("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(ctx: SpecContext, node: onnx.NodeProto, port: Port, site: Site) -> list[Link]:
    if port.kind == "in" and port.index > 0:
        raise Freeze(f"{node.op_type} reads the channels as its shape input")
    x, y = node.input[0], node.output[0]
    x_shape, y_shape = _shape(ctx, x), _shape(ctx, y)
    if port.kind == "in":
        axis, offset, block = map_reshape(x_shape, y_shape, site, ctx.units)
        out_site = Site(y, axis, offset, block)
        links: list[Link] = [out_site]
    else:
        axis, offset, block = map_reshape(y_shape, x_shape, site, ctx.units)
        out_site = site
        links = [Site(x, axis, offset, block)]
    if node.op_type == "Reshape":
        edit = _reshape_target_edit(ctx, node, out_site, x_shape, y_shape)
        if edit is not None:
            links.append(edit)
    return links


def _reshape_target_edit(
    ctx: SpecContext,
    node: onnx.NodeProto,
    site: Site,
    x_shape: tuple[int, ...],
    y_shape: tuple[int, ...],
) -> CountEdit | None:
    """The entry of the Reshape target holding the output's channel dim, to shrink with it."""
    position = len(y_shape) + site.axis
    located = _locate_entry(ctx, ctx.node_index(node), 1, position)
    if located is None:
        raise Freeze("the Reshape target is computed at run time")
    node_index, input_index, entry, value = located
    if value == -1:
        return None  # inferred from the element count
    if value == 0 and not int(attr(node, "allowzero", 0)):  # type: ignore[call-overload]
        same = position < len(x_shape) and x_shape[position] == y_shape[position]
        if same and len(x_shape) - position == -site.axis:
            return None  # copies the input's (shrinking) dim
        raise Freeze("the Reshape target copies a dim the channels move to")
    if value != y_shape[site.axis]:
        raise Freeze("the Reshape target does not match the run-time shape")
    return CountEdit(node_index, input_index, entry, site.block)


def _locate_entry(
    ctx: SpecContext, node_index: int, input_index: int, position: int
) -> tuple[int, int, int, int] | None:
    """(node, input, entry, value) of the constant holding element ``position`` of a 1-D int
    tensor: the tensor itself, or one constant piece of the Concat that builds it."""
    node = ctx.node(node_index)
    name = node.input[input_index]
    value = ctx.constant(name)
    if value is not None:
        return node_index, input_index, position, int(value.reshape(-1)[position])
    produced = ctx.producer(name)
    if produced is None or produced[1].op_type != "Concat":
        return None
    concat_index, concat = produced
    start = 0
    for piece_index, piece in enumerate(concat.input):
        piece_shape = ctx.shape(piece)
        if piece_shape is None or len(piece_shape) != 1:
            return None
        if start <= position < start + piece_shape[0]:
            piece_value = ctx.constant(piece)
            if piece_value is None:
                return None
            local = position - start
            return concat_index, piece_index, local, int(piece_value.reshape(-1)[local])
        start += piece_shape[0]
    return None


@op_spec("Concat")
def concat(ctx: SpecContext, node: onnx.NodeProto, port: Port, site: Site) -> list[Link]:
    """Inputs stacked along ``axis``: input ``i``'s channels sit at an offset in the output."""
    y = node.output[0]
    rank = len(_shape(ctx, y))
    axis = int(attr(node, "axis", 0))  # type: ignore[call-overload]
    axis = axis - rank if axis >= 0 else axis
    if site.axis != axis:
        return [_moved(site, n) for n in [*node.input, y] if n and n != site.tensor]
    starts, start = [], 0
    for name in node.input:
        starts.append(start)
        start += _shape(ctx, name)[axis]
    span = ctx.units * site.block
    if port.kind == "in":
        return [_moved(site, y, offset=site.offset + starts[port.index])]
    for name, begin in zip(node.input, starts, strict=True):
        size = _shape(ctx, name)[axis]
        if begin <= site.offset and site.offset + span <= begin + size:
            return [_moved(site, name, offset=site.offset - begin)]
    raise Freeze("the units straddle two Concat inputs")


@op_spec("Split")
def split(ctx: SpecContext, node: onnx.NodeProto, port: Port, site: Site) -> list[Link]:
    """Outputs cut along ``axis`` with explicit sizes (input 1, or the ``split`` attribute)."""
    x = node.input[0]
    rank = len(_shape(ctx, x))
    axis = int(attr(node, "axis", 0))  # type: ignore[call-overload]
    axis = axis - rank if axis >= 0 else axis
    if port.kind == "in" and port.index > 0:
        raise Freeze("Split sizes read the channels")
    if site.axis != axis:
        return [_moved(site, n) for n in [x, *node.output] if n and n != site.tensor]
    sizes = [_shape(ctx, name)[axis] for name in node.output]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    node_index = ctx.node_index(node)
    span = ctx.units * site.block

    def edit(output: int) -> Link:
        if len(node.input) > 1 and node.input[1]:
            if ctx.constant(node.input[1]) is None:
                raise Freeze("Split sizes are computed at run time")
            return CountEdit(node_index, 1, output, site.block)
        if attr(node, "split") is None:
            raise Freeze("Split into equal parts (no sizes to shrink)")
        return AttrEdit(node_index, "split", output, site.block)

    if port.kind == "out":
        begin = starts[port.index]
        return [_moved(site, x, offset=site.offset + begin), edit(port.index)]
    for index, (begin, size) in enumerate(zip(starts, sizes, strict=True)):
        if begin <= site.offset and site.offset + span <= begin + size:
            return [_moved(site, node.output[index], offset=site.offset - begin), edit(index)]
    raise Freeze("the units straddle two Split outputs")


REDUCE_OPS = (
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceSumSquare", "ReduceLogSumExp", "ReduceLogSum",
)  # fmt: skip


@op_spec(*REDUCE_OPS)
def reduce(ctx: SpecContext, node: onnx.NodeProto, port: Port, site: Site) -> list[Link]:
    if port.kind == "in" and port.index > 0:
        raise Freeze(f"{node.op_type} axes read the channels")
    rank = len(_shape(ctx, node.input[0]))
    axes_value = attr(node, "axes")
    if axes_value is None and len(node.input) > 1 and node.input[1]:
        constant = ctx.constant(node.input[1])
        if constant is None:
            raise Freeze(f"{node.op_type} axes are computed at run time")
        axes_value = constant.tolist()
    if axes_value is None:
        raise Freeze(f"{node.op_type} reduces every axis")
    axes = sorted(int(a) - rank if int(a) >= 0 else int(a) for a in axes_value)  # type: ignore[attr-defined]
    keep = bool(attr(node, "keepdims", 1))
    if port.kind == "in":
        if site.axis in axes:
            raise Freeze(f"{node.op_type} reduces over the channel axis")
        shift = 0 if keep else sum(1 for a in axes if a > site.axis)
        return [_moved(site, node.output[0], site.axis + shift)]
    if keep:
        return [_moved(site, node.input[0])]
    kept = [a for a in range(-rank, 0) if a not in axes]
    return [_moved(site, node.input[0], kept[site.axis])]


@op_spec("Gather")
def gather(ctx: SpecContext, node: onnx.NodeProto, port: Port, site: Site) -> list[Link]:
    """Y = data indexed along ``axis`` by ``indices``: Y's axes are data's axes before ``axis``,
    then the indices' axes, then data's axes after ``axis``."""
    data, indices, y = node.input[0], node.input[1], node.output[0]
    rank = len(_shape(ctx, data))
    index_rank = len(_shape(ctx, indices))
    out_rank = rank - 1 + index_rank
    gathered = int(attr(node, "axis", 0))  # type: ignore[call-overload]
    gathered = gathered + rank if gathered < 0 else gathered  # a position, from the left
    if site.tensor == indices:
        raise Freeze("Gather indices carry the channels")
    if site.tensor == data:
        position = rank + site.axis
        if position == gathered:
            raise Freeze("Gather selects along the channel axis")
        if position > gathered:
            return [_moved(site, y)]  # same distance from the right
        return [_moved(site, y, position - out_rank)]
    position = out_rank + site.axis
    if position < gathered:
        return [_moved(site, data, position - rank)]
    if position >= gathered + index_rank:
        return [_moved(site, data)]
    raise Freeze("Gather's index axes carry the channels")


@op_spec("Slice")
def slice_(ctx: SpecContext, node: onnx.NodeProto, port: Port, site: Site) -> list[Link]:
    """Y = X[starts:ends] along ``axes`` (constant inputs, step 1 on the channel axis). Units
    inside the slice pass to Y at ``offset - start`` and shrink ``ends``; units before it shift
    both ``starts`` and ``ends``; units after it are not read."""
    if port.kind == "in" and port.index > 0:
        raise Freeze("Slice parameters read the channels")
    x, y = node.input[0], node.output[0]
    rank = len(_shape(ctx, x))
    if len(node.input) < 3:
        raise Freeze("Slice with attribute parameters (opset < 10)")
    values = [ctx.constant(n) if n else None for n in [*node.input, "", ""][1:5]]
    starts, ends, axes, steps = values
    if starts is None or ends is None or (len(node.input) > 3 and node.input[3] and axes is None):
        raise Freeze("Slice parameters are computed at run time")
    if len(node.input) > 4 and node.input[4] and steps is None:
        raise Freeze("Slice steps are computed at run time")
    axes_list = list(range(len(starts))) if axes is None else [int(a) for a in axes]
    axes_list = [a - rank if a >= 0 else a for a in axes_list]
    if site.axis not in axes_list:
        return [_moved(site, y if port.kind == "in" else x)]
    entry = axes_list.index(site.axis)
    if steps is not None and int(steps[entry]) != 1:
        raise Freeze("Slice with a step along the channel axis")
    size = _shape(ctx, x)[site.axis]
    start, end = int(starts[entry]), int(ends[entry])
    if start < 0 or end < 0:
        raise Freeze("Slice with negative bounds on the channel axis")
    end = min(end, size)
    node_index = ctx.node_index(node)
    shrink_end: list[Link] = (
        [] if int(ends[entry]) >= size else [CountEdit(node_index, 2, entry, site.block)]
    )
    if port.kind == "out":
        return [_moved(site, x, offset=site.offset + start), *shrink_end]
    span = ctx.units * site.block
    if site.offset + span <= start:
        return [CountEdit(node_index, 1, entry, site.block), *shrink_end]
    if site.offset >= end:
        return []
    if start <= site.offset and site.offset + span <= end:
        return [_moved(site, y, offset=site.offset - start), *shrink_end]
    raise Freeze("the units straddle the Slice bounds")
