"""Op specs of ops that keep the channel axis in place: element-wise, normalisation,
pooling, reductions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx

from .base import Freeze, Site, _axis, _carries, _moved, _shape, _to_all, attr, op_spec

if TYPE_CHECKING:  # the op-spec signature
    from .base import Link, Port, SpecContext

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
    default = -1 if node.op_type == "LayerNormalization" or ctx.opset >= 13 else 1
    axis = _axis(ctx, node, node.input[0], default)
    to_end = node.op_type == "LayerNormalization" or ctx.opset < 13
    if site.axis == axis or (to_end and site.axis > axis):
        raise Freeze(f"{node.op_type} normalises over the channel axis")
    return _to_all(site, [node.input[0], *node.output])


# -- pooling -----------------------------------------------------------------------------------


@op_spec("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def pooling(ctx: SpecContext, node: onnx.NodeProto, port: Port, site: Site) -> list[Link]:
    rank = len(_shape(ctx, node.input[0]))
    if site.axis != 1 - rank:
        raise Freeze(f"{node.op_type} pools over the channel axis")
    return _to_all(site, [node.input[0], *node.output])


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
