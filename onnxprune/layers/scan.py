"""Finding the prunable layers of a model, and why each other weight-bearing node is skipped."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx

from ..config import PruneConfig
from ..graph import GraphView
from .ops import FLOAT_DTYPES, LAYER_OPS, LayerOp
from .records import Layer, LayerScan, SkippedLayer
from .unpruned import NOT_PRUNED_OPS, _skip_subgraph_layers, _stored_weight, holds_unpruned_weight
from .views import WeightTrace, _view_problem, seen_value, trace_weight


def find_layers(view: GraphView, config: PruneConfig) -> LayerScan:
    """All prunable layers of the main graph, and every weight-bearing node left alone with why
    (including those inside If/Loop/Scan subgraphs)."""
    scan = LayerScan()
    by_weight: dict[str, list[onnx.NodeProto]] = {}
    traces: dict[str, WeightTrace] = {}
    for node in view.model.graph.node:
        name = view.node_name(node)
        spec = LAYER_OPS.get(node.op_type)
        if spec is None:
            if holds_unpruned_weight(node, _stored_weight(view, node)):
                scan.skipped.append(
                    SkippedLayer(name, node.op_type, NOT_PRUNED_OPS[node.op_type].reason)
                )
            continue
        if len(node.input) <= spec.weight_input:
            continue
        weight_name = node.input[spec.weight_input]
        if not view.is_constant(weight_name):
            trace = trace_weight(view, weight_name)
            if trace is None:
                continue  # both operands are activations (e.g. attention scores): not a layer
            if trace.refuse is not None:
                scan.skipped.append(SkippedLayer(name, node.op_type, trace.refuse))
                continue
            traces[weight_name] = trace
        by_weight.setdefault(weight_name, []).append(node)

    for weight_name, nodes in by_weight.items():
        first = nodes[0]
        name = view.node_name(first)
        trace = traces.get(weight_name)
        skip = _skip_reason(view, config, weight_name, nodes, trace)
        if skip is not None:
            scan.skipped.append(SkippedLayer(name, first.op_type, skip))
            continue
        stored = trace.stored if trace is not None else weight_name
        storage = "initializer" if stored in view.initializers else "Constant node"
        views = trace.views if trace is not None else ()
        if views:
            storage += " via " + "+".join(n.op_type for n in views)
        load = _loader(view, stored, trace)
        if view.base_dir is None:  # the whole model is in memory: keep the value
            weight: np.ndarray | None = load()
            assert weight is not None
            dtype, shape = weight.dtype, tuple(weight.shape)
        else:
            weight = None
            meta = _seen_meta(view, stored, trace)
            assert meta is not None
            dtype, shape = meta
        override = config.override_for(weight_name, stored, *(view.node_name(n) for n in nodes))
        scan.layers.append(
            Layer(name, stored, LAYER_OPS[first.op_type], nodes, weight, storage, views,
                  dtype, shape, load, override)
        )  # fmt: skip
    _skip_subgraph_layers(view, view.model.graph, "", set(view.initializers), scan)
    return scan


def _loader(view: GraphView, stored: str, trace: WeightTrace | None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        if trace is not None:
            return seen_value(view, trace)
        value = view.constant_value(stored)
        assert value is not None
        return value

    return load


def _seen_meta(
    view: GraphView, stored: str, trace: WeightTrace | None
) -> tuple[np.dtype, tuple[int, ...]] | None:
    """(dtype, shape) as the layer reads the weight; reads the value only through views."""
    if trace is not None:
        value = seen_value(view, trace)
        return value.dtype, tuple(value.shape)
    return view.constant_meta(stored)


def nm_problem(
    spec: LayerOp, node: onnx.NodeProto, shape: tuple[int, ...], config: PruneConfig
) -> str | None:
    """Why an N:M pattern cannot apply to a layer: its reduction runs (a depthwise filter's
    single channel, a stem conv's 3 colour channels) are not a multiple of M. Such a layer stays
    dense, as sparse tensor cores would run it dense anyway."""
    if config.nm is None:
        return None
    run = spec.reduction_run(node, shape)
    if run % config.nm.m == 0:
        return None
    return (
        f"kept dense under {config.nm}: {run} input channel(s) per reduction run, not a "
        f"multiple of {config.nm.m}"
    )


def _skip_reason(
    view: GraphView,
    config: PruneConfig,
    weight_name: str,
    nodes: list[onnx.NodeProto],
    trace: WeightTrace | None = None,
) -> str | None:
    first = nodes[0]
    names = [view.node_name(n) for n in nodes]
    stored = trace.stored if trace is not None else weight_name
    if config.is_excluded(weight_name, stored, *names):
        return "excluded by --exclude"
    override = config.override_for(weight_name, stored, *names)
    if override is not None and override.skip:
        return f"skipped by --layer {override.text}"
    spec = LAYER_OPS[first.op_type]
    if trace is not None:
        problem = _view_problem(view, trace)
        if problem:
            return problem
    meta = _seen_meta(view, weight_name, trace)
    if meta is None:
        return "weight value could not be read"
    dtype, shape = meta
    if dtype.name == "bfloat16":
        return (
            f"{first.op_type} computes in bfloat16: onnxruntime has no CPU kernel to calibrate "
            "it (a bfloat16 weight behind a Cast to float is pruned)"
        )
    if dtype not in FLOAT_DTYPES:
        return f"weight dtype {dtype} is not float16/float32/float64"
    if math.prod(shape) == 0:
        return "weight is empty"
    for node in nodes:
        problem = spec.check(node, shape)
        if problem:
            return problem
        if node.op_type != first.op_type or node.attribute != first.attribute:
            return "weight is shared by nodes of different kinds"
        if view.is_constant(node.input[spec.data_input]):
            return "both operands are constants"
    problem = nm_problem(spec, first, shape, config)
    if problem:
        return problem
    readers = view.consumers.get(weight_name, [])
    others = [n for n in readers if n not in nodes]
    if others:
        return f"weight also feeds {others[0].op_type} ({view.node_name(others[0])})"
    if weight_name in view.used_in_subgraphs:
        return "weight is also read inside a subgraph"
    if weight_name in view.graph_outputs:
        return "weight is a graph output"
    return None
