"""Op specs of ops that cut or join tensors along an axis: Concat, Split, Gather, Slice."""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx

from .base import AttrEdit, CountEdit, Freeze, Site, _axis, _moved, _shape, _to_all, attr, op_spec

if TYPE_CHECKING:  # the op-spec signature
    from .base import Link, Port, SpecContext


@op_spec("Concat")
def concat(ctx: SpecContext, node: onnx.NodeProto, port: Port, site: Site) -> list[Link]:
    """Inputs stacked along ``axis``: input ``i``'s channels sit at an offset in the output."""
    y = node.output[0]
    axis = _axis(ctx, node, y)
    if site.axis != axis:
        return _to_all(site, [*node.input, y])
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
    axis = _axis(ctx, node, x)
    if port.kind == "in" and port.index > 0:
        raise Freeze("Split sizes read the channels")
    if site.axis != axis:
        return _to_all(site, [x, *node.output])
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
