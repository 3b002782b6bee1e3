"""What a model holds, for the report: float weights and non-zeros, nodes per op type."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from ..calibrate.subgraphs import all_graphs
from ..io import read_tensor


def op_counts(model: onnx.ModelProto) -> Counter[str]:
    """Nodes per op type, in the main graph and every subgraph (If branches are pruned too)."""
    return Counter(n.op_type for graph in all_graphs(model.graph) for n in graph.node)


def count_weights(model: onnx.ModelProto, base_dir: Path | None = None) -> tuple[int, int]:
    """(parameters, non-zeros) over float initializers and float Constant-node tensors; one
    tensor in memory at a time (external data is read from ``base_dir``)."""
    params = nonzero = 0
    tensors = []
    for graph in all_graphs(model.graph):  # If/Loop/Scan bodies hold weights too
        tensors += list(graph.initializer)
        tensors += [
            a.t
            for n in graph.node
            if n.op_type == "Constant"
            for a in n.attribute
            if a.name == "value"
        ]
    for tensor in tensors:
        if tensor.data_type not in _FLOAT_TYPES:
            continue
        array = read_tensor(tensor, base_dir)
        params += array.size
        nonzero += int(np.count_nonzero(array))
    return params, nonzero


_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
}
