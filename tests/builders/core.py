"""The primitives every test model is built from: seeded weights, initializers, value infos, the
one model finaliser (opset, IR version, full check), and writing a model and its calibration
data to a folder.

Conventions: weights are ``normal / sqrt(fan_in)`` and biases ``0.1 * normal``, both float32,
drawn from ``numpy.random.default_rng(seed)``; models are opset 17 with IR version 8 (what
onnxruntime needs for it) unless a test asks for another; the first input dimension is the
dynamic ``batch``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
# The newest opset the installed onnx knows, and the IR version onnxruntime needs per opset.
NEWEST_OPSET = onnx.defs.onnx_opset_version()
IR_FOR_OPSET = {11: 6, 13: 7, 17: 8, 18: 8, 21: 10}
PRODUCER = "onnxprune-tests"
# Values given to named dynamic dimensions by ``random_inputs`` (besides batch = n).
DYNAMIC_DIMS = {"seq": 6}

FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16
INT64 = TensorProto.INT64
BOOL = TensorProto.BOOL

Initializers = Mapping[str, np.ndarray] | Iterable[onnx.TensorProto]


# -- values ------------------------------------------------------------------------------------


def weight(rng: np.random.Generator, shape: Sequence[int], fan_in: int) -> np.ndarray:
    """``normal / sqrt(fan_in)`` as float32."""
    return (rng.standard_normal(shape) / math.sqrt(fan_in)).astype(np.float32)


def bias(rng: np.random.Generator, size: int) -> np.ndarray:
    """``0.1 * normal`` as float32."""
    return (0.1 * rng.standard_normal(size)).astype(np.float32)


def scalar(value: float, dtype: type = np.float32) -> np.ndarray:
    return np.array(value, dtype=dtype)


def tensors(params: Initializers) -> list[onnx.TensorProto]:
    """Initializers from ``{name: array}`` (in that order), or the given TensorProtos."""
    if isinstance(params, Mapping):
        return [numpy_helper.from_array(v, k) for k, v in params.items()]
    return list(params)


def value_info(
    name: str, shape: Sequence[int | str] | None, elem: int = FLOAT
) -> onnx.ValueInfoProto:
    """A tensor value info; ``shape`` None: rank unknown."""
    return helper.make_tensor_value_info(name, elem, None if shape is None else list(shape))


def correlated_inputs(rows: int, columns: int, seed: int) -> np.ndarray:
    """(rows, columns) float64 inputs of rank about ``columns / 2`` plus a little noise, so a
    layer's Hessian ``X^T X`` is far from diagonal (what reconstruction has to exploit)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(rows, columns // 2))
    mix = rng.normal(size=(columns // 2, columns))
    return base @ mix + 0.1 * rng.normal(size=(rows, columns))


# -- graphs and models ---------------------------------------------------------------------------


def ir_version_for(opset: int) -> int:
    """The IR version onnxruntime needs for ``opset``."""
    return IR_FOR_OPSET.get(opset) or helper.find_min_ir_version_for(
        [helper.make_opsetid("", opset)]
    )


def subgraph(
    name: str,
    nodes: Sequence[onnx.NodeProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Initializers = (),
    inputs: Sequence[onnx.ValueInfoProto] = (),
) -> onnx.GraphProto:
    """A control-flow body (If branch, Loop body): no inputs unless given, its own
    initializers."""
    return helper.make_graph(
        list(nodes), name, list(inputs), list(outputs), initializer=tensors(initializers)
    )


def finish(
    name: str,
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Initializers = (),
    *,
    opset: int = OPSET,
    ir_version: int | None = None,
    producer: str = PRODUCER,
    check: bool = True,
) -> onnx.ModelProto:
    """The model of one graph. ``ir_version`` None: what onnxruntime needs for ``opset``;
    ``producer`` "" leaves the field unset; ``check``: the full ONNX checker, so a broken
    fixture fails here rather than inside onnxprune."""
    graph = subgraph(name, nodes, outputs, initializers, inputs)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        ir_version=ir_version_for(opset) if ir_version is None else ir_version,
    )
    if producer:  # onnx.proto is proto2: an empty string set would still be written
        model.producer_name = producer
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


def with_outputs(
    model: onnx.ModelProto, names: Sequence[str], elem: int | None = FLOAT
) -> onnx.ModelProto:
    """A copy of ``model`` that also returns the intermediate tensors ``names``, typed ``elem``
    of unknown rank (``elem`` None: no type at all, for tensors of any type)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.extend(
        helper.make_empty_tensor_value_info(n) if elem is None else value_info(n, None, elem)
        for n in names
    )
    return copy


def vector_model(
    name: str,
    nodes: Sequence[onnx.NodeProto],
    params: Initializers,
    inputs: int,
    outputs: int,
    elem: int = FLOAT,
) -> onnx.ModelProto:
    """``finish`` for x [batch, inputs] -> ``nodes`` -> y [batch, outputs], both ``elem``."""
    x, y = value_info("x", ["batch", inputs], elem), value_info("y", ["batch", outputs], elem)
    return finish(name, nodes, [x], [y], params)


# -- files -------------------------------------------------------------------------------------


def save(model: onnx.ModelProto, path: str | Path) -> Path:
    path = Path(path)
    onnx.save_model(model, str(path))
    return path


def write_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` keyed by name to ``path`` (which must end in .npz)."""
    path = Path(path)
    assert path.suffix == ".npz", path
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def save_with_calibration(
    model: onnx.ModelProto,
    folder: Path,
    samples: int,
    seed: int = 1,
    name: str = "model.onnx",
    calib: str = "calib.npz",
    writer: Callable[[onnx.ModelProto, Path], Path] = save,
) -> tuple[Path, Path]:
    """``model`` saved as ``folder/name`` (by ``writer``) and ``samples`` random inputs for it
    (``random_inputs(model, samples, seed)``) as ``folder/calib``."""
    path = writer(model, folder / name)
    return path, write_npz(folder / calib, random_inputs(model, samples, seed))


# -- reading models back -----------------------------------------------------------------------


def input_names(model: onnx.ModelProto) -> list[str]:
    """The graph inputs a feed must provide (initializers listed as inputs excluded)."""
    initializers = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


def random_inputs(model: onnx.ModelProto, n: int, seed: int) -> dict[str, np.ndarray]:
    """A batch of ``n`` standard-normal samples for every float input of ``model``.

    Dynamic dimensions: ``batch`` (and any other unnamed/unknown leading dim) -> ``n``;
    ``seq`` -> 6; other named dynamic dims -> 1.
    """
    rng = np.random.default_rng(seed)
    wanted = set(input_names(model))
    arrays = {}
    for value in model.graph.input:
        if value.name not in wanted:
            continue
        tensor_type = value.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        shape = []
        for axis, dim in enumerate(tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                shape.append(int(dim.dim_value))
            elif dim.dim_param == "batch" or axis == 0:
                shape.append(n)
            else:
                shape.append(DYNAMIC_DIMS.get(dim.dim_param, 1))
        arrays[value.name] = rng.standard_normal(shape).astype(dtype)
    return arrays


def stored_weights(model: onnx.ModelProto | str | Path) -> dict[str, np.ndarray]:
    """Every initializer and every Constant node's tensor value, by tensor name (of a model or
    a model file, external data included)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Constant":
            continue
        for attr in node.attribute:
            if attr.name == "value":
                weights[node.output[0]] = numpy_helper.to_array(attr.t)
    return weights
