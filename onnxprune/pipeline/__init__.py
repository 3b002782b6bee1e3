"""One model, one calibration pass, many candidate prunings.

``Pruner`` loads the model and data, gathers statistics once, and builds pruned copies of the
model for any sparsity / scoring variant / selection group; it also runs the differential check
of a candidate against the original. ``api.prune`` (one model out), the sparsity search, the
sweep and ``inspect``'s per-layer sensitivity are all built from these pieces.

The class is one chain of stages, one module per job, each building on the one before:
``base.PrunerState`` (the state) -> ``statistics`` (calibration statistics, factors,
matrices) -> ``references`` (the original's outputs each decision is judged on) ->
``candidates`` (a candidate written, or judged in memory) -> ``decisions`` (shares, masks and
updates per layer; the --group auto choice) -> ``sensitivity`` (the per-layer curves) ->
``sequential`` (big-model and --sequential builds) -> ``pruner`` (set-up, --structured,
``build``). ``matrices`` holds the per-layer maths as plain functions.
"""

from ..layers import find_layers
from .base import Candidate, LayerPlan, PrunedLayers
from .matrices import (
    _inverse_factors,
    mean_cosine,
    prune_matrix,
    write_layer,
)
from .pruner import Pruner
from .setup import (
    candidate_file,
    choose_sample_mask,
    probe_names,
    split_samples,
)

__all__ = [
    "Candidate",
    "LayerPlan",
    "PrunedLayers",
    "Pruner",
    "_inverse_factors",
    "candidate_file",
    "choose_sample_mask",
    "find_layers",
    "mean_cosine",
    "probe_names",
    "prune_matrix",
    "split_samples",
    "write_layer",
]
