"""A pruned matrix stored in the layer's own type keeps its zeros where, and only where, the
mask put them: a kept weight too small for float16 is stored as its smallest step."""

from __future__ import annotations

import builders
import numpy as np

from onnxprune.config import PruneConfig
from onnxprune.graph import GraphView
from onnxprune.layers import find_layers


def test_a_kept_weight_below_float16s_range_is_not_stored_as_zero() -> None:
    model = builders.fp16_mlp(seed=1)
    layer = find_layers(GraphView(model), PruneConfig(sparsity=0.5)).layers[0]
    assert layer.dtype == np.float16
    matrix = layer.matrix().astype(np.float64)  # [out, K]
    matrix[:, ::2] = 0.0  # pruned
    matrix[0, 1] = 1e-9  # kept, far below float16's smallest step (6e-8)
    matrix[1, 1] = -1e-9
    stored = layer.from_matrix(matrix)
    assert stored.dtype == np.float16
    # The zeros are exactly the pruned weights (the layout does not change the counts) ...
    assert np.count_nonzero(stored) == np.count_nonzero(matrix)
    # ... and the two tiny kept weights are float16's smallest step, with their signs.
    tiny = float(np.finfo(np.float16).smallest_subnormal)
    smallest = stored[(stored != 0) & (np.abs(stored.astype(np.float64)) <= tiny)]
    assert sorted(smallest.astype(np.float64).tolist()) == [-tiny, tiny]
