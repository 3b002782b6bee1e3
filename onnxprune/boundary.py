"""The original's values at the boundaries of layers' suffixes (``onnxprune.suffix``), a
window of layers at a time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort

from .errors import CalibrationDataError
from .session import header_model, run, session_in_memory
from .verify import ReferenceRun

if TYPE_CHECKING:
    from .suffix import SuffixCut

# The boundary values kept in memory at a time (a window of layers; see ``BoundaryCache``).
BOUNDARY_CACHE_BYTES = 256 << 20


class BoundaryCache:
    """The original's boundary tensors (and outputs) on a reference's batches, for a window
    of layers at a time: values for the layers judged next are computed together, as many
    layers as fit in ``limit`` bytes, with one run of a session over the original whose
    outputs are every boundary tensor (onnxruntime frees what a run does not fetch). A
    detector's 640 px activations would not all fit at once; a window never holds more than
    the limit (a layer whose own boundary does not fit is judged on the whole model)."""

    def __init__(
        self,
        model: onnx.ModelProto,
        cuts: Sequence[SuffixCut | None],
        limit: int,
        arrays: Mapping[str, np.ndarray],
    ):
        """``arrays``: the values of ``model``'s large initializers, which the session takes
        without a copy of its own."""
        self.model = model
        self.arrays = arrays
        self.cuts = list(cuts)
        names = [n for cut in cuts if cut is not None for n in cut.boundary]
        self.outputs = [o.name for o in model.graph.output]
        self.names = list(dict.fromkeys([*names, *self.outputs]))
        self.limit = limit
        self._session: ort.InferenceSession | None = None
        # Bytes of each name for one sample (measured on one sample of the first reference).
        self._per_sample: dict[str, int] | None = None
        # The current window: the reference it is for, its layers, values per batch.
        self._window: tuple[ReferenceRun | None, frozenset[int]] = (None, frozenset())
        self._values: list[dict[str, np.ndarray]] = []
        self.runs = 0

    def _exposing_session(self) -> ort.InferenceSession:
        if self._session is None:
            exposed = header_model(self.model, self.arrays)
            existing = {o.name for o in exposed.graph.output}
            exposed.graph.output.extend(
                onnx.ValueInfoProto(name=n) for n in self.names if n not in existing
            )
            self._session = session_in_memory(exposed, self.arrays, arena=False, spin=False)
        return self._session

    def _sizes(self, reference: ReferenceRun) -> dict[str, int]:
        """Bytes per sample of every boundary tensor, from one sample of the first batch."""
        if self._per_sample is None:
            batch, _ = next(iter(reference.batches_and_outputs()))
            # One sample where the inputs are batch-first (others, e.g. a scalar rate or a
            # state, as they are); a model that insists on its batch size runs the batch.
            one = {
                name: value[:1] if value.ndim and len(value) == batch.rows else value
                for name, value in batch.feed.items()
            }
            count = 1
            try:
                values = run(self._exposing_session(), self.names, one, reference.dataset.name)
            except CalibrationDataError:
                count = batch.rows
                values = run(
                    self._exposing_session(), self.names, batch.feed, reference.dataset.name
                )
            self.runs += 1
            # Per sample (a tensor without a batch axis counts once per sample: an overestimate).
            self._per_sample = {
                name: -(-value.nbytes // count)
                for name, value in zip(self.names, values, strict=True)
            }
        return self._per_sample

    def ensure(self, reference: ReferenceRun, index: int) -> bool:
        """Make the values layer ``index`` needs available; a new window starts at it and
        takes the following layers while they fit. False when its own boundary does not."""
        if self._window[0] is reference and index in self._window[1]:
            return True
        cut = self.cuts[index]
        if cut is None:
            return False
        sizes = self._sizes(reference)
        samples = int(reference.selected.sum())
        names: set[str] = set(self.outputs)
        layers: set[int] = set()
        for later in range(index, len(self.cuts)):
            other = self.cuts[later]
            if other is None:
                continue
            grown = names | set(other.boundary)
            if sum(sizes[n] for n in grown) * samples > self.limit:
                break
            names, layers = grown, layers | {later}
        if index not in layers:
            return False
        fetched = [n for n in self.names if n in names]
        self._values = []  # the previous window's values go first
        for batch, _ in reference.batches_and_outputs():
            values = run(self._exposing_session(), fetched, batch.feed, reference.dataset.name)
            self._values.append(dict(zip(fetched, values, strict=True)))
        self.runs += 1
        self._window = (reference, frozenset(layers))
        return True

    def values(self, reference: ReferenceRun, batch_number: int) -> dict[str, np.ndarray]:
        assert self._window[0] is reference
        return self._values[batch_number]
