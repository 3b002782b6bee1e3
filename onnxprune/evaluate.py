"""Judge candidate prunings in memory: one session whose layer weights are graph inputs.

Searches (``--group auto``, sensitivity allocation) compare many candidates that differ only in
the values of the prunable weights and of the biases. Writing each as a model and loading it
into a new onnxruntime session costs more than running it; instead, one copy of the model is
built once in which

* every layer's weight, as the layer reads it (after any Transpose / Cast view), is a graph
  input ``onnxprune_eval/w{i}`` that all the layer's nodes read, and
* every layer's bias change is a graph input ``onnxprune_eval/b{i}`` added to the output of
  each of its nodes (``[out]`` for MatMul / Gemm, ``[out, 1, ...]`` for Conv; scaled by the
  node's ``alpha`` for Gemm), which equals folding it into the bias as ``apply.add_bias`` does.

A candidate is a set of replaced weights and bias changes; the other layers are fed their
original values (zero bias change). The original's outputs and the input batches are cached
by the ``ReferenceRun`` passed to ``compare``, so judging a candidate is one pass over the
cached samples.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Mapping

import numpy as np
import onnx
import onnxruntime as ort

from .calibrate.sources import Batch
from .graph import SUBGRAPH_ATTRIBUTES, GraphView
from .layers import Layer
from .session import header_model, run, session_in_memory
from .verify import Fidelity, ReferenceRun

PREFIX = "onnxprune_eval"


def _onnx_type(dtype: np.dtype) -> int:
    return int(onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))


def evaluation_model(
    model: onnx.ModelProto,
    layers: Mapping[int, Layer],
    position: Mapping[int, int] | None = None,
) -> onnx.ModelProto | None:
    """``model`` with the weight and bias change of each layer (by its index in the run's
    layer list) as graph inputs (see module doc); None when a layer's node is not in the main
    graph (inside a subgraph). ``position``: id of each layer node -> its index in
    ``model.graph.node`` (default: the layers' nodes are ``model``'s own)."""
    evaluated = onnx.ModelProto()
    evaluated.CopyFrom(model)
    graph = evaluated.graph
    if position is None:
        position = {id(node): k for k, node in enumerate(model.graph.node)}
    after: dict[int, list[onnx.NodeProto]] = {}
    view = GraphView(evaluated)
    for index, layer in layers.items():
        weight_input = f"{PREFIX}/w{index}"
        delta_input = f"{PREFIX}/b{index}"
        rows = layer.matrix_shape[0]
        delta_shape = [rows] + [1] * (len(layer.shape) - 2 if layer.op.stats_kind == "conv" else 0)
        graph.input.append(
            onnx.helper.make_tensor_value_info(weight_input, _onnx_type(layer.dtype), layer.shape)
        )
        graph.input.append(
            onnx.helper.make_tensor_value_info(delta_input, _onnx_type(layer.dtype), delta_shape)
        )
        for node in layer.nodes:
            k = position.get(id(node))
            if k is None:
                return None
            graph.node[k].input[layer.op.weight_input] = weight_input
            extra = _add_bias_change(view, k, index, layer, layer.op.weight_scale(node))
            after.setdefault(k, []).extend(extra)
    nodes = []
    for k, node in enumerate(graph.node):
        nodes.append(node)
        nodes.extend(after.get(k, []))
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unread_initializers(graph)
    return evaluated


def _add_bias_change(
    view: GraphView, k: int, index: int, layer: Layer, scale: float
) -> list[onnx.NodeProto]:
    """Rename the output of ``view``'s node ``k`` (a node of layer ``index``) and return the
    nodes that add the layer's bias change input to it, scaled by the node's weight scale
    (Gemm alpha), under the node's original output name."""
    graph = view.model.graph
    copy = graph.node[k]
    delta_input = f"{PREFIX}/b{index}"
    change = delta_input
    extra: list[onnx.NodeProto] = []
    if scale != 1.0:
        factor = view.unique_name(f"{PREFIX}/scale{index}_{k}")
        graph.initializer.append(
            onnx.numpy_helper.from_array(np.array(scale, dtype=layer.dtype), factor)
        )
        change = view.unique_name(f"{PREFIX}/scaled{index}_{k}")
        extra.append(onnx.helper.make_node("Mul", [delta_input, factor], [change]))
    out = copy.output[0]
    unbiased = view.unique_name(f"{out}_{PREFIX}")
    copy.output[0] = unbiased
    extra.append(onnx.helper.make_node("Add", [unbiased, change], [out]))
    return extra


def _drop_unread_initializers(graph: onnx.GraphProto) -> None:
    """The stored weights now fed as inputs: dropped where nothing else reads them (one copy of
    the weights in memory, not two)."""
    read = _names_read(graph)
    dropped = {t.name for t in graph.initializer if t.name not in read}
    if dropped:
        kept = [t for t in graph.initializer if t.name not in dropped]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        # An old-IR model also lists its initializers as graph inputs: those go too.
        inputs = [i for i in graph.input if i.name not in dropped]
        del graph.input[:]
        graph.input.extend(inputs)


def _names_read(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a node of ``graph`` or of its subgraphs reads, and its outputs."""
    read = {o.name for o in graph.output}
    for node in graph.node:
        read.update(node.input)
        for attribute in node.attribute:
            if attribute.type in SUBGRAPH_ATTRIBUTES:
                for subgraph in [attribute.g, *attribute.graphs]:
                    read |= _names_read(subgraph)
    return read


def unchanged_inputs(
    session: ort.InferenceSession, layers: Mapping[int, Layer]
) -> dict[str, np.ndarray]:
    """The evaluation inputs of ``layers`` that leave the model as it is: each weight as the
    layer reads it, a zero bias change shaped as ``session`` declares it."""
    shapes = {i.name: i.shape for i in session.get_inputs()}
    inputs: dict[str, np.ndarray] = {}
    for index, layer in layers.items():
        inputs[f"{PREFIX}/w{index}"] = np.ascontiguousarray(layer.weight)
        inputs[f"{PREFIX}/b{index}"] = np.zeros(shapes[f"{PREFIX}/b{index}"], dtype=layer.dtype)
    return inputs


def candidate_inputs(
    defaults: Mapping[str, np.ndarray],
    layers: Mapping[int, Layer],
    weights: Mapping[int, np.ndarray],
    deltas: Mapping[int, np.ndarray | None],
) -> dict[str, np.ndarray]:
    """``defaults`` (``unchanged_inputs``) with a candidate's weights (layer index -> the
    weight as the layer reads it) and bias changes (layer index -> [out] in units of
    ``W x``; None: none) in their place."""
    feed = dict(defaults)
    for index, value in weights.items():
        feed[f"{PREFIX}/w{index}"] = np.ascontiguousarray(value, dtype=layers[index].dtype)
    for index, delta in deltas.items():
        if delta is not None:
            name = f"{PREFIX}/b{index}"
            feed[name] = delta.reshape(defaults[name].shape).astype(layers[index].dtype)
    return feed


class WeightFeedEvaluator(abc.ABC):
    """A session whose graph inputs include the candidate's weights and bias changes (see
    ``evaluation_model``); ``compare`` feeds a candidate and scores the outputs it gives."""

    session: ort.InferenceSession
    layers: Mapping[int, Layer]
    defaults: dict[str, np.ndarray]

    def compare(
        self,
        weights: Mapping[int, np.ndarray],
        deltas: Mapping[int, np.ndarray | None],
        reference: ReferenceRun,
    ) -> Fidelity:
        """``weights``: layer index -> the weight as the layer reads it; ``deltas``: layer
        index -> bias change [out] in units of ``W x`` (None: none)."""
        feed = candidate_inputs(self.defaults, self.layers, weights, deltas)
        return reference.compare_outputs(self.outputs_for(feed, reference))

    @abc.abstractmethod
    def outputs_for(
        self, feed: Mapping[str, np.ndarray], reference: ReferenceRun
    ) -> Callable[[Batch], list[np.ndarray]]:
        """One comparison's batch -> the model's outputs (``reference.names``) under ``feed``
        (a whole model's session, or the graph downstream of one layer)."""


class CandidateEvaluator(WeightFeedEvaluator):
    """One session over ``evaluation_model``; ``compare`` judges a candidate's weights
    against the original's cached outputs on a reference's samples. ``layers``: the layers
    whose weights may change, by index in the run's layer list (the others stay constants,
    which onnxruntime runs faster: it pre-packs constant weights)."""

    def __init__(
        self,
        model: onnx.ModelProto,
        layers: Mapping[int, Layer],
        arrays: Mapping[str, np.ndarray] | None = None,
    ):
        """``arrays``: the values of ``model``'s large initializers, which the session takes
        without a copy of its own (None: the session copies them)."""
        clock = time.perf_counter()
        # With ``arrays``: a copy of the proto whose held weights are placeholders.
        source = model if arrays is None else header_model(model, arrays)
        position = {id(node): k for k, node in enumerate(model.graph.node)}
        evaluated = evaluation_model(source, layers, position)
        if evaluated is None:
            raise ValueError("a layer inside a subgraph cannot be fed as a graph input")
        # ``evaluated`` is a throw-away: without ``arrays`` its weights are moved, not copied.
        self.session = session_in_memory(evaluated, arrays, consume=True, spin=False)
        # Seconds it took to build (the cost a per-layer evaluator pays for each layer).
        self.setup_seconds = time.perf_counter() - clock
        self.layers = layers
        self.defaults = unchanged_inputs(self.session, layers)

    def outputs_for(
        self, feed: Mapping[str, np.ndarray], reference: ReferenceRun
    ) -> Callable[[Batch], list[np.ndarray]]:
        names = reference.names

        def outputs_of(batch: Batch) -> list[np.ndarray]:
            return run(self.session, names, {**batch.feed, **feed}, reference.dataset.name)

        return outputs_of
