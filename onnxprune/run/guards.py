"""Refusals and warnings that need the loaded model: non-finite weights, options that need the
whole model in memory, --exclude / --layer patterns that match nothing, a --thorough that
changes nothing."""

from __future__ import annotations

import re

import numpy as np
import onnx

from ..calibrate.subgraphs import all_graphs
from ..config import SENSITIVITY_ALLOCATIONS, PruneConfig
from ..errors import ModelError, UsageError
from ..io import BIG_MODEL_BYTES
from ..pipeline import Pruner
from ..pipeline.base import MIN_HOLDOUT_TOTAL


def refuse_non_finite_weights(pruner: Pruner) -> None:
    """A NaN/inf in a weight to be pruned poisons its statistics and scores and would be carried
    into the output: refuse the model up front (one layer in memory at a time)."""
    for layer in pruner.layers:
        weight = layer.weight
        if np.issubdtype(weight.dtype, np.floating):
            bad = weight.size - int(np.count_nonzero(np.isfinite(weight)))
            if bad:
                raise ModelError(
                    f"{pruner.model_path}: weight {layer.weight_name!r} of layer {layer.name} "
                    f"holds {bad} NaN/inf value(s); fix the model before pruning it"
                )


def refuse_in_big_model_mode(config: PruneConfig) -> None:
    """Options that need the whole model in memory, refused in one line."""
    unsupported = [
        option
        for option, used in (
            ("--structured", bool(config.structured)),
            ("--sequential", config.sequential),
            (f"--allocation {config.allocation}", config.allocation in SENSITIVITY_ALLOCATIONS),
            ("--layer sparsity overrides", any(o.sparsity is not None for o in config.overrides)),
        )
        if used
    ]
    if unsupported:
        verb = "is" if len(unsupported) == 1 else "are"
        raise UsageError(
            f"{' and '.join(unsupported)} {verb} not supported on models over "
            f"{BIG_MODEL_BYTES / 1e9:.1f} GB yet (weight pruning, --exclude and --layer "
            "REGEX=skip are)"
        )


def unmatched_patterns(config: PruneConfig, model: onnx.ModelProto) -> list[str]:
    """A warning for each --exclude / --layer regex that matches no node, initializer or
    Constant output name of ``model`` (a typo would otherwise change nothing, silently)."""
    names: list[str] = []
    for graph in all_graphs(model.graph):  # names inside If branches may be pruned too
        names += [n.name or f"{n.op_type}:{n.output[0]}" for n in graph.node if n.output]
        names += [t.name for t in graph.initializer]
        names += [o for n in graph.node if n.op_type == "Constant" for o in n.output]
    warnings = []
    for option, regex, pattern in [("--exclude", p, p) for p in config.exclude] + [
        ("--layer", o.text, o.regex) for o in config.overrides
    ]:
        if not any(re.search(pattern, name) for name in names):
            warnings.append(
                f"{option} {regex!r} matches no node or weight name: it changes nothing"
            )
    return warnings


def idle_thorough(config: PruneConfig, pruner: Pruner) -> list[str]:
    """A warning when --thorough changes nothing: it adds --group auto's variant trials (a
    method with registered variants, the model in memory) and lifts the judging budget of
    --allocation sensitivity, and the run uses neither."""
    if not config.thorough:
        return []
    group = config.group or pruner.scorer.default_group
    trials = group == "auto" and config.nm is None and pruner.base_dir is None
    if (trials and pruner.auto_variants(pruner.scorer)) or config.allocation_mode == "sensitivity":
        return []
    return [
        "--thorough changes nothing here: it adds --group auto's variant trials and lifts "
        "--allocation sensitivity's judging budget, and this run uses neither"
    ]


def few_samples(pruner: Pruner) -> list[str]:
    """A warning when the calibration set is too small to trust (fewer than
    MIN_HOLDOUT_TOTAL samples, where none can be held out): its statistics come from a few
    samples, and without --eval the fidelity check runs on those same samples."""
    samples = int(pruner.calib_mask.sum())
    if samples >= MIN_HOLDOUT_TOTAL:
        return []
    reused = pruner.evaluation is None and bool(
        np.array_equal(pruner.holdout_mask, pruner.calib_mask)
    )
    return [
        f"only {samples} calibration sample(s): statistics from so few are unreliable "
        "(about 256 are recommended; README, Calibration data)"
        + ("; the fidelity check reuses them, so it is optimistic" if reused else "")
    ]
