"""The shapes calibration data is checked against (the model's inputs) and the chunks and
batches it is read in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

LABELS_KEY = "labels"

Dim = int | str | None


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    def describe(self) -> str:
        dims = ",".join(str(d) if d is not None else "?" for d in self.shape)
        return f"{self.dtype}[{dims}]"


def model_input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The graph inputs a feed must provide (initializers listed as inputs are optional)."""
    initializers = {t.name for t in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        dims: list[Dim] = []
        for dim in tensor_type.shape.dim:
            # A non-positive dim_value (Paddle exports declare the batch as -1) is dynamic.
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(int(dim.dim_value))
            else:
                dims.append(dim.dim_param or None)
        specs.append(InputSpec(value.name, dtype, tuple(dims)))
    return specs


@dataclass(frozen=True)
class Chunk:
    """One file's worth of samples; loaded only when iterated."""

    source: str
    load: Callable[[], dict[str, np.ndarray]]
    count: int
    # True: axis 0 enumerates complete feeds (one per sample); False: axis 0 is the batch axis.
    stacked: bool
    has_labels: bool


@dataclass(frozen=True)
class Batch:
    feed: dict[str, np.ndarray]
    labels: np.ndarray | None
    count: int  # the samples it holds
    # Rows after them that repeat them, filling a batch to the size a model's fixed batch axis
    # demands (``CalibrationSet.batches``); outputs on those rows are not the samples'.
    padded: int = 0

    @property
    def rows(self) -> int:
        """Rows of the feed's batch-first inputs: ``count`` plus the padding."""
        return self.count + self.padded

    def samples_of(self, values: list[np.ndarray]) -> list[np.ndarray]:
        """``values`` (a run's outputs on ``feed``) without the padding rows: each batch-first
        value cut to ``count`` rows (others, such as a scalar, as they are)."""
        if not self.padded:
            return values
        return [v[: self.count] if v.ndim and v.shape[0] == self.rows else v for v in values]

    def sample_feed(self) -> dict[str, np.ndarray]:
        """``feed`` without the padding rows."""
        if not self.padded:
            return self.feed
        names = list(self.feed)
        return dict(zip(names, self.samples_of([self.feed[n] for n in names]), strict=True))
