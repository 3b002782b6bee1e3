"""Run calibration batches through one augmented session and fold each batch at once."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

from ..graph import GraphView
from ..layers import Layer
from ..session import make_session, run, save_for_session
from .augment import CalibrationPlan, NodeTaps, build_plan
from .gates import NodeSink
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
    hessian: bool = False,
    sample_mask: str | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> dict[str, LayerStats]:
    """Statistics of every layer over the selected samples, keyed by weight name.

    ``shapes``: run-time shapes already probed on the first batch (``probe_shapes``), which
    saves the padding probe a second run."""
    masked: frozenset[str] = frozenset()
    if sample_mask is not None:
        masked = _tensors_shaped_like_mask(
            model, layers, dataset, selected, batch_size, sample_mask, shapes
        )
    plan = build_plan(model, layers, gated, hessian, sample_mask, masked)
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
        return conv_moments(fetched[conv.x], g2, conv.geometry, conv.out_channels, conv.hessian)
    assert tap.input_tap is not None
    count = tap.input_tap.count
    rows = float(fetched[count]) if count else float(fetched[tap.input_tap.shape][0])
    xtx = tap.input_tap.xtx
    inputs = InputMoments(
        rows,
        fetched[tap.input_tap.x_sum].astype(np.float64)[None],
        fetched[tap.input_tap.x_sq_sum].astype(np.float64)[None],
        None if xtx is None else fetched[xtx].astype(np.float64)[None],
    )
    if tap.gated is None:
        return inputs, None
    gated = GatedMoments(
        fetched[tap.gated.g2_sum].astype(np.float64),
        fetched[tap.gated.gx_sum].astype(np.float64).T,  # [K, out] -> [out, K]
        fetched[tap.gated.gx_sq_sum].astype(np.float64).T,
    )
    return inputs, gated


def _tensors_shaped_like_mask(
    model: onnx.ModelProto,
    layers: list[Layer],
    dataset: CalibrationSet,
    selected: np.ndarray,
    batch_size: int,
    mask_name: str,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> frozenset[str]:
    """Layer inputs that are [batch, seq, K] with the mask's [batch, seq], seen on one real batch.

    Static shape inference loses the sequence dim behind the exporters' Reshape/Expand
    chains, so this asks the runtime instead: one batch, the dense layers' inputs exposed.
    """
    names = sorted(
        {
            node.input[layer.op.data_input]
            for layer in layers
            if layer.op.stats_kind == "dense"
            for node in layer.nodes
        }
    )
    if shapes is None or mask_name not in shapes or any(n not in shapes for n in names):
        batch = next(iter(dataset.batches(selected, batch_size)))
        mask_shape = tuple(batch.feed[mask_name].shape)
    else:
        mask_shape = shapes[mask_name]
    if not names or len(mask_shape) != 2 or mask_shape[0] == mask_shape[1]:
        return frozenset()  # a square batch could not tell batch from sequence
    if shapes is None or any(n not in shapes for n in names):
        shapes = probe_shapes(model, names, dataset, selected, batch_size)
    return frozenset(
        name for name, shape in shapes.items() if len(shape) == 3 and shape[:2] == mask_shape
    )


def probe_shapes(
    model: onnx.ModelProto,
    names: list[str],
    dataset: CalibrationSet,
    selected: np.ndarray,
    batch_size: int,
) -> dict[str, tuple[int, ...]]:
    """Run-time shapes of the named tensors on the first calibration batch (one Shape node
    per tensor, so only [rank] integers come back)."""
    if not names:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    sink = NodeSink(GraphView(probe), "onnxprune_probe")
    shapes = [sink.op("Shape", name, hint="shape") for name in names]  # [rank] int64 each
    probe.graph.node.extend(sink.nodes)
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(s, onnx.TensorProto.INT64, None) for s in shapes
    )
    batch = next(iter(dataset.batches(selected, batch_size)))
    with tempfile.TemporaryDirectory(prefix="onnxprune-probe-") as tmp:
        session = make_session(save_for_session(probe, Path(tmp) / "probe.onnx"))
        values = run(session, shapes, batch.feed, dataset.name)
    return {name: tuple(int(d) for d in value) for name, value in zip(names, values, strict=True)}
