"""Op specs of layout ops that move or regroup the channel axis: Transpose, Reshape and its
kin."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import onnx

from .base import Coarsen, CountEdit, Freeze, Site, _moved, _shape, attr, op_spec

if TYPE_CHECKING:  # the op-spec signature
    from .base import Link, Port, SpecContext

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
