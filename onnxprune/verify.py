"""Differential check: run the original and the pruned model on the same held-out samples.

Per model output: mean per-sample cosine similarity, max and mean absolute error, top-1
agreement (argmax over the last axis); accuracy of both models when labels are given.
Metrics are folded per batch, like the calibration statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .calibrate.sources import Batch, CalibrationSet
from .metric import Metric, row_cosines
from .session import make_session, run


@dataclass
class OutputFidelity:
    name: str
    cosine: float
    max_abs_error: float
    mean_abs_error: float
    top1_agreement: float | None
    # Integer/bool outputs (class indices, masks) are scored by exact agreement: ``cosine`` and
    # ``top1_agreement`` then hold the share of equal elements, and no cosine gate applies.
    exact: bool = False
    # Non-finite elements (NaN, inf) in the pruned model's output: any fails every gate.
    nonfinite: int = 0


@dataclass
class Fidelity:
    source: str
    samples: int
    outputs: list[OutputFidelity]
    accuracy_original: float | None = None
    accuracy_pruned: float | None = None
    # The run's metric (``onnxprune.metric``): its name, its score (what decisions optimise and
    # --min-score gates) and each part's score. None: compared without a metric.
    metric: str | None = None
    score: float | None = None
    metric_parts: dict[str, float] = field(default_factory=dict)


@dataclass
class _Mean:
    """A mean folded batch by batch: ``total`` over ``count`` (0 before anything is added)."""

    total: float = 0.0
    count: int = 0

    def add(self, total: float, count: int) -> None:
        self.total += total
        self.count += count

    def mean(self) -> float:
        return self.total / max(self.count, 1)


@dataclass
class _OutputAccumulator:
    cosine: _Mean = field(default_factory=_Mean)  # per sample
    abs_error: _Mean = field(default_factory=_Mean)  # per element
    max_abs: float = 0.0
    # Argmax agreement per row (integer/bool outputs: equal elements).
    top1: _Mean = field(default_factory=_Mean)
    exact: bool = False
    nonfinite: int = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray, rows: int) -> None:
        if not np.issubdtype(reference.dtype, np.inexact):
            # Integer/bool: the share of equal elements (a class index is right or wrong).
            self.exact = True
            self.top1.add(int(np.count_nonzero(reference == candidate)), reference.size)
            return
        self.nonfinite += candidate.size - int(np.count_nonzero(np.isfinite(candidate)))
        a = reference.astype(np.float64)
        b = candidate.astype(np.float64)
        for array in (a, b):  # inf -> NaN: the sums below stay quiet (NaN never warns)
            array[np.isinf(array)] = np.nan
        diff = np.abs(a - b)
        # NaN never compares greater: take it (and inf) as an infinite error, not as 0.
        largest = float(diff.max(initial=0.0))
        self.max_abs = max(self.max_abs, largest if not np.isnan(largest) else np.inf)
        self.abs_error.add(float(diff.sum()), diff.size)
        # Samples along axis 0 when it is the batch axis, else the whole tensor is one sample.
        per_sample = rows if a.ndim >= 1 and a.shape[0] == rows and rows > 1 else 1
        a2, b2 = a.reshape(per_sample, -1), b.reshape(per_sample, -1)
        self.cosine.add(float(row_cosines(a2, b2).sum()), per_sample)
        if a.ndim >= 2 and a.shape[-1] > 1:
            self.top1.add(int((a.argmax(-1) == b.argmax(-1)).sum()), int(np.prod(a.shape[:-1])))

    def result(self, name: str) -> OutputFidelity:
        if self.exact:
            agreement = self.top1.mean()
            return OutputFidelity(name, agreement, 0.0, 0.0, agreement, exact=True)
        return OutputFidelity(
            name=name,
            cosine=self.cosine.mean(),
            max_abs_error=self.max_abs,
            mean_abs_error=self.abs_error.mean(),
            top1_agreement=self.top1.mean() if self.top1.count else None,
            nonfinite=self.nonfinite,
        )


@dataclass
class _AccuracyAccumulator:
    correct_original: int = 0
    correct_pruned: int = 0
    total: int = 0
    usable: bool = field(default=True)

    def add(self, labels: np.ndarray, original: np.ndarray, pruned: np.ndarray) -> None:
        labels = labels.reshape(-1)
        if original.ndim < 2 or original.shape[0] != labels.size:
            self.usable = False
            return
        self.correct_original += int((original.reshape(labels.size, -1).argmax(1) == labels).sum())
        self.correct_pruned += int((pruned.reshape(labels.size, -1).argmax(1) == labels).sum())
        self.total += labels.size


class ReferenceRun:
    """The original model's side of the differential check, over a fixed sample selection.

    ``cache=True`` keeps the original's outputs after the first comparison, so several
    candidates can be compared for the price of one reference run (only for small selections:
    the cache grows with the number of samples); ``cache_feeds`` keeps the input batches as
    well, so the data source is read once.
    """

    def __init__(
        self,
        original: Path,
        dataset: CalibrationSet,
        selected: np.ndarray,
        batch_size: int,
        source: str,
        cache: bool = False,
        cache_feeds: bool = False,
        metric: Metric | None = None,
        session: ort.InferenceSession | None = None,
    ) -> None:
        # ``session``: one over ``original`` already built (several references share it).
        self.session: ort.InferenceSession | None = session or make_session(original)
        self.names = [o.name for o in self.session.get_outputs()]
        self.dataset = dataset
        self.selected = selected
        self.batch_size = batch_size
        self.source = source
        self.cache = cache
        self._cached: list[list[np.ndarray]] = []
        # With ``cache_feeds`` (small selections judged many times): the input batches too.
        self.cache_feeds = cache_feeds
        self._batches: list[Batch] = []
        self._complete = False
        # What compare() scores besides the per-output table (None: no score).
        self.metric = metric
        if metric is not None:
            metric.bind({o.name: o.shape for o in self.session.get_outputs()})

    def _reference_batches(self) -> Iterator[tuple[Batch, list[np.ndarray]]]:
        if self.cache and self._complete:
            batches: Iterator[Batch] | list[Batch] = self._batches or self.dataset.batches(
                self.selected, self.batch_size
            )
            yield from zip(batches, self._cached, strict=True)
            return
        assert self.session is not None, "prefetched outputs are always cached"
        self._cached, self._batches = [], []  # a pass left unfinished starts over
        for batch in self.dataset.batches(self.selected, self.batch_size):
            outputs = run(self.session, self.names, batch.feed, self.dataset.name)
            if self.cache:
                self._cached.append(outputs)
                if self.cache_feeds:
                    self._batches.append(batch)
            yield batch, outputs
        self._complete = self.cache
        if self.cache_feeds:
            # Everything a comparison needs is cached: free the original's session (its
            # memory arena is the size of a batch's activations).
            self.session = None

    def batches_and_outputs(self) -> Iterator[tuple[Batch, list[np.ndarray]]]:
        """Each selected batch with the original's outputs on it (from the cache when it
        ran), in the order ``compare_outputs`` visits them."""
        return self._reference_batches()

    @property
    def ran(self) -> bool:
        """Whether the original's outputs on every selected sample are cached."""
        return self._complete

    def values_per_sample(self) -> int:
        """How many output values (all outputs together) the original gives per sample, from
        the first selected batch (cached when it ran already)."""
        batch, outputs = next(self._reference_batches())
        return sum(o.size for o in outputs) // max(batch.rows, 1)

    def prefetch(self) -> None:
        """Run the original on every selected sample now and release its session (the outputs
        are cached): a big model's reference and candidate are then never loaded together."""
        assert self.cache
        for _ in self._reference_batches():
            pass
        self.session = None

    def run_original(self) -> None:
        """With a cache: run the original on every selected sample now, if it has not run,
        and release its session (``prefetch``), before a candidate's session is built."""
        if self.cache and not self._complete:
            self.prefetch()

    def compare(self, pruned: Path) -> Fidelity:
        return self.compare_session(make_session(pruned))

    def compare_session(self, candidate: ort.InferenceSession) -> Fidelity:
        return self.compare_outputs(
            lambda batch: run(candidate, self.names, batch.feed, self.dataset.name)
        )

    def compare_outputs(self, outputs_of: Callable[[Batch], list[np.ndarray]]) -> Fidelity:
        """Compare the original's outputs with ``outputs_of(batch)`` (the candidate's, in the
        order of ``names``) on every selected batch."""
        accumulators = {name: _OutputAccumulator() for name in self.names}
        accuracy = _AccuracyAccumulator()
        scoring = self.metric.start() if self.metric is not None else None
        samples = 0
        for batch, outputs in self._reference_batches():
            # A batch filled to a model's fixed batch size: only its samples' rows count.
            expected, got = batch.samples_of(outputs), batch.samples_of(outputs_of(batch))
            for name, a, b in zip(self.names, expected, got, strict=True):
                if np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_:
                    accumulators[name].add(a, b, batch.count)
            if scoring is not None:
                scoring.add(
                    dict(zip(self.names, expected, strict=True)),
                    dict(zip(self.names, got, strict=True)),
                    batch.sample_feed(),
                )
            if batch.labels is not None:
                accuracy.add(batch.labels, expected[0], got[0])
            samples += batch.count
        fidelity = Fidelity(self.source, samples, [accumulators[n].result(n) for n in self.names])
        if accuracy.usable and accuracy.total:
            fidelity.accuracy_original = accuracy.correct_original / accuracy.total
            fidelity.accuracy_pruned = accuracy.correct_pruned / accuracy.total
        if scoring is not None:
            scored = scoring.result()
            fidelity.metric, fidelity.score, fidelity.metric_parts = (
                scored.name,
                scored.score,
                scored.parts,
            )
        return fidelity
