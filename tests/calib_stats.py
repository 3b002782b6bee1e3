"""The one way tests collect layer statistics straight from ``collect_statistics``: arrays
written as an .npz, every layer onnxprune finds, every sample selected."""

from __future__ import annotations

from pathlib import Path

import builders
import numpy as np
import onnx

from onnxprune.calibrate.runner import collect_statistics
from onnxprune.calibrate.sources import model_input_specs, open_data
from onnxprune.calibrate.stats import LayerStats
from onnxprune.config import PruneConfig
from onnxprune.graph import GraphView
from onnxprune.layers import Layer, find_layers


def layer_statistics(
    model: onnx.ModelProto,
    arrays: dict[str, np.ndarray],
    folder: Path,
    batch: int,
    *,
    gated: bool = True,
    hessian: bool = False,
    sample_mask: str | None = None,
    reference: onnx.ModelProto | None = None,
    name: str = "calib.npz",
) -> tuple[list[Layer], dict[str, LayerStats]]:
    """The layers of ``model`` and their statistics over ``arrays`` (saved as
    ``folder/name``), in batches of ``batch``."""
    dataset = open_data(builders.write_npz(folder / name, arrays), model_input_specs(model))
    layers = find_layers(GraphView(model), PruneConfig(sparsity=0.5)).layers
    selected = np.ones(dataset.total, dtype=bool)
    stats = collect_statistics(
        model, layers, dataset, selected, batch, gated, False, hessian, sample_mask,
        reference=reference,
    )  # fmt: skip
    return layers, stats
