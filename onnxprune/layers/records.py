"""What a scan finds: the prunable layers and the skipped weight-bearing nodes."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..config import LayerOverride
from .ops import LayerOp


@dataclass
class Layer:
    """One prunable weight and the nodes that use it (several when the weight is shared).

    ``weight_name`` is the stored constant that is rewritten; ``weight`` is the value the nodes
    compute with: the stored value itself, or the stored value through ``views`` (stored ->
    layer order). In big-model mode (the view reads external data) the value is not kept: every
    access to ``weight`` reads it again, so only the layer being worked on is in memory.
    """

    name: str
    weight_name: str
    op: LayerOp
    nodes: list[onnx.NodeProto]
    value: np.ndarray | None  # the weight as the layer reads it, or None: read on access
    storage: str  # "initializer" or "Constant node", plus the views it passes through
    views: tuple[onnx.NodeProto, ...] = ()
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))
    shape: tuple[int, ...] = ()
    load: Callable[[], np.ndarray] | None = None
    # The first --layer override matching the layer's node or weight name (never a skip).
    override: LayerOverride | None = None

    @property
    def weight(self) -> np.ndarray:
        """As the layer reads it: dtype and layout."""
        if self.value is not None:
            return self.value
        assert self.load is not None
        return self.load()

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def groups(self) -> int:
        return self.op.num_groups(self.nodes[0])

    def matrix(self) -> np.ndarray:
        """The ``(out, K)`` float64 view (a copy)."""
        return np.array(self.op.to_matrix(self.weight, self.nodes[0]), dtype=np.float64)

    def from_matrix(self, matrix: np.ndarray) -> np.ndarray:
        out = self.op.from_matrix(matrix, self.nodes[0], self.shape)
        stored = out.astype(self.dtype)
        if np.issubdtype(stored.dtype, np.floating):
            # A kept weight too small for the layer's type (fp16: below 3e-8 after an update)
            # would be stored as 0: it is stored as the type's smallest step instead, so the
            # stored zeros are exactly the pruned weights (row floors, N:M patterns, the
            # report's counts).
            lost = (stored == 0) & (out != 0)
            if lost.any():
                tiny = np.finfo(stored.dtype).smallest_subnormal
                stored[lost] = np.copysign(tiny, out[lost])
        return np.ascontiguousarray(stored)

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """(out, K) of the matrix view, without reading or copying the weight."""
        if len(self.shape) != 2:  # Conv: (Cout, prod(kernel) * Cin/g)
            return self.shape[0], math.prod(self.shape[1:])
        stand_in = np.broadcast_to(np.zeros((), dtype=np.int8), self.shape)
        rows = self.op.to_matrix(stand_in, self.nodes[0])
        return int(rows.shape[0]), int(rows.shape[1])


@dataclass(frozen=True)
class SkippedLayer:
    name: str
    op_type: str
    reason: str


@dataclass
class LayerScan:
    layers: list[Layer] = field(default_factory=list)
    skipped: list[SkippedLayer] = field(default_factory=list)
