"""A Conv's geometry, and the numpy im2col moments of one batch (the reference path).

``ConvGeometry`` is what the in-graph conv taps (``conv_taps``) and this module need from a
Conv node. ``conv_moments`` computes a batch's moments in float64 numpy by im2col, for the
calibration paths that fetch a conv's input instead of reducing it in the graph, and as the
reference the in-graph sums are tested against. Shapes: ``x`` [N, C, *spatial], ``K`` =
prod(kernel) * C / group columns per group, ``G`` groups.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx

from .stats import GatedMoments, InputMoments

# im2col is done in slices of at most this many float64 elements (~64 MB).
_PATCH_BUDGET = 8_000_000


@dataclass(frozen=True)
class ConvGeometry:
    """What im2col needs from a Conv node, for 1-D and 2-D convolutions."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]  # (begin_0, begin_1, ..., end_0, end_1, ...)
    auto_pad: str
    group: int

    @classmethod
    def from_node(cls, node: onnx.NodeProto, weight_shape: tuple[int, ...]) -> ConvGeometry:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        kernel = tuple(int(k) for k in weight_shape[2:])
        spatial = len(kernel)
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        return cls(
            kernel=kernel,
            strides=tuple(attrs.get("strides", [1] * spatial)),
            dilations=tuple(attrs.get("dilations", [1] * spatial)),
            pads=tuple(attrs.get("pads", [0] * (2 * spatial))),
            auto_pad=auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad),
            group=int(attrs.get("group", 1)),
        )

    def resolved_pads(self, spatial_in: tuple[int, ...]) -> tuple[list[int], list[int]]:
        n = len(self.kernel)
        if self.auto_pad in ("NOTSET", ""):
            return list(self.pads[:n]), list(self.pads[n:])
        if self.auto_pad == "VALID":
            return [0] * n, [0] * n
        begin, end = [], []
        for size, k, s, d in zip(
            spatial_in, self.kernel, self.strides, self.dilations, strict=True
        ):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            if self.auto_pad == "SAME_UPPER":
                begin.append(small)
                end.append(large)
            else:
                begin.append(large)
                end.append(small)
        return begin, end


def conv_columns(x: np.ndarray, geo: ConvGeometry) -> Iterator[tuple[slice, np.ndarray]]:
    """im2col of ``x`` [N, C, *spatial] in slices of samples, one matrix per conv group.

    Yields (sample slice, columns [G, K, m * P] float64) for the slice's m samples, with P
    output positions (sample-major, then row-major positions) and K = prod(kernel) * C/G
    ordered (kernel position, input channel), matching ``layers._conv_to_matrix``. Built one
    kernel position at a time, straight into this layout: products over the groups are then
    batched BLAS calls (a depthwise conv has hundreds of groups).
    """
    if x.ndim == 3:  # Conv1d: treat as 2-D with height 1
        x = x[:, :, None, :]
        geo = ConvGeometry(
            (1, *geo.kernel),
            (1, *geo.strides),
            (1, *geo.dilations),
            (0, geo.pads[0], 0, geo.pads[1]) if len(geo.pads) == 2 else geo.pads,
            geo.auto_pad,
            geo.group,
        )
    n, c = x.shape[:2]
    begin, end = geo.resolved_pads(tuple(x.shape[2:]))
    padded = np.pad(x, [(0, 0), (0, 0), *zip(begin, end, strict=True)])
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel, geo.strides, geo.dilations
    out_h = (padded.shape[2] - ((kh - 1) * dh + 1)) // sh + 1
    out_w = (padded.shape[3] - ((kw - 1) * dw + 1)) // sw + 1
    positions = out_h * out_w
    groups, cg = geo.group, c // geo.group
    per_sample = positions * c * kh * kw
    step = max(1, _PATCH_BUDGET // max(per_sample, 1))
    for start in range(0, n, step):
        part = padded[start : start + step]
        m = part.shape[0]
        columns = np.empty((groups, kh * kw, cg, m, positions))
        for i in range(kh):
            for j in range(kw):
                top, left = i * dh, j * dw
                window = part[
                    :,
                    :,
                    top : top + (out_h - 1) * sh + 1 : sh,
                    left : left + (out_w - 1) * sw + 1 : sw,
                ]  # [m, C, Ho, Wo]
                grouped = window.reshape(m, groups, cg, positions).transpose(1, 2, 0, 3)
                columns[:, i * kw + j] = grouped  # [G, Cg, m, P]
        yield slice(start, start + m), columns.reshape(groups, kh * kw * cg, m * positions)


def conv_moments(
    x: np.ndarray,
    g2: np.ndarray | None,
    geo: ConvGeometry,
    out_channels: int,
    hessian: bool = False,
    x_ref: np.ndarray | None = None,
) -> tuple[InputMoments, GatedMoments | None]:
    """Moments of one batch of a Conv: ``x`` [N, C, *sp] input, ``g2`` [N, Cout, *sp_out];
    ``x_ref`` (same shape): the dense model's input, for the ``cross`` and ``ref_sum`` sums."""
    groups = geo.group
    k = int(np.prod(geo.kernel)) * (x.shape[1] // groups)
    x_sum = np.zeros((groups, k))
    x_sq_sum = np.zeros((groups, k))
    xtx = np.zeros((groups, k, k)) if hessian else None
    count = 0.0
    rows_per_group = out_channels // groups
    gated = (
        None
        if g2 is None
        else GatedMoments(
            np.zeros(out_channels), np.zeros((out_channels, k)), np.zeros((out_channels, k))
        )
    )
    cross = np.zeros((groups, k, k)) if x_ref is not None else None
    ref_sum = np.zeros((groups, k)) if x_ref is not None else None
    references = conv_columns(x_ref, geo) if x_ref is not None else None
    for samples, columns in conv_columns(x, geo):  # [G, K, M]
        if references is not None and cross is not None and ref_sum is not None:
            _, ref_columns = next(references)  # same slices: same shapes
            ref_sum += ref_columns.sum(2)
            cross += np.matmul(ref_columns, columns.transpose(0, 2, 1))
            del ref_columns
        count += columns.shape[2]
        x_sum += columns.sum(2)
        sq = columns * columns
        x_sq_sum += sq.sum(2)
        if xtx is not None:
            xtx += np.matmul(columns, columns.transpose(0, 2, 1))
        if gated is not None and g2 is not None:
            # [m, Cout, *sp_out] -> [G, Cout/G, m * P], positions aligned with ``columns``
            part = g2[samples].astype(np.float64)
            gate = np.ascontiguousarray(
                part.reshape(part.shape[0], groups, rows_per_group, -1)
                .transpose(1, 2, 0, 3)
                .reshape(groups, rows_per_group, -1)
            )
            gated.g2_sum += gate.sum(2).reshape(out_channels)
            gated.gx_sum += np.matmul(gate, columns.transpose(0, 2, 1)).reshape(out_channels, k)
            gated.gx_sq_sum += np.matmul(gate, sq.transpose(0, 2, 1)).reshape(out_channels, k)
    return InputMoments(count, x_sum, x_sq_sum, xtx, cross, ref_sum), gated
