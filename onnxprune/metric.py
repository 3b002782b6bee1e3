"""The fidelity metric: the one number every decision optimises and users gate on.

``--group auto``, ``--allocation sensitivity``, ``--sparsity auto`` (through ``--min-score``),
``inspect``'s per-layer sensitivity and the report all read :func:`decision_score`, so the
number the tool optimises is the number users gate on.

A metric is a list of *parts*; the score is the mean of the parts' scores (each in [0, 1],
1 = the pruned model agrees perfectly). A part is one model output, optionally sliced
(``output0[:,4:]``), scored by one *kind*:

- ``standardized`` (the default for float outputs): each output *feature* is standardised by
  the original model's own mean and spread on the same samples, then the score is
  ``1 - mean_f min(1, MSE_f / Var_f)``: one minus the per-feature normalised squared error,
  averaged over features (the mean per-feature R^2, floored at 0 per feature). A feature that
  is small in magnitude counts as much as a large one, so a block of large, barely moving
  values (box coordinates in pixels) can no longer hide damage to a small block (class
  scores). A feature whose error is as large as its own spread counts as lost (1), never
  more, so one wild feature cannot outweigh the rest. The features are the channel axis
  (axis 1) of a [B, C, ...] output of rank >= 3, the last axis of a sequence output
  [B, S, ..., H] and of a [B, F] output; an output of rank <= 1 is one feature.
- ``cosine``: the per-sample cosine of the raw part (what onnxprune reported before).
- ``pooled``: the per-sample cosine after mean pooling a sequence output over its real
  (unmasked) positions, i.e. the sentence embedding; other outputs are pooled over every
  axis between the batch and the feature axis.
- ``top1`` / ``top5`` (``topK``): the share of positions where the original's top class is
  among the pruned model's K highest, over the feature axis.
- ``agreement``: the share of elements that are exactly equal (the default for integer and
  bool outputs).
- ``cells`` / ``cells@T``: detector score cells. The cells above T (default 0.25) of the
  original and of the pruned model, intersection over union, summed over all samples.

A *sequence output* is one whose first two axes match a rank-2 integer input of the same
batch (token ids, attention mask): its features are on the last axis, and positions where the
``--sample-mask`` input is 0 (padding) are left out of every kind.

Presets (``--metric classifier|detector|encoder``) pick kinds per output from its shape:
classifier: [B, C] outputs get top1, top5 (C > 5) and cosine; detector: [B, 4 + C, A]
outputs (A > 4 + C) get ``cells`` on the scores [:, 4:] and ``standardized`` on the boxes
[:, :4]; encoder: sequence outputs get ``pooled`` and [B, H] outputs ``cosine``. Outputs a
preset has no rule for are ``standardized``.

Everything is folded per batch (per-feature sums of the original, of its square and of the
squared error): no output is buffered beyond what ``verify.ReferenceRun`` already caches.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import EllipsisType
from typing import TYPE_CHECKING, Protocol

import numpy as np
import onnx

from .errors import CalibrationDataError, UsageError

if TYPE_CHECKING:
    from .verify import Fidelity

DEFAULT_KIND = "standardized"
KINDS = ("standardized", "cosine", "pooled", "top1", "top5", "topK", "agreement", "cells@T")
PRESETS = ("classifier", "detector", "encoder")
# ``cells``: a detector's score cell counts as "on" above this (a common confidence threshold).
DEFAULT_CELL_THRESHOLD = 0.25

# One axis of a NAME[SLICE] selector: an index, a slice or the ellipsis.
Index = int | slice | EllipsisType


def decision_score(fidelity: Fidelity) -> float:
    """The number decisions optimise: the metric's score when the comparison carried one, else
    (a Fidelity built without a metric) the mean over outputs of the per-sample cosine."""
    if fidelity.score is not None:
        return fidelity.score
    return float(np.mean([o.cosine for o in fidelity.outputs])) if fidelity.outputs else 1.0


def check_kind(text: str, option: str = "--metric") -> str:
    """``text`` if it is a kind or a preset, else a UsageError naming the choices."""
    if text in PRESETS or text in ("standardized", "cosine", "pooled", "agreement"):
        return text
    if re.fullmatch(r"top[1-9]\d*", text):
        return text
    match = re.fullmatch(r"cells(?:@(.+))?", text)
    if match:
        if match.group(1) is not None:
            try:
                float(match.group(1))
            except ValueError:
                raise UsageError(
                    f"{option} {text!r}: the cell threshold must be a number"
                ) from None
        return text
    choices = ", ".join((*KINDS, *PRESETS))
    raise UsageError(f"unknown {option} {text!r}; choose one of: {choices}")


@dataclass(frozen=True)
class OutputSelector:
    """One ``--metric-output NAME[SLICE][=KIND]``: a model output, a part of it, its kind."""

    text: str
    name: str
    index: tuple[Index, ...] | None = None
    kind: str | None = None

    @property
    def part(self) -> str:
        """NAME[SLICE], without the kind."""
        return self.text.partition("=")[0].strip()

    def select(self, array: np.ndarray) -> np.ndarray:
        return array if self.index is None else array[self.index]


def parse_metric_output(text: str) -> OutputSelector:
    """``"output0[:,4:]=cells"`` -> OutputSelector("output0", (slice(None), slice(4, None)),
    "cells"). The slice is NumPy's basic indexing over the whole output, batch axis first; the
    batch axis itself must be kept whole (``:`` or ``...``)."""
    match = re.fullmatch(r"\s*([^\[\]=]+?)\s*(\[([^\]]*)\])?\s*(?:=\s*(\S+))?\s*", text)
    if not match:
        raise UsageError(
            f"--metric-output {text!r}: expected NAME, NAME[SLICE] or NAME[SLICE]=KIND"
        )
    name, _, inside, kind = match.groups()
    index = _parse_index(text, inside) if inside is not None else None
    if kind is not None:
        check_kind(kind, "--metric-output kind")
        if kind in PRESETS:
            raise UsageError(f"--metric-output {text!r}: a preset applies to --metric, not a part")
    return OutputSelector(text, name, index, kind)


def _parse_index(text: str, inside: str) -> tuple[Index, ...]:
    items: list[Index] = []
    for part in inside.split(","):
        part = part.strip()
        try:
            if part == "...":
                items.append(Ellipsis)
            elif ":" in part:
                bounds = [int(b) if b.strip() else None for b in part.split(":")]
                if len(bounds) > 3:
                    raise ValueError(part)
                items.append(slice(*bounds))
            else:
                items.append(int(ast.literal_eval(part)))
        except (ValueError, SyntaxError):
            raise UsageError(
                f"--metric-output {text!r}: {part!r} is not an index, a slice a:b:c or ..."
            ) from None
    first = items[0] if items else Ellipsis
    if first is not Ellipsis and first != slice(None):
        raise UsageError(
            f"--metric-output {text!r}: the first axis is the batch; keep it whole (':' or '...')"
        )
    return tuple(items)


# -- the parts' accumulators -----------------------------------------------------------------


class _Part(Protocol):
    def add(self, reference: np.ndarray, candidate: np.ndarray, rows: np.ndarray | None) -> None:
        """Fold one batch. ``reference``/``candidate``: [N, F] (features last) or [B, ...]
        per-sample layouts as the kind needs; ``rows``: [N] bool keep mask or None."""

    def value(self) -> float: ...


@dataclass
class _Standardized:
    """Per feature f (columns of [N, F]): shifted sums of the original and its square, and the
    squared error, so Var_f and MSE_f come out at the end without buffering any output.
    The shift (the first batch's mean) keeps ``E[a^2] - E[a]^2`` exact for features with a
    large mean and a small spread (pixel coordinates)."""

    shift: np.ndarray | None = None
    count: int = 0
    sum_a: np.ndarray | None = None
    sum_a2: np.ndarray | None = None
    sum_e2: np.ndarray | None = None

    def add(self, reference: np.ndarray, candidate: np.ndarray, rows: np.ndarray | None) -> None:
        a = reference.astype(np.float64)
        e = candidate.astype(np.float64) - a
        if rows is not None:
            a, e = a[rows], e[rows]
        if a.shape[0] == 0:
            return
        if self.shift is None:
            self.shift = a.mean(axis=0)
            self.sum_a = np.zeros(a.shape[1])
            self.sum_a2 = np.zeros(a.shape[1])
            self.sum_e2 = np.zeros(a.shape[1])
        assert self.sum_a is not None and self.sum_a2 is not None and self.sum_e2 is not None
        d = a - self.shift
        self.count += a.shape[0]
        self.sum_a += d.sum(axis=0)
        self.sum_a2 += (d * d).sum(axis=0)
        self.sum_e2 += (e * e).sum(axis=0)

    def value(self) -> float:
        if self.count == 0 or self.shift is None:
            return 1.0
        assert self.sum_a is not None and self.sum_a2 is not None and self.sum_e2 is not None
        mean_d = self.sum_a / self.count
        variance = np.maximum(self.sum_a2 / self.count - mean_d**2, 0.0)
        second = variance + (self.shift + mean_d) ** 2  # E[a_f^2]
        # A feature that barely varies is compared on a scale set by its own magnitude (float32
        # noise is ~1e-7 of it) and by the output's typical size, never on zero.
        floor = 1e-10 * second + 1e-12 * float(second.mean()) + 1e-30
        nmse = self.sum_e2 / self.count / np.maximum(variance, floor)
        # fmin: a NaN error counts as a lost feature (1), not as a NaN score.
        return float(1.0 - np.fmin(nmse, 1.0).mean())


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row pair of ``a``, ``b`` [N, D] (float64); two zero rows count as 1."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    norms = na * nb
    both_zero = (na == 0) & (nb == 0)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), both_zero * 1.0)


@dataclass
class _Cosine:
    """Per-sample cosine; ``reference``/``candidate`` are [B, D] (masked positions zeroed)."""

    total: float = 0.0
    samples: int = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray, rows: np.ndarray | None) -> None:
        a = reference.astype(np.float64)
        b = candidate.astype(np.float64)
        if rows is not None:
            a, b = a[rows], b[rows]
        self.total += float(np.nan_to_num(row_cosines(a, b), nan=0.0).sum())
        self.samples += a.shape[0]

    def value(self) -> float:
        return self.total / self.samples if self.samples else 1.0


@dataclass
class _TopK:
    """Share of rows of [N, F] where the original's argmax is among the candidate's k largest."""

    k: int
    hits: int = 0
    total: int = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray, rows: np.ndarray | None) -> None:
        if rows is not None:
            reference, candidate = reference[rows], candidate[rows]
        top = reference.argmax(axis=1)
        at_top = np.take_along_axis(candidate, top[:, None], axis=1)
        # Rank of the original's class among the candidate's values (0 = highest).
        rank = (candidate > at_top).sum(axis=1)
        self.hits += int((rank < self.k).sum())
        self.total += reference.shape[0]

    def value(self) -> float:
        return self.hits / self.total if self.total else 1.0


@dataclass
class _Agreement:
    equal: int = 0
    total: int = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray, rows: np.ndarray | None) -> None:
        if rows is not None:
            reference, candidate = reference[rows], candidate[rows]
        self.equal += int((reference == candidate).sum())
        self.total += reference.size

    def value(self) -> float:
        return self.equal / self.total if self.total else 1.0


@dataclass
class _Cells:
    """Intersection over union of the cells above ``threshold``, summed over all samples."""

    threshold: float
    intersection: int = 0
    union: int = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray, rows: np.ndarray | None) -> None:
        if rows is not None:
            reference, candidate = reference[rows], candidate[rows]
        on_a, on_b = reference > self.threshold, candidate > self.threshold
        self.intersection += int((on_a & on_b).sum())
        self.union += int((on_a | on_b).sum())

    def value(self) -> float:
        return self.intersection / self.union if self.union else 1.0


# -- layouts -----------------------------------------------------------------------------------


def _is_sequence(shape: tuple[int, ...], feed: Mapping[str, np.ndarray]) -> bool:
    """[B, S, ..., H] whose (B, S) is the shape of a rank-2 integer input (tokens, mask)."""
    if len(shape) < 3:
        return False
    return any(
        v.ndim == 2
        and (np.issubdtype(v.dtype, np.integer) or v.dtype == np.bool_)
        and v.shape == shape[:2]
        for v in feed.values()
    )


@dataclass(frozen=True)
class _Layout:
    """How a part's [B, ...] tensor is read: which axis holds the features, and whether it is a
    sequence output (positions masked by the sample mask)."""

    feature_axis: int | None  # None: one feature (rank <= 1)
    sequence: bool


def _layout(
    shape: tuple[int, ...],
    feed: Mapping[str, np.ndarray],
    declared: Sequence[int | str | None] | None = None,
) -> _Layout:
    """Where the features are. ``declared``: the output's shape in the model (symbolic dims as
    str/None), when known; a dynamic axis (sequence length, anchors of a dynamic-size image)
    is never the feature axis, since its size changes from batch to batch."""
    if len(shape) <= 1:
        return _Layout(None, False)
    if _is_sequence(shape, feed):
        return _Layout(len(shape) - 1, True)

    def static(axis: int) -> bool:
        return declared is None or len(declared) != len(shape) or isinstance(declared[axis], int)

    for axis in (1, len(shape) - 1):
        if static(axis):
            return _Layout(axis, False)
    return _Layout(None, False)


def _declared_part(
    selector: OutputSelector, declared: Sequence[int | str | None] | None
) -> Sequence[int | str | None] | None:
    """The declared shape of a selected part, when the selection keeps every axis (slices
    only): a slice of a static axis is static, of a dynamic one dynamic."""
    if declared is None or selector.index is None:
        return declared
    if all(isinstance(item, slice) for item in selector.index):
        return declared
    return None


def _feature_count(shape: tuple[int, ...], layout: _Layout) -> int:
    return 1 if layout.feature_axis is None else shape[layout.feature_axis]


def _rows_of(array: np.ndarray, layout: _Layout) -> np.ndarray:
    """[N, F]: every position a row, the features last."""
    if layout.feature_axis is None:
        return array.reshape(-1, 1)
    moved = np.moveaxis(array, layout.feature_axis, -1)
    return moved.reshape(-1, moved.shape[-1])


def _row_mask(
    shape: tuple[int, ...], layout: _Layout, mask: np.ndarray | None
) -> np.ndarray | None:
    """[N] keep mask matching ``_rows_of`` (positions of a sequence output whose mask is 1)."""
    if mask is None or not layout.sequence or mask.shape != shape[:2]:
        return None
    inner = int(np.prod(shape[2:-1], dtype=np.int64))  # axes between S and the features
    return np.repeat(mask.reshape(-1) != 0, inner)


def _per_sample(array: np.ndarray, mask: np.ndarray | None, layout: _Layout) -> np.ndarray:
    """[B, D]: each sample flattened, padded positions zeroed (so they add nothing)."""
    if mask is not None and layout.sequence and mask.shape == array.shape[:2]:
        keep = (mask != 0).reshape(mask.shape + (1,) * (array.ndim - 2))
        array = np.where(keep, array, 0)
    return array.reshape(array.shape[0], -1) if array.ndim else array.reshape(1, 1)


def _pooled(array: np.ndarray, mask: np.ndarray | None, layout: _Layout) -> np.ndarray:
    """[B, H]: mean over the positions (real tokens only for a masked sequence output)."""
    a = array.astype(np.float64)
    if a.ndim <= 2 or layout.feature_axis is None:
        return a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1)
    a = np.moveaxis(a, layout.feature_axis, -1)  # [B, ..., H]
    flat = a.reshape(a.shape[0], -1, a.shape[-1])  # [B, P, H]
    if mask is not None and layout.sequence and mask.shape == array.shape[:2]:
        inner = int(np.prod(array.shape[2:-1], dtype=np.int64))
        weights = np.repeat((mask != 0).astype(np.float64), inner, axis=1)  # [B, P]
    else:
        weights = np.ones(flat.shape[:2])
    counts = np.maximum(weights.sum(axis=1, keepdims=True), 1.0)
    return np.einsum("bp,bph->bh", weights, flat) / counts


# -- the metric --------------------------------------------------------------------------------


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


def _new_accumulator(kind: str) -> _Part:
    if kind == "standardized":
        return _Standardized()
    if kind in ("cosine", "pooled"):
        return _Cosine()
    if kind == "agreement":
        return _Agreement()
    if kind.startswith("top"):
        return _TopK(int(kind[3:]))
    if kind.startswith("cells"):
        _, _, threshold = kind.partition("@")
        return _Cells(float(threshold) if threshold else DEFAULT_CELL_THRESHOLD)
    raise AssertionError(kind)


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


def suggest_preset(
    outputs: Sequence[tuple[str, Sequence[int | str | None], bool]],
    token_inputs: bool,
) -> tuple[str, str] | None:
    """(preset, why) from the model's outputs (name, shape with symbolic dims as str/None,
    is-float) and whether it has a rank-2 integer input (token ids); None when no preset fits."""
    floats = [(name, shape) for name, shape, is_float in outputs if is_float]
    for name, shape in floats:
        if looks_like_detector(shape):
            return "detector", f"{name} is [B, 4 + C, A] {list(shape)}: boxes then class scores"
    if token_inputs:
        for name, shape in floats:
            if len(shape) == 3:
                return "encoder", f"{name} is a token sequence [B, S, H] {list(shape)}"
    for name, shape in floats:
        if len(shape) == 2 and (not isinstance(shape[1], int) or shape[1] >= 2):
            return "classifier", f"{name} is [B, C] {list(shape)}: class logits"
    return None


def suggest_for_model(model: onnx.ModelProto) -> tuple[str, str] | None:
    """``suggest_preset`` from the graph's declared output shapes and input types."""

    def shape_of(value: onnx.ValueInfoProto) -> list[int | str | None]:
        dims = value.type.tensor_type.shape.dim
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]

    def is_float(value: onnx.ValueInfoProto) -> bool:
        elem = value.type.tensor_type.elem_type
        return elem != 0 and np.issubdtype(onnx.helper.tensor_dtype_to_np_dtype(elem), np.floating)

    initializers = {t.name for t in model.graph.initializer}
    token_inputs = any(
        len(shape_of(v)) == 2 and not is_float(v) and v.type.tensor_type.elem_type != 0
        for v in model.graph.input
        if v.name not in initializers
    )
    outputs = [(v.name, shape_of(v), is_float(v)) for v in model.graph.output]
    return suggest_preset(outputs, token_inputs)
