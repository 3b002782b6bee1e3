"""Prunable layer types (one registry entry per op) and discovery of the layers in a model.

Every layer is handled through its weight *matrix view* ``W`` of shape ``(out, K)``:
- MatMul ``Y = X @ B`` with ``B[in, out]``: ``W = B.T``.
- Gemm: ``W = B`` if ``transB`` else ``B.T``.
- Conv ``W[Cout, Cin/g, *kernel]``: rows are output channels, columns are im2col patch entries in
  (kernel position, input channel) order, so that consecutive columns walk input channels
  (the reduction axis TensorRT's 2:4 patterns use). Grouped convs: rows of group ``k`` only see
  the columns of group ``k``'s input channels; statistics are kept per group.

A weight may also reach its layer through *weight view* ops (``WEIGHT_VIEWS``): a 2-D
``Transpose``, a float-to-float ``Cast`` or an ``Identity`` of a stored constant that nothing else
reads. The layer is then scored on what it sees, and the stored constant is zeroed where the
mask, mapped back through the views, says so. Other ops between a constant and a layer
(``Reshape``, ``DequantizeLinear``, ...) have a registry entry that says why the layer is skipped.
"""

from .ops import FLOAT_DTYPES, LAYER_OPS, LayerOp, _conv_to_matrix, register_layer_op
from .records import Layer, LayerScan, SkippedLayer
from .scan import find_layers, nm_problem
from .unpruned import (
    IF_BRANCH_REASON,
    NOT_PRUNED_OPS,
    SUBGRAPH_REASON,
    NotPruned,
    holds_unpruned_weight,
)
from .views import (
    QUANTISED_WEIGHT,
    WEIGHT_VIEWS,
    WeightTrace,
    WeightView,
    register_weight_view,
    seen_value,
    stored_keep_mask,
    trace_weight,
)

__all__ = [
    "FLOAT_DTYPES",
    "IF_BRANCH_REASON",
    "LAYER_OPS",
    "NOT_PRUNED_OPS",
    "QUANTISED_WEIGHT",
    "SUBGRAPH_REASON",
    "WEIGHT_VIEWS",
    "Layer",
    "LayerOp",
    "LayerScan",
    "NotPruned",
    "SkippedLayer",
    "WeightTrace",
    "WeightView",
    "_conv_to_matrix",
    "find_layers",
    "holds_unpruned_weight",
    "nm_problem",
    "register_layer_op",
    "register_weight_view",
    "seen_value",
    "stored_keep_mask",
    "trace_weight",
]
