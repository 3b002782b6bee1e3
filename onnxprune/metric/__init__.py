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

from .kinds import row_cosines
from .layouts import _layout
from .run import Metric, MetricResult, MetricRun, decision_score, looks_like_detector
from .selectors import (
    DEFAULT_CELL_THRESHOLD,
    DEFAULT_KIND,
    KINDS,
    PRESETS,
    OutputSelector,
    check_kind,
    parse_metric_output,
)
from .suggest import suggest_for_model, suggest_preset

__all__ = [
    "DEFAULT_CELL_THRESHOLD",
    "DEFAULT_KIND",
    "KINDS",
    "PRESETS",
    "Metric",
    "MetricResult",
    "MetricRun",
    "OutputSelector",
    "_layout",
    "check_kind",
    "decision_score",
    "looks_like_detector",
    "parse_metric_output",
    "row_cosines",
    "suggest_for_model",
    "suggest_preset",
]
