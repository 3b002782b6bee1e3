"""Fold one calibration batch's fetched in-graph sums into each layer's float64 running sums.

The augmented session (``runner``) returns, per batch, the reductions its taps computed
(``augment`` / ``taps`` / ``conv_taps``); this turns them into ``InputMoments`` /
``GatedMoments`` and adds them to the layer's accumulator, so nothing but the sums outlives a
batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import numpy as np

from ..layers import Layer
from .augment import CalibrationPlan, ConvGraphTap, NodeTaps
from .geometry import conv_moments
from .stats import GatedMoments, InputMoments


class LayerAccumulator:
    """float64 running sums for one layer; batch moments are merged in as they arrive."""

    def __init__(self) -> None:
        self.inputs: InputMoments | None = None
        self.gated: GatedMoments | None = None

    def add(self, inputs: InputMoments, gated: GatedMoments | None) -> None:
        """Add one batch's moments (float32 as fetched, or float64): the first batch's are
        copied to float64, later ones added in place, each value widened exactly as it is
        added (no float64 copy of a batch's [out, K] arrays)."""
        self.inputs = _float64(inputs) if self.inputs is None else self.inputs.merge_into(inputs)
        if gated is not None:
            self.gated = _float64(gated) if self.gated is None else self.gated.merge_into(gated)


_Moments = TypeVar("_Moments", InputMoments, GatedMoments)


def _float64(moments: _Moments) -> _Moments:
    """A float64 copy of every array of ``moments`` (layouts kept)."""
    widened: dict[str, Any] = {
        f.name: value.astype(np.float64)
        for f in dataclasses.fields(moments)
        if isinstance(value := getattr(moments, f.name), np.ndarray)
    }
    return dataclasses.replace(moments, **widened)


def fold_batch(
    plan: CalibrationPlan,
    layers: list[Layer],
    fetched: dict[str, np.ndarray],
    accumulators: dict[str, LayerAccumulator],
) -> None:
    """Add one batch (``fetched``: the plan's outputs by name) to every layer's sums."""
    for layer in layers:
        for tap in plan.taps[layer.weight_name]:
            inputs, gated = node_moments(tap, fetched)
            accumulators[layer.weight_name].add(inputs, gated)


def node_moments(
    tap: NodeTaps, fetched: dict[str, np.ndarray]
) -> tuple[InputMoments, GatedMoments | None]:
    if tap.conv_graph is not None:
        return _conv_graph_moments(tap.conv_graph, fetched)
    if tap.conv is not None:
        conv = tap.conv
        g2 = fetched[conv.g2] if conv.g2 else None
        x_ref = fetched[conv.x_ref] if conv.x_ref else None
        return conv_moments(
            fetched[conv.x], g2, conv.geometry, conv.out_channels, conv.hessian, x_ref
        )
    assert tap.input_tap is not None
    rows = float(fetched[tap.input_tap.shape][0])
    xtx = tap.input_tap.xtx
    # As fetched (float32); the accumulator widens them (``LayerAccumulator.add``).
    inputs = InputMoments(
        rows,
        fetched[tap.input_tap.x_sum][None],
        fetched[tap.input_tap.x_sq_sum][None],
        None if xtx is None else fetched[xtx][None],
    )
    if tap.cross is not None:
        inputs.cross = fetched[tap.cross.cross][None]
        inputs.ref_sum = fetched[tap.cross.ref_sum][None]
    if tap.gated is None:
        return inputs, None
    gated = GatedMoments(
        fetched[tap.gated.g2_sum],
        fetched[tap.gated.gx_sum].T,  # [K, out] -> [out, K]
        fetched[tap.gated.gx_sq_sum].T,
    )
    return inputs, gated


def _conv_graph_moments(
    tap: ConvGraphTap, fetched: dict[str, np.ndarray]
) -> tuple[InputMoments, GatedMoments | None]:
    """One batch of a Conv's in-graph sums (see ``conv_taps.conv_graph_tap``)."""
    n, _, _, positions = (int(d) for d in fetched[tap.shape])
    inputs = InputMoments(
        float(n * positions),
        fetched[tap.x_sum],  # [G, K]
        fetched[tap.x_sq_sum],
        None if tap.xtx is None else fetched[tap.xtx],  # [G, K, K]
    )
    if tap.gx_sum is None or tap.gx_sq_sum is None or tap.g2_sum is None:
        return inputs, None

    def rows_by_columns(name: str) -> np.ndarray:  # [G, K, Rg] -> [G, Rg, K] -> [Cout, K]
        value = fetched[name]
        return value.transpose(0, 2, 1).reshape(-1, value.shape[1])

    gated = GatedMoments(
        fetched[tap.g2_sum].reshape(-1),
        rows_by_columns(tap.gx_sum),
        rows_by_columns(tap.gx_sq_sum),
    )
    return inputs, gated
