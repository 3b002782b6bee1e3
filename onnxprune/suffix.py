"""Judge a single-layer candidate by running only the part of the graph it can change.

Pruning one layer changes nothing upstream of it. The sensitivity measurement prunes each
layer alone, once or twice, and compares the model's outputs with the original's on a few
cached probe samples; running the whole model for that repeats the upstream part, on average
half of the work, every time. Instead:

* ``SuffixCut``: for a layer, the nodes downstream of its nodes (the layer's nodes included,
  found by following tensors forward through the topologically sorted main graph), the
  intermediate tensors they read from upstream (the *boundary*), and the graph outputs they
  produce.
* ``BoundaryCache`` (``onnxprune.boundary``): the original's boundary values on the probe
  samples, for a window of layers at a time (as many as fit in ``BOUNDARY_CACHE_BYTES``),
  each window one run of the original with the boundary tensors as extra outputs.
* ``SuffixEvaluator``: a session over the suffix alone, whose inputs are the boundary
  tensors, the graph inputs the suffix reads, and the layer's weight and bias change
  (``evaluation_model``); the other weights stay constants, which onnxruntime pre-packs.
  Consecutive MatMul / Gemm layers share one (``suffix_windows``): the suffix of all of
  them, each one's weight an input.
  Outputs the suffix does not produce are the original's, taken from the cache.

The judged numbers equal the whole-model evaluator's up to float rounding (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from .boundary import BoundaryCache
from .calibrate.sources import Batch
from .evaluate import (
    WeightFeedEvaluator,
    _names_read,
    _onnx_type,
    evaluation_model,
    unchanged_inputs,
)
from .graph import SUBGRAPH_ATTRIBUTES
from .layers import Layer
from .session import placeholder, run, session_in_memory
from .verify import ReferenceRun


@dataclass(frozen=True)
class SuffixCut:
    """Where a layer's suffix starts: ``positions`` of its nodes in the main graph (in
    order), ``boundary`` (intermediate tensors computed upstream that they read), ``inputs``
    (graph inputs they read) and ``outputs`` (graph outputs they produce)."""

    positions: tuple[int, ...]
    boundary: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class GraphIndex:
    """What every cut of one model reads from its main graph, gathered once (a model's 50
    cuts each walked every node's protobuf fields again: 0.15 s on EfficientNet-Lite0)."""

    reads: tuple[frozenset[str], ...]  # per node: the names it reads, its subgraphs' included
    inputs: tuple[tuple[str, ...], ...]  # per node: its input slots as written
    outputs: tuple[tuple[str, ...], ...]  # per node: the names it produces
    has_subgraph: tuple[bool, ...]
    initializers: frozenset[str]
    graph_inputs: frozenset[str]  # fed inputs (initializers listed as inputs excluded)
    graph_outputs: tuple[str, ...]
    folded: Mapping[str, int]  # ``constant_tensors``

    @classmethod
    def of(cls, model: onnx.ModelProto) -> GraphIndex:
        graph = model.graph
        reads, inputs, outputs, has_subgraph = [], [], [], []
        for node in graph.node:
            names = set(node.input)
            nested = False
            for attribute in node.attribute:
                if attribute.type in SUBGRAPH_ATTRIBUTES:
                    nested = True
                    for subgraph in [attribute.g, *attribute.graphs]:
                        names |= _names_read(subgraph)
            reads.append(frozenset(names))
            inputs.append(tuple(node.input))
            outputs.append(tuple(o for o in node.output if o))
            has_subgraph.append(nested)
        initializers = frozenset(t.name for t in graph.initializer)
        return cls(
            tuple(reads),
            tuple(inputs),
            tuple(outputs),
            tuple(has_subgraph),
            initializers,
            frozenset(i.name for i in graph.input) - initializers,
            tuple(o.name for o in graph.output),
            constant_tensors(model),
        )


def suffix_cut(
    model: onnx.ModelProto, layers: Sequence[Layer], index: GraphIndex | None = None
) -> SuffixCut | None:
    """The suffix of ``layers`` in ``model`` (whose main graph holds their nodes): every node
    downstream of any of them; None when a node of the suffix has a subgraph (its
    outer-scope reads are not followed) or a layer node is not in the main graph.
    ``index``: ``GraphIndex.of(model)``, when the caller cuts several suffixes."""
    if index is None:
        index = GraphIndex.of(model)
    nodes = model.graph.node
    starts = {id(node) for layer in layers for node in layer.nodes}
    weight_reads = {(id(node), layer.op.weight_input) for layer in layers for node in layer.nodes}
    produced: set[str] = set()
    positions: list[int] = []
    read: list[str] = []
    for k, reads in enumerate(index.reads):
        starting = id(nodes[k]) in starts
        if not starting and reads.isdisjoint(produced):
            continue
        if index.has_subgraph[k]:
            return None  # a subgraph in the suffix: its outer-scope reads are not followed
        positions.append(k)
        node_id = id(nodes[k])
        read.extend(
            name
            for slot, name in enumerate(index.inputs[k])
            if name and (node_id, slot) not in weight_reads
        )
        produced.update(index.outputs[k])
    if len(starts) != sum(1 for k in positions if id(nodes[k]) in starts):
        return None
    initializers, graph_inputs, folded = index.initializers, index.graph_inputs, index.folded
    outside = [name for name in dict.fromkeys(read) if name not in produced]
    inputs = tuple(n for n in outside if n in graph_inputs)
    outputs = tuple(o for o in index.graph_outputs if o in produced)
    boundary = [n for n in outside if n not in initializers and n not in graph_inputs]
    # Values computed from constants alone (pads, shapes, Constant nodes) are computed in the
    # suffix, not fed: fed, they would hide static shapes and pads from onnxruntime's
    # optimiser (a padded conv then runs 2x slower).
    needed = [n for n in boundary if n in folded]
    copied: set[int] = set()
    while needed:
        k = folded[needed.pop()]
        if k not in copied:
            copied.add(k)
            needed.extend(n for n in index.inputs[k] if n in folded)
    kept = tuple(n for n in boundary if n not in folded)
    return SuffixCut(tuple(sorted(copied.union(positions))), kept, inputs, outputs)


def suffix_windows(layers: Sequence[Layer]) -> list[tuple[int, ...]]:
    """The layers (by index) that share one suffix session: consecutive MatMul / Gemm layers
    in windows of about sqrt(their count), each Conv layer alone.

    A window's session starts at its first layer and feeds all its layers' weights, so a
    judgement runs the layers between the window's start and the judged layer as well: with
    windows of about sqrt(n) layers, n / sqrt(n) sessions are built instead of n, for about
    sqrt(n) / 2 extra layers per judgement (MiniLM: 6 sessions instead of 36). MatMul runs
    as fast with its weight fed as with it constant; a Conv loses onnxruntime's pre-packing
    (3-4x slower on EfficientNet-Lite0), so a conv layer keeps a session of its own."""
    matrices = sum(1 for layer in layers if layer.op.stats_kind != "conv")
    size = max(1, math.isqrt(matrices))  # a model with 1-3 MatMul layers: no windows
    windows: list[tuple[int, ...]] = []
    current: list[int] = []
    for index, layer in enumerate(layers):
        if layer.op.stats_kind == "conv" or len(current) == size:
            windows.extend([tuple(current)] if current else [])
            current = []
        if layer.op.stats_kind == "conv":
            windows.append((index,))
        else:
            current.append(index)
    windows.extend([tuple(current)] if current else [])
    return windows


def constant_tensors(model: onnx.ModelProto) -> dict[str, int]:
    """Tensors of the main graph computed from initializers and Constant nodes alone -> the
    position of the node that makes them (random generators and nodes with subgraphs
    excluded)."""
    graph = model.graph
    constant = {t.name for t in graph.initializer}
    made: dict[str, int] = {}
    for k, node in enumerate(graph.node):
        if node.op_type.startswith("Random") or any(
            a.type in SUBGRAPH_ATTRIBUTES for a in node.attribute
        ):
            continue
        if all(not name or name in constant for name in node.input):
            for out in node.output:
                if out:
                    constant.add(out)
                    made[out] = k
    return made


def suffix_model(
    model: onnx.ModelProto,
    cut: SuffixCut,
    dtypes: Mapping[str, np.dtype],
    arrays: Mapping[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """A model of the suffix's nodes alone: the boundary tensors and the graph inputs it
    reads as inputs (boundary types from ``dtypes``, rank left open), the initializers its
    nodes read (as ``placeholder``s where ``arrays`` holds their values), and the graph
    outputs it produces."""
    graph = model.graph
    nodes = [graph.node[k] for k in cut.positions]
    read = {name for node in nodes for name in node.input}
    suffix = onnx.ModelProto()
    suffix.ir_version = model.ir_version
    suffix.opset_import.extend(model.opset_import)
    sub = suffix.graph
    sub.name = graph.name
    sub.node.extend(nodes)
    held = arrays or {}
    sub.initializer.extend(
        placeholder(t) if t.name in held else t for t in graph.initializer if t.name in read
    )
    sub.input.extend(i for i in graph.input if i.name in cut.inputs)
    sub.input.extend(
        onnx.helper.make_tensor_value_info(name, _onnx_type(dtypes[name]), None)
        for name in cut.boundary
    )
    sub.output.extend(o for o in graph.output if o.name in cut.outputs)
    made = {out for node in nodes for out in node.output} - set(cut.outputs)
    sub.value_info.extend(v for v in graph.value_info if v.name in made)
    return suffix


class SuffixEvaluator(WeightFeedEvaluator):
    """Judges candidates that change one of ``layers`` (by index in the run's layer list: one
    layer, or a window of them whose weights are all inputs) with a session over their
    suffix (see module doc); same ``compare`` as ``CandidateEvaluator``."""

    def __init__(
        self,
        model: onnx.ModelProto,
        layers: Mapping[int, Layer],
        cut: SuffixCut,
        cache: BoundaryCache,
        reference: ReferenceRun,
        arrays: Mapping[str, np.ndarray],
    ) -> None:
        """``arrays``: the values of ``model``'s large initializers (``movable``), handed to
        the session without serializing them."""
        first = cache.values(reference, 0)
        suffix = suffix_model(model, cut, {n: first[n].dtype for n in cut.boundary}, arrays)
        # The layers' nodes (``model``'s objects) -> their place among the suffix's nodes.
        position = {id(model.graph.node[p]): k for k, p in enumerate(cut.positions)}
        evaluated = evaluation_model(suffix, layers, position)
        assert evaluated is not None
        self.session = session_in_memory(evaluated, arrays, spin=False)
        self.layers = dict(layers)
        self.defaults = unchanged_inputs(self.session, self.layers)
        self.cut = cut
        self.cache = cache

    def outputs_for(
        self, feed: Mapping[str, np.ndarray], reference: ReferenceRun
    ) -> Callable[[Batch], list[np.ndarray]]:
        produced = set(self.cut.outputs)
        batch_number = iter(range(1 << 62))

        def outputs_of(batch: Batch) -> list[np.ndarray]:
            cached = self.cache.values(reference, next(batch_number))
            inputs = {n: batch.feed[n] for n in self.cut.inputs}
            inputs.update((n, cached[n]) for n in self.cut.boundary)
            got = run(
                self.session, list(self.cut.outputs), {**inputs, **feed}, reference.dataset.name
            )
            by_name = dict(zip(self.cut.outputs, got, strict=True))
            return [by_name[n] if n in produced else cached[n] for n in reference.names]

        return outputs_of
