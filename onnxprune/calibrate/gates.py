"""Blind-range gates: which activation follows a layer, and its derivative built in the graph.

The method brief, section 1.2 (docs/METHOD.md, "The method brief"): ``g_i(n)`` is how
much a change of neuron ``i``'s pre-activation reaches the output. ReLU-like: an indicator;
smooth activations: ``|f'(z)|``; nothing we can see through: ``g = 1``. One registry entry per
activation kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from ..graph import GraphView


@dataclass(frozen=True)
class Gate:
    kind: str  # key of GATE_BUILDERS, or "none"
    z: str  # pre-activation tensor (neuron axis: last for MatMul/Gemm, 1 for Conv)
    params: tuple[float, ...] = ()


class NodeSink:
    """Collects nodes and scalar constants for an augmented graph, with unique names."""

    def __init__(self, view: GraphView, prefix: str) -> None:
        self.view = view
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return self.view.unique_name(f"{self.prefix}/{hint}_{self._count}")

    def op(self, op_type: str, *inputs: str, hint: str = "", **attrs: object) -> str:
        out = self.fresh(hint or op_type.lower())
        node = onnx.helper.make_node(op_type, list(inputs), [out], name=out)
        node.attribute.extend(onnx.helper.make_attribute(k, v) for k, v in attrs.items())
        self.nodes.append(node)
        return out

    def const(self, value: float | list[int] | np.ndarray, dtype: type = np.float32) -> str:
        name = self.fresh("const")
        array: np.ndarray = np.asarray(value, dtype=dtype)
        self.initializers.append(onnx.numpy_helper.from_array(array, name))
        return name


GateBuilder = Callable[[NodeSink, str, tuple[float, ...]], str]
GATE_BUILDERS: dict[str, GateBuilder] = {}


def gate_builder(kind: str) -> Callable[[GateBuilder], GateBuilder]:
    def register(fn: GateBuilder) -> GateBuilder:
        GATE_BUILDERS[kind] = fn
        return fn

    return register


FLOAT = onnx.TensorProto.FLOAT


@gate_builder("relu")
def _relu(sink: NodeSink, z: str, params: tuple[float, ...]) -> str:
    return sink.op("Cast", sink.op("Greater", z, sink.const(0.0)), to=FLOAT)


@gate_builder("leaky_relu")
def _leaky(sink: NodeSink, z: str, params: tuple[float, ...]) -> str:
    positive = sink.op("Greater", z, sink.const(0.0))
    return sink.op("Where", positive, sink.const(1.0), sink.const(params[0]))


@gate_builder("clip")
def _clip(sink: NodeSink, z: str, params: tuple[float, ...]) -> str:
    above = sink.op("Greater", z, sink.const(params[0]))
    below = sink.op("Less", z, sink.const(params[1]))
    return sink.op("Cast", sink.op("And", above, below), to=FLOAT)


@gate_builder("sigmoid")
def _sigmoid(sink: NodeSink, z: str, params: tuple[float, ...]) -> str:
    s = sink.op("Sigmoid", z)
    return sink.op("Mul", s, sink.op("Sub", sink.const(1.0), s))


@gate_builder("tanh")
def _tanh(sink: NodeSink, z: str, params: tuple[float, ...]) -> str:
    t = sink.op("Tanh", z)
    return sink.op("Sub", sink.const(1.0), sink.op("Mul", t, t))


@gate_builder("gelu")
def _gelu(sink: NodeSink, z: str, params: tuple[float, ...]) -> str:
    # d/dz [z * Phi(z)] = Phi(z) + z * phi(z)
    phi_cdf = sink.op(
        "Mul",
        sink.const(0.5),
        sink.op(
            "Add",
            sink.const(1.0),
            sink.op("Erf", sink.op("Mul", z, sink.const(0.7071067811865476))),
        ),
    )
    density = sink.op(
        "Mul",
        sink.op("Exp", sink.op("Mul", sink.op("Mul", z, z), sink.const(-0.5))),
        sink.const(0.3989422804014327),
    )
    return sink.op("Add", phi_cdf, sink.op("Mul", z, density))


@gate_builder("silu")
def _silu(sink: NodeSink, z: str, params: tuple[float, ...]) -> str:
    # d/dz [z * s(z)] = s * (1 + z * (1 - s))
    s = sink.op("Sigmoid", z)
    inner = sink.op("Mul", z, sink.op("Sub", sink.const(1.0), s))
    return sink.op("Mul", s, sink.op("Add", sink.const(1.0), inner))


@gate_builder("softplus")
def _softplus(sink: NodeSink, z: str, params: tuple[float, ...]) -> str:
    return sink.op("Sigmoid", z)


_SINGLE_OP_GATES = {
    "Relu": "relu",
    "LeakyRelu": "leaky_relu",
    "Clip": "clip",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Gelu": "gelu",
    "Softplus": "softplus",
}


def find_gate(view: GraphView, node: onnx.NodeProto) -> Gate:
    """Follow ``node``'s output through a bias Add / BatchNormalization to its activation."""
    tensor = node.output[0]
    for _ in range(3):
        readers = view.consumers.get(tensor, [])
        if tensor in view.graph_outputs or len(readers) != 1:
            break
        reader = readers[0]
        if (reader.op_type == "BatchNormalization" and reader.input[0] == tensor) or (
            reader.op_type == "Add" and _adds_small_constant(view, reader, tensor)
        ):
            tensor = reader.output[0]
        else:
            break
    return _activation_gate(view, tensor)


def _adds_small_constant(view: GraphView, add: onnx.NodeProto, tensor: str) -> bool:
    """Add(z, c) with a constant ``c`` that has at most one non-1 axis (a bias vector).

    Any such elementwise shift keeps the gate meaningful per element; a constant with several
    real axes could broadcast ``z`` to a bigger shape, so the walk stops there.
    """
    if len(add.input) != 2 or tensor not in add.input:
        return False
    other = add.input[1] if add.input[0] == tensor else add.input[0]
    value = view.constant_value(other)
    return value is not None and sum(d != 1 for d in value.shape) <= 1


def _activation_gate(view: GraphView, z: str) -> Gate:
    if z in view.graph_outputs:
        return Gate("none", z)
    readers = view.consumers.get(z, [])
    if len(readers) == 1:
        act = readers[0]
        kind = _SINGLE_OP_GATES.get(act.op_type)
        if kind is None or act.input[0] != z:
            return Gate("none", z)
        if kind == "leaky_relu":
            alpha = next((a.f for a in act.attribute if a.name == "alpha"), 0.01)
            return Gate(kind, z, (float(alpha),))
        if kind == "clip":
            return _clip_gate(view, act, z)
        return Gate(kind, z)
    ops = sorted(r.op_type for r in readers)
    if ops == ["Mul", "Sigmoid"]:
        sigmoid = next(r for r in readers if r.op_type == "Sigmoid")
        mul = next(r for r in readers if r.op_type == "Mul")
        if sigmoid.output[0] in mul.input:
            return Gate("silu", z)
    if _is_erf_gelu(view, readers):
        return Gate("gelu", z)
    return Gate("none", z)


def _clip_gate(view: GraphView, clip: onnx.NodeProto, z: str) -> Gate:
    low, high = -np.inf, np.inf
    for attr in clip.attribute:  # opset < 11
        if attr.name == "min":
            low = attr.f
        elif attr.name == "max":
            high = attr.f
    for index in (1, 2):
        if len(clip.input) > index and clip.input[index]:
            value = view.constant_value(clip.input[index])
            if value is None:
                return Gate("none", z)
            if index == 1:
                low = float(value)
            else:
                high = float(value)
    return Gate("clip", z, (float(low), float(high)))


def _is_erf_gelu(view: GraphView, readers: list[onnx.NodeProto]) -> bool:
    """The exporters' erf form: z/sqrt(2) (Div or Mul) -> Erf -> Add 1 -> Mul z -> Mul 0.5."""
    if len(readers) != 2 or {r.op_type for r in readers} - {"Div", "Mul"}:
        return False
    for reader in readers:
        if reader.op_type not in ("Div", "Mul"):
            continue
        for nxt in view.consumers.get(reader.output[0], []):
            if nxt.op_type == "Erf":
                return True
    return False
