"""Setting a run up: the calibration/held-out split, the sample-mask input, the tensors the
structure analysis probes, why branch layers are refused, a candidate written for a session."""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx

from ..calibrate.sources import (
    CalibrationSet,
    InputSpec,
)
from ..config import PruneConfig
from ..errors import UsageError
from ..session import save_for_session
from .base import (
    MAX_HOLDOUT,
    MIN_HOLDOUT_TOTAL,
)

log = logging.getLogger(__name__)


@contextmanager
def candidate_file(model: onnx.ModelProto) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="onnxprune-candidate-") as tmp:
        yield save_for_session(model, Path(tmp) / "candidate.onnx")


def _branch_refusal(big: bool, config: PruneConfig) -> str | None:
    """Why layers inside If branches cannot be pruned in this run (None: they can)."""
    if big:
        return "not pruned in big-model mode"
    if config.sequential:
        return "not pruned with --sequential (branch layers are pruned one-shot only)"
    return None


# Ops whose outputs may be sequences or optionals, which have no shape to probe.
_UNSHAPED_OPS = ("SplitToSequence", "Optional", "OptionalGetElement", "If", "Loop", "Scan")


def probe_names(model: onnx.ModelProto) -> list[str]:
    """Every tensor of the main graph whose run-time shape the structure analysis may need."""
    names = [i.name for i in model.graph.input]
    for node in model.graph.node:
        if node.op_type == "Constant" or node.op_type.startswith("Sequence"):
            continue
        if node.op_type in _UNSHAPED_OPS:
            continue
        names += [o for o in node.output if o]
    initializers = {t.name for t in model.graph.initializer}
    return list(dict.fromkeys(n for n in names if n not in initializers))


MASK_NAMES = ("attention_mask", "input_mask")


def choose_sample_mask(specs: list[InputSpec], requested: str | None) -> str | None:
    """The input whose zeros mark padded tokens, if any (``requested``: a name or "none")."""
    if requested == "none":
        return None
    if requested is not None:
        spec = next((s for s in specs if s.name == requested), None)
        if spec is None:
            names = ", ".join(s.name for s in specs)
            raise UsageError(f"--sample-mask {requested!r} is not a model input ({names})")
        if spec.rank != 2:
            raise UsageError(
                f"--sample-mask {requested!r} must be [batch, seq], got {spec.describe()}"
            )
        return requested
    for spec in specs:
        integral = np.issubdtype(spec.dtype, np.integer) or spec.dtype == np.bool_
        if spec.name.lower() in MASK_NAMES and spec.rank == 2 and integral:
            return spec.name
    return None


def whole_batches(samples: int, fixed_batch: int | None) -> int:
    """How many of ``samples`` calibration samples to use: all of them, or for a model whose
    batch axis is fixed at B > 1, the most that fill whole batches (at least one batch, filled
    by repeating samples when fewer are given: ``CalibrationSet.batches``). A filled batch
    would count its repeated samples twice in the statistics."""
    if fixed_batch is None or fixed_batch <= 1 or samples < fixed_batch:
        return samples
    return samples - samples % fixed_batch


def split_samples(
    calibration: CalibrationSet, has_eval: bool, config: PruneConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(calibration mask, verification mask) over the calibration set's samples.

    Without --eval, a seeded random share is held out (at most MAX_HOLDOUT samples); with too
    few samples to spare (< MIN_HOLDOUT_TOTAL), verification reuses the calibration samples.
    A model whose batch axis is fixed at B > 1 calibrates on a multiple of B samples
    (``whole_batches``).
    """
    total = calibration.total
    order = np.random.default_rng(config.seed).permutation(total)
    holdout = 0
    if not has_eval and total >= MIN_HOLDOUT_TOTAL:
        holdout = min(MAX_HOLDOUT, max(1, math.ceil(config.holdout_fraction * total)))
    rest = order[holdout:]
    if config.num_samples is not None:
        rest = rest[: config.num_samples]
    rest = rest[: whole_batches(rest.size, calibration.fixed_batch)]
    calib_mask = np.zeros(total, dtype=bool)
    calib_mask[rest] = True
    if has_eval:
        return calib_mask, calib_mask
    if holdout == 0:
        verify = np.zeros(total, dtype=bool)
        verify[rest[:MAX_HOLDOUT]] = True
        return calib_mask, calib_mask if verify.sum() == calib_mask.sum() else verify
    verify_mask = np.zeros(total, dtype=bool)
    verify_mask[order[:holdout]] = True
    return calib_mask, verify_mask
