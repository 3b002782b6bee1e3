"""Run calibration batches through one augmented session and fold each batch at once."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

from ..layers import Layer
from ..session import make_session, run, save_for_session
from .augment import CalibrationPlan, NodeTaps, build_plan
from .sources import CalibrationSet
from .stats import GatedMoments, InputMoments, LayerStats, conv_moments


class _LayerAccumulator:
    """float64 running sums for one layer; batch moments are merged in as they arrive."""

    def __init__(self) -> None:
        self.inputs: InputMoments | None = None
        self.gated: GatedMoments | None = None

    def add(self, inputs: InputMoments, gated: GatedMoments | None) -> None:
        self.inputs = inputs if self.inputs is None else self.inputs.merge(inputs)
        if gated is not None:
            self.gated = gated if self.gated is None else self.gated.merge(gated)


def collect_statistics(
    model: onnx.ModelProto,
    layers: list[Layer],
    dataset: CalibrationSet,
    selected: np.ndarray,
    batch_size: int,
    gated: bool,
    progress: bool,
) -> dict[str, LayerStats]:
    """Statistics of every layer over the selected samples, keyed by weight name."""
    plan = build_plan(model, layers, gated)
    accumulators = {layer.weight_name: _LayerAccumulator() for layer in layers}
    with tempfile.TemporaryDirectory(prefix="onnxprune-calib-") as tmp:
        session = make_session(save_for_session(plan.model, Path(tmp) / "augmented.onnx"))
        total = int(selected.sum())
        with tqdm(
            total=total, desc="calibrating", unit="sample", disable=not progress, leave=False
        ) as bar:
            for batch in dataset.batches(selected, batch_size):
                values = run(session, plan.outputs, batch.feed, dataset.name)
                fetched = dict(zip(plan.outputs, values, strict=True))
                _fold(plan, layers, fetched, accumulators)
                bar.update(batch.count)
    stats = {}
    for layer in layers:
        acc = accumulators[layer.weight_name]
        assert acc.inputs is not None
        stats[layer.weight_name] = LayerStats(acc.inputs, acc.gated, plan.gates[layer.weight_name])
    return stats


def _fold(
    plan: CalibrationPlan,
    layers: list[Layer],
    fetched: dict[str, np.ndarray],
    accumulators: dict[str, _LayerAccumulator],
) -> None:
    for layer in layers:
        for tap in plan.taps[layer.weight_name]:
            inputs, gated = _node_moments(tap, fetched)
            accumulators[layer.weight_name].add(inputs, gated)


def _node_moments(
    tap: NodeTaps, fetched: dict[str, np.ndarray]
) -> tuple[InputMoments, GatedMoments | None]:
    if tap.conv is not None:
        conv = tap.conv
        g2 = fetched[conv.g2] if conv.g2 else None
        return conv_moments(fetched[conv.x], g2, conv.geometry, conv.out_channels)
    assert tap.input_tap is not None
    rows = float(fetched[tap.input_tap.shape][0])
    inputs = InputMoments(
        rows,
        fetched[tap.input_tap.x_sum].astype(np.float64)[None],
        fetched[tap.input_tap.x_sq_sum].astype(np.float64)[None],
    )
    if tap.gated is None:
        return inputs, None
    gated = GatedMoments(
        fetched[tap.gated.g2_sum].astype(np.float64),
        fetched[tap.gated.gx_sum].astype(np.float64).T,  # [K, out] -> [out, K]
        fetched[tap.gated.gx_sq_sum].astype(np.float64).T,
    )
    return inputs, gated
