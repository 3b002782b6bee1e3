"""Op specs of the layers (MatMul, Gemm, Conv): where a contraction ends a group."""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx

from .base import AttrEdit, Freeze, Site, _carries, _moved, _shape, attr, op_spec

if TYPE_CHECKING:  # the op-spec signature
    from .base import Link, Port, SpecContext

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
