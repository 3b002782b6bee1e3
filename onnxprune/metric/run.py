"""A metric's parts, laid out from the first batch's shapes and folded batch by batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CalibrationDataError, UsageError
from .kinds import _new_accumulator, _Part
from .layouts import (
    _declared_part,
    _feature_count,
    _is_sequence,
    _Layout,
    _layout,
    _per_sample,
    _pooled,
    _row_mask,
    _rows_of,
)
from .selectors import DEFAULT_KIND, PRESETS, OutputSelector, check_kind, parse_metric_output

if TYPE_CHECKING:
    from ..verify import Fidelity


def decision_score(fidelity: Fidelity) -> float:
    """The number decisions optimise: the metric's score when the comparison carried one, else
    (a Fidelity built without a metric) the mean over outputs of the per-sample cosine."""
    if fidelity.score is not None:
        return fidelity.score
    return float(np.mean([o.cosine for o in fidelity.outputs])) if fidelity.outputs else 1.0


@dataclass
class _PartRun:
    label: str
    selector: OutputSelector
    kind: str
    accumulator: _Part | None = None
    layout: _Layout | None = None
    features: int = 0

    def add(
        self,
        reference: np.ndarray,
        candidate: np.ndarray,
        feed: Mapping[str, np.ndarray],
        mask: np.ndarray | None,
        declared: Sequence[int | str | None] | None = None,
    ) -> None:
        a, b = self.selector.select(reference), self.selector.select(candidate)
        if self.layout is None:
            self.layout = _layout(a.shape, feed, _declared_part(self.selector, declared))
            self.accumulator = _new_accumulator(self.kind)
            self.features = _feature_count(a.shape, self.layout)
        assert self.accumulator is not None
        layout = self.layout
        if self.kind not in ("cosine", "pooled") and _feature_count(a.shape, layout) != (
            self.features
        ):
            raise CalibrationDataError(
                f"metric part {self.label!r}: the feature axis changed size between batches "
                f"({self.features} -> {_feature_count(a.shape, layout)}); score it with "
                "--metric cosine or select a fixed-size part with --metric-output"
            )
        if self.kind == "pooled":
            self.accumulator.add(_pooled(a, mask, layout), _pooled(b, mask, layout), None)
        elif self.kind == "cosine":
            self.accumulator.add(_per_sample(a, mask, layout), _per_sample(b, mask, layout), None)
        else:  # row-wise kinds: [N, F], padded positions dropped
            rows = _row_mask(a.shape, layout, mask)
            self.accumulator.add(_rows_of(a, layout), _rows_of(b, layout), rows)

    def value(self) -> float:
        return self.accumulator.value() if self.accumulator is not None else 1.0


def _preset_parts(
    preset: str, name: str, shape: tuple[int, ...], sequence: bool
) -> list[tuple[OutputSelector, str]]:
    whole = OutputSelector(name, name)
    if preset == "classifier" and len(shape) == 2 and shape[1] >= 2:
        parts = [(whole, "top1"), (whole, "cosine")]
        if shape[1] > 5:
            parts.insert(1, (whole, "top5"))
        return parts
    if preset == "detector" and looks_like_detector(shape) and not sequence:
        boxes = OutputSelector(f"{name}[:,:4]", name, (slice(None), slice(None, 4)))
        scores = OutputSelector(f"{name}[:,4:]", name, (slice(None), slice(4, None)))
        return [(scores, "cells"), (boxes, "standardized")]
    if preset == "encoder":
        if sequence:
            return [(whole, "pooled")]
        if len(shape) == 2:
            return [(whole, "cosine")]
    return [(whole, DEFAULT_KIND)]


def looks_like_detector(shape: Sequence[int | str | None]) -> bool:
    """[B, 4 + C, A] with C >= 1 and more anchors than channels (YOLO-style heads)."""
    if len(shape) != 3:
        return False
    channels, anchors = shape[1], shape[2]
    if not isinstance(channels, int) or channels < 5:
        return False
    return not isinstance(anchors, int) or anchors > channels


@dataclass
class MetricResult:
    name: str
    score: float
    # Each part's label ("output0[:,4:] cells") -> its score.
    parts: dict[str, float] = field(default_factory=dict)


class Metric:
    """What a run's comparisons score: ``kind`` (a kind or a preset; default standardized) for
    every numeric output, or only the ``outputs`` selectors (``NAME[SLICE][=KIND]``). The
    sample mask is the input whose zeros mark padding of sequence outputs."""

    def __init__(
        self,
        kind: str = DEFAULT_KIND,
        outputs: Sequence[str] = (),
        sample_mask: str | None = None,
    ) -> None:
        self.kind = check_kind(kind)
        self.selectors = [parse_metric_output(text) for text in outputs]
        self.sample_mask = sample_mask
        # Output name -> shape declared by the model (``bind``); decides the feature axes.
        self.declared: dict[str, list[int | str | None]] = {}

    @property
    def name(self) -> str:
        if not self.selectors:
            return self.kind
        return ", ".join(f"{s.part}={s.kind or self.kind}" for s in self.selectors)

    def bind(self, declared: Mapping[str, Sequence[int | str | None]]) -> None:
        """The model's outputs and their declared shapes; every selector must name one (a
        one-line UsageError otherwise)."""
        self.declared = {name: list(shape) for name, shape in declared.items()}
        names = list(declared)
        for selector in self.selectors:
            if selector.name not in names:
                raise UsageError(
                    f"--metric-output {selector.text!r}: {selector.name!r} is not a model output "
                    f"({', '.join(names)})"
                )

    def start(self) -> MetricRun:
        return MetricRun(self)


class MetricRun:
    """One comparison's accumulators; parts are laid out on the first batch (shapes known)."""

    def __init__(self, metric: Metric) -> None:
        self.metric = metric
        self.parts: list[_PartRun] | None = None

    def _plan(
        self, outputs: Mapping[str, np.ndarray], feed: Mapping[str, np.ndarray]
    ) -> list[_PartRun]:
        metric = self.metric
        plan: list[_PartRun] = []
        selectors = metric.selectors or [OutputSelector(n, n) for n in outputs]
        for selector in selectors:
            array = outputs[selector.name]
            if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
                continue  # strings and the like: nothing to score
            exact = not np.issubdtype(array.dtype, np.floating)
            kind = selector.kind or metric.kind
            if exact:
                # Integer and bool outputs (class ids, counts, masks) agree or they do not.
                plan.append(_PartRun(f"{selector.part} agreement", selector, "agreement"))
            elif kind in PRESETS:
                part = selector.select(array)
                sequence = _is_sequence(part.shape, feed)
                subparts = _preset_parts(kind, selector.name, part.shape, sequence)
                if selector.index is not None:
                    # A slice takes the preset's kinds for the whole part; a rule that slices
                    # again (detector) gives way to the default.
                    whole = all(sub.index is None for sub, _ in subparts)
                    subparts = [
                        (selector, sub_kind if whole else DEFAULT_KIND)
                        for _, sub_kind in (subparts if whole else subparts[:1])
                    ]
                for sub, sub_kind in subparts:
                    plan.append(_PartRun(f"{sub.part} {sub_kind}", sub, sub_kind))
            else:
                plan.append(_PartRun(f"{selector.part} {kind}", selector, kind))
        return plan

    def add(
        self,
        outputs: Mapping[str, np.ndarray],
        got: Mapping[str, np.ndarray],
        feed: Mapping[str, np.ndarray],
    ) -> None:
        """Fold one batch: the original's ``outputs`` and the candidate's ``got`` by name."""
        if self.parts is None:
            self.parts = self._plan(outputs, feed)
        name = self.metric.sample_mask
        mask = np.asarray(feed[name]) if name is not None and name in feed else None
        for part in self.parts:
            reference = outputs[part.selector.name]
            try:
                part.add(
                    reference,
                    got[part.selector.name],
                    feed,
                    mask,
                    self.metric.declared.get(part.selector.name),
                )
            except (IndexError, ValueError) as err:
                if part.selector.index is None:
                    raise
                raise UsageError(
                    f"--metric-output {part.selector.text!r} does not fit the output's shape "
                    f"{list(reference.shape)}: {err}"
                ) from err

    def result(self) -> MetricResult:
        parts = {p.label: p.value() for p in self.parts or []}
        score = float(np.mean(list(parts.values()))) if parts else 1.0
        return MetricResult(self.metric.name, score, parts)
