"""The support re-fit applied once, to the chosen model only (an experiment).

``--refit-steps`` re-fits every candidate the sensitivity allocation and ``--group auto``
judge; on calibration data drawn from few photographs those judgements then trust fits that
do not carry to other images (EfficientNet-Lite0: calibration top-1 agreement up, held-out
down, BENCHMARKS.md "Post-pruning repairs, round 3"). Here every decision is made on the plain
update, and the conjugate-gradient re-fit (``correction.refit_on_support``) runs once on the
written model's kept weights, the bias taking the extra residual mean ``(W' - W'') E[x]``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from . import correction
from .apply import add_bias, write_weight
from .calibrate.stats import LayerStats
from .config import PruneConfig
from .graph import GraphView
from .layers import Layer, find_layers


def refit_written(
    model: onnx.ModelProto,
    dense_layers: list[Layer],
    stats: Mapping[str, LayerStats],
    config: PruneConfig,
    steps: int,
) -> int:
    """Re-fit, in place, every layer of ``model`` (a pruned copy of the model ``dense_layers``
    come from) on its kept (non-zero) weights; returns how many layers were re-fitted."""
    view = GraphView(model)
    copies = {layer.weight_name: layer for layer in find_layers(view, config).layers}
    done = 0
    for dense in dense_layers:
        copy = copies.get(dense.weight_name)
        inputs = stats[dense.weight_name].inputs
        # A weight read through views (Transpose, Cast) can only be zeroed, not re-written.
        if copy is None or copy.views or inputs.xtx is None or inputs.cross is not None:
            continue
        weight = dense.matrix()  # (out, K)
        pruned = copy.matrix()
        keep = pruned != 0
        if keep.all():
            continue
        hessians = correction.damped_hessians(
            inputs.mean, inputs.xtx, inputs.count, correction.CG_CENTERED
        )
        refitted = correction.refit_on_support(weight, pruned, keep, hessians, steps)
        mean = np.repeat(inputs.mean, weight.shape[0] // inputs.mean.shape[0], axis=0)
        write_weight(view, copy, refitted)
        add_bias(view, copy, ((pruned - refitted) * mean).sum(axis=1))
        done += 1
    view.flush_inserts()
    return done
