"""Conv statistics reduced inside the graph: one Gather (depthwise convs: a one-hot "patch" Conv)
turns the layer input into its im2col columns, then batched MatMuls and reductions over (batch,
positions) return only [G, K, K]-sized tensors per batch, in float32 (the runner folds them into
float64)."""

from __future__ import annotations

import math

import numpy as np

from .gates import NodeSink
from .geometry import ConvGeometry
from .taps import FLOAT, ConvGraphTap, reduce


def patch_kernel(weight_shape: tuple[int, ...], groups: int) -> np.ndarray:
    """One-hot weights [G * K, Cg, *kernel] of a Conv whose output channel g*K + p*Cg + c copies
    input channel c of group g at kernel position p (row-major): with the layer's strides,
    pads, dilations and group, that Conv's output holds the layer's im2col columns in the
    (kernel position, input channel) order of ``layers._conv_to_matrix``."""
    channels = weight_shape[1]  # Cg
    kernel = tuple(weight_shape[2:])
    positions = int(np.prod(kernel))
    columns = positions * channels
    one_hot = np.zeros((columns, channels, positions), dtype=np.float32)
    p, c = np.divmod(np.arange(columns), channels)
    one_hot[np.arange(columns), c, p] = 1.0
    repeats = (groups, *([1] * (1 + len(kernel))))
    return np.tile(one_hot.reshape(columns, channels, *kernel), repeats)


# Conv statistics are gathered on at most about this many output positions per sample: a
# regular grid of every ``step``-th row and column (neighbouring positions see overlapping
# patches, so a sparser grid loses little, while the K x K products cost K^2 per position).
MAX_CONV_POSITIONS = 256
# ... and on fewer where a position's patch column (input channels x kernel, all groups) is
# wide: at most about MAX_PATCH_VALUES patch values per sample, never fewer than
# MIN_CONV_POSITIONS positions. A 5x5 depthwise conv over 672 channels at 14x14 has 16800
# values per position: all 196 positions made a 420 MB patch tensor per batch of 32 and
# cost more than the rest of the calibration pass, for 25 x 25 problems that 64 samples x
# 16 positions (1024 rows) already determine well.
MAX_PATCH_VALUES = 1 << 18
MIN_CONV_POSITIONS = 16
# A grouped conv whose groups are at most this many columns wide (depthwise 3x3 to 7x7: 9 to
# 49) solves one small problem per group, which MIN_CONV_POSITIONS positions per sample
# already determine (64 samples: 1024 rows for 25 columns), however many channels it has.
# EfficientNet-Lite0's calibration on 64 images: 3.4-3.7 -> 3.0-3.4 s; top-1 agreement /
# logit cosine with the dense model at 0.5-0.9 unchanged within 0.0012 (on 256 images:
# 0.3125 / 0.6310, 0.1406 / 0.4074, 0 / 0.2436, 0 / 0.0834 -> 0.3203 / 0.6307, 0.1406 /
# 0.4074, 0 / 0.2424, 0 / 0.0834).
NARROW_GROUP_COLUMNS = 64


def position_step(positions: int, geo: ConvGeometry, columns: int = 1) -> int:
    """The grid step (per spatial axis) for a Conv with ``positions`` outputs per sample and
    ``columns`` patch values per group and position: 1 (every position) for small outputs,
    unknown sizes and auto_pad convs (whose padding depends on the stride)."""
    patch_width = columns * geo.group
    wanted = min(MAX_CONV_POSITIONS, max(MIN_CONV_POSITIONS, MAX_PATCH_VALUES // patch_width))
    if geo.group > 1 and columns <= NARROW_GROUP_COLUMNS:
        wanted = MIN_CONV_POSITIONS
    if positions <= wanted or geo.auto_pad not in ("NOTSET", ""):
        return 1
    spatial = len(geo.kernel)
    return max(1, math.ceil((positions / wanted) ** (1.0 / spatial)))


def every_nth(sink: NodeSink, x: str, axes: list[int], step: int) -> str:
    """Every ``step``-th element of ``x`` along ``axes``, from the first."""
    big = np.iinfo(np.int64).max
    return sink.op(
        "Slice",
        x,
        sink.const([0] * len(axes), dtype=np.int64),
        sink.const([big] * len(axes), dtype=np.int64),
        sink.const(axes, dtype=np.int64),
        sink.const([step] * len(axes), dtype=np.int64),
        hint="grid",
    )


def conv_graph_tap(
    sink: NodeSink,
    data: str,
    g2: str | None,
    geo: ConvGeometry,
    weight_shape: tuple[int, ...],
    hessian: bool,
    opset: int,
    step: int = 1,
) -> ConvGraphTap:
    """Moments of a Conv's input per conv group, reduced inside the graph.

    ``patches`` [N, G*K, *out] comes from a one-hot Conv (``patch_kernel``) with the layer's
    geometry; a pointwise conv with unit strides and no padding is its own im2col. Viewed as
    [N, G, K, P], the sums reduce over (N, P) and the products are batched MatMuls over (N, G)
    summed over N: the cost of the layer's own forward pass, for K x K instead of Cout x K.
    ``step`` > 1: only every ``step``-th output position along each spatial axis is gathered
    (the patch Conv's strides times ``step``; ``g2`` must be on the same grid).
    """
    groups = geo.group
    rows = weight_shape[0] // groups  # Rg
    columns = int(np.prod(weight_shape[1:]))  # K = Cg * prod(kernel)
    x = sink.op("Cast", data, to=FLOAT, hint="conv_x")
    # Samples and positions side by side, [G, K, N*P]: every sum below is then one MatMul or
    # reduction per group, with no [N, G, K, K] intermediate to sum over N (for a pointwise
    # conv over 1152 channels that intermediate was 6x the patch tensor, and summing it cost
    # as much as the products).
    if _gathers_patches(geo, weight_shape, step, opset):
        gathered = _gathered_patches(sink, x, geo, weight_shape, step)  # [N, C, K', P]
        shape = sink.op("Shape", gathered, hint="p4_shape")  # N first, P last, as p4's
        pg = _gathered_by_group(sink, gathered, groups, weight_shape)
    else:
        patches = _patches(sink, x, geo, weight_shape, step)  # [N, G*K, *out]
        p4 = sink.op(  # [N, G, K, P]
            "Reshape", patches, sink.const([0, groups, columns, -1], dtype=np.int64), hint="p4"
        )
        shape = sink.op("Shape", p4, hint="p4_shape")
        pg = _by_group(sink, p4, groups, columns, "pg")
    xtx = gx_sum = gx_sq_sum = g2_sum = None
    if hessian:
        # A Transpose read only by the MatMul: onnxruntime fuses the pair (no transposed copy).
        pg_t = sink.op("Transpose", pg, perm=[0, 2, 1], hint="pg_t")  # [G, N*P, K]
        xtx = sink.op("MatMul", pg, pg_t, hint="conv_xtx")  # [G, K, K]
    if g2 is not None:
        g2_sum, gx_sum, gx_sq_sum = _gated_sums(sink, pg, g2, groups, rows, opset)
    return ConvGraphTap(
        shape=shape,
        x_sum=reduce(sink, "ReduceSum", pg, [2], opset, "conv_x_sum"),  # [G, K]
        x_sq_sum=reduce(sink, "ReduceSumSquare", pg, [2], opset, "conv_x_sq_sum"),
        xtx=xtx,
        g2_sum=g2_sum,
        gx_sum=gx_sum,
        gx_sq_sum=gx_sq_sum,
    )


# From this grid step on, the patches come from depthwise convs onnxruntime runs in its NCHWc
# layout (``grid_by_conv``, ``_shifted_patches``) rather than from Slice or one grouped patch
# Conv, which need the whole activation in NCHW. Measured on the calibration pass: a 640 px
# detector 3.50 -> 3.13 s per batch of 32; EfficientNet-Lite0 (steps up to 7) unchanged at
# 2.0 s; from step 4, EfficientNet-Lite0 was slower (2.18 s: many small convs).
MIN_BLOCKED_GRID_STEP = 8


def _patches(
    sink: NodeSink, x: str, geo: ConvGeometry, weight_shape: tuple[int, ...], step: int
) -> str:
    """The layer input's im2col columns [N, G*K, *out] on the grid of every ``step``-th output
    position: a one-hot Conv with the layer's geometry, or ``x`` itself for a pointwise conv
    with unit strides and no padding."""
    groups = geo.group
    spatial = len(weight_shape) - 2
    pointwise = _own_im2col(geo, weight_shape)
    if pointwise and step == 1:
        return x
    if pointwise and step >= MIN_BLOCKED_GRID_STEP:
        return grid_by_conv(sink, x, groups * weight_shape[1], spatial, step)
    if step >= MIN_BLOCKED_GRID_STEP:
        return _shifted_patches(sink, x, geo, weight_shape, step)
    if pointwise:
        return every_nth(sink, x, list(range(2, 2 + spatial)), step)
    attrs: dict[str, object] = {
        "group": groups,
        "strides": [s * step for s in geo.strides],
        "dilations": list(geo.dilations),
        "kernel_shape": list(weight_shape[2:]),
    }
    if geo.auto_pad in ("NOTSET", ""):
        attrs["pads"] = list(geo.pads) if geo.pads else [0] * (2 * spatial)
    else:
        attrs["auto_pad"] = geo.auto_pad
    kernel = sink.const(patch_kernel(weight_shape, groups), dtype=np.float32)
    return sink.op("Conv", x, kernel, hint="patches", **attrs)


def _own_im2col(geo: ConvGeometry, weight_shape: tuple[int, ...]) -> bool:
    """Whether the conv's input is its own im2col: a 1x1 kernel with unit strides and no
    padding (its patches need no extraction; on a grid, only subsampling)."""
    return (
        all(k == 1 for k in weight_shape[2:])
        and all(s == 1 for s in geo.strides)
        and not any(geo.pads)
        and geo.auto_pad in ("NOTSET", "", "VALID")
    )


def _gathers_patches(
    geo: ConvGeometry, weight_shape: tuple[int, ...], step: int, opset: int
) -> bool:
    """Whether ``_gathered_patches`` makes this layer's patches instead of ``_patches``'
    one-hot Conv: for a conv whose groups read more than one channel, with a kernel wider
    than one position (or strides, or pads), on a grid finer than ``MIN_BLOCKED_GRID_STEP``.
    The one-hot Conv spends K = K' x Cg multiply-adds on every patch value it copies, the
    Gather none: on a ResNet-18 (``benchmarks/build_resnet.py``: 3x3 convs up to 512
    channels, K up to 4608; 32 images) the calibration phase went 7.3-8.0 -> 2.4-2.8 s. A
    depthwise conv's one-hot Conv spends K' (9 or 25) per value and was as fast as the
    Gather (EfficientNet-Lite0: 1.67-1.77 s against 1.71-1.85 s), so it keeps it. Pads that
    depend on the input size (SAME_*) and opsets before Range (11) keep the Conv too."""
    return (
        weight_shape[1] > 1
        and not _own_im2col(geo, weight_shape)
        and step < MIN_BLOCKED_GRID_STEP
        and geo.auto_pad in ("NOTSET", "", "VALID")
        and opset >= 11
    )


def _gathered_patches(
    sink: NodeSink, x: str, geo: ConvGeometry, weight_shape: tuple[int, ...], step: int
) -> str:
    """The layer input's patch values [N, C, K', P] (K' kernel positions row-major, P output
    positions on the grid of every ``step``-th one) picked by one Gather from the zero-padded
    input flattened to [N, C, L] (L = prod of padded spatial sizes). The indices come from the
    input's run-time shape: padded size L_a along axis a gives the first positions
    0, S_a, 2 S_a, ... below L_a - D_a (k_a - 1) (S_a = stride x step, D_a = dilation), to
    which each kernel offset k D_a is added; they are combined row-major into flat indices.
    The values are the input's own, as the one-hot Conv's were (exact copies)."""
    kernel = tuple(weight_shape[2:])
    spatial = len(kernel)
    int64 = np.int64
    padded = x
    pads = list(geo.pads) if geo.pads and geo.auto_pad != "VALID" else [0] * (2 * spatial)
    if any(pads):
        full = [0, 0, *pads[:spatial], 0, 0, *pads[spatial:]]
        padded = sink.op("Pad", x, sink.const(full, dtype=int64), hint="padded")  # [N, C, *Lp]
    dims = sink.op("Shape", padded, hint="padded_shape")  # [2 + spatial]
    flat: str | None = None
    for axis, (size, stride, dilation) in enumerate(
        zip(kernel, geo.strides, geo.dilations, strict=True)
    ):
        length = sink.op("Gather", dims, sink.const(2 + axis, dtype=int64), axis=0)  # scalar
        span = sink.op("Sub", length, sink.const(dilation * (size - 1), dtype=int64))
        starts = sink.op(  # [O_a]
            "Range", sink.const(0, dtype=int64), span, sink.const(stride * step, dtype=int64)
        )
        offsets = sink.const((np.arange(size) * dilation).reshape(size, 1), dtype=int64)
        along = sink.op(  # [k_a, O_a]
            "Add", sink.op("Reshape", starts, sink.const([1, -1], dtype=int64)), offsets
        )
        # Placed at axes (a, spatial + a) of [k_0, ..., k_{s-1}, O_0, ..., O_{s-1}].
        placed = [1] * (2 * spatial)
        placed[axis], placed[spatial + axis] = size, -1
        along = sink.op("Reshape", along, sink.const(placed, dtype=int64))
        flat = along if flat is None else sink.op("Add", sink.op("Mul", flat, length), along)
    assert flat is not None
    positions = int(np.prod(kernel))
    indices = sink.op(  # [K', P]
        "Reshape", flat, sink.const([positions, -1], dtype=int64), hint="patch_indices"
    )
    values = sink.op("Reshape", padded, sink.const([0, 0, -1], dtype=int64))  # [N, C, L]
    return sink.op("Gather", values, indices, axis=2, hint="gathered")


def _gathered_by_group(
    sink: NodeSink, gathered: str, groups: int, weight_shape: tuple[int, ...]
) -> str:
    """``_gathered_patches``' [N, C, K', P] as [G, K, N*P], each group's columns ordered
    (kernel position, channel) as ``layers._conv_to_matrix`` orders them: one Transpose, like
    ``_by_group``'s."""
    channels_in_group = weight_shape[1]  # Cg
    positions = int(np.prod(weight_shape[2:]))  # K'
    int64 = np.int64
    split = sink.op(  # [N, G, Cg, K', P]
        "Reshape", gathered, sink.const([0, groups, channels_in_group, positions, -1], dtype=int64)
    )
    moved = sink.op("Transpose", split, perm=[1, 3, 2, 0, 4], hint="pg_t")  # [G, K', Cg, N, P]
    columns = positions * channels_in_group  # K
    return sink.op("Reshape", moved, sink.const([groups, columns, -1], dtype=int64), hint="pg")


def grid_by_conv(sink: NodeSink, x: str, channels: int, spatial: int, step: int) -> str:
    """Every ``step``-th element of ``x`` [N, C, *spatial] along the spatial axes, as a 1x1
    depthwise identity Conv with strides ``step``: unlike Slice, onnxruntime runs it in its
    blocked NCHWc layout, so ``x`` is not converted back to NCHW at full resolution first."""
    identity = sink.const(np.ones((channels, 1, *([1] * spatial)), dtype=np.float32))
    return sink.op("Conv", x, identity, group=channels, strides=[step] * spatial, hint="grid")


def _shifted_patches(
    sink: NodeSink, x: str, geo: ConvGeometry, weight_shape: tuple[int, ...], step: int
) -> str:
    """``_patches`` on a sparse grid as one depthwise Conv per kernel position (a one-hot
    [C, 1, *kernel] filter, multiplier 1), concatenated: [N, G*K, P]. onnxruntime runs such
    convs in its blocked NCHWc layout, so the tapped activation is never converted back to
    NCHW at full resolution (a [32, 48, 320, 320] tensor took 1.2 s to convert); only the
    small grids are. Columns come out ordered (kernel position, channel) as the layer's
    im2col wants, per group."""
    groups = geo.group
    channels_in_group = weight_shape[1]  # Cg
    channels = groups * channels_in_group  # C
    kernel = tuple(weight_shape[2:])
    positions = int(np.prod(kernel))
    spatial = len(kernel)
    attrs: dict[str, object] = {
        "group": channels,
        "strides": [s * step for s in geo.strides],
        "dilations": list(geo.dilations),
        "kernel_shape": list(kernel),
    }
    if geo.auto_pad in ("NOTSET", ""):
        attrs["pads"] = list(geo.pads) if geo.pads else [0] * (2 * spatial)
    else:
        attrs["auto_pad"] = geo.auto_pad
    shifted = []
    for position in range(positions):
        one_hot = np.zeros((channels, 1, positions), dtype=np.float32)
        one_hot[:, 0, position] = 1.0
        weights = sink.const(one_hot.reshape(channels, 1, *kernel), dtype=np.float32)
        shifted.append(sink.op("Conv", x, weights, hint="shifted", **attrs))  # [N, C, *out]
    # [N, K' * C, *out]
    stacked = shifted[0] if positions == 1 else sink.op("Concat", *shifted, axis=1, hint="stacked")
    if groups == 1:
        return stacked  # column p * C + c: already (kernel position, channel)
    # [N, K', G, Cg, P] -> [N, G, K', Cg, P]: each group's columns p * Cg + c
    split = sink.op(
        "Reshape",
        stacked,
        sink.const([0, positions, groups, channels_in_group, -1], dtype=np.int64),
        hint="by_position",
    )
    moved = sink.op("Transpose", split, perm=[0, 2, 1, 3, 4], hint="by_group")
    return sink.op(
        "Reshape",
        moved,
        sink.const([0, groups * positions * channels_in_group, -1], dtype=np.int64),
        hint="grouped_patches",
    )


def _gated_sums(
    sink: NodeSink, pg: str, g2: str, groups: int, rows: int, opset: int
) -> tuple[str, str, str]:
    """``sum(g2)`` [G, Rg] and the gated moments [G, K, Rg] of the patches ``pg`` [G, K, N*P]
    against the squared gate map ``g2`` [N, G*Rg, *out] (on the same position grid)."""
    g4 = sink.op(  # [N, G, Rg, P]
        "Reshape", g2, sink.const([0, groups, rows, -1], dtype=np.int64), hint="g4"
    )
    gg = _by_group(sink, g4, groups, rows, "gg")  # [G, Rg, N*P]
    g2_sum = reduce(sink, "ReduceSum", gg, [2], opset, "conv_g2_sum")  # [G, Rg]
    # Products as patches @ gates^T ([G, K, Rg]): the gate map is transposed, never the
    # (larger) patch tensor; the sums are swapped to [G, Rg, K] in numpy.
    gg_t = sink.op("Transpose", gg, perm=[0, 2, 1], hint="gg_t")  # [G, N*P, Rg]
    gx_sum = sink.op("MatMul", pg, gg_t, hint="conv_gx")
    pg_sq = sink.op("Mul", pg, pg, hint="pg_sq")
    gx_sq_sum = sink.op("MatMul", pg_sq, gg_t, hint="conv_gx_sq")
    return g2_sum, gx_sum, gx_sq_sum


def _by_group(sink: NodeSink, x4: str, groups: int, width: int, hint: str) -> str:
    """[N, G, W, P] -> [G, W, N*P]."""
    moved = sink.op("Transpose", x4, perm=[1, 2, 0, 3], hint=f"{hint}_t")  # [G, W, N, P]
    return sink.op("Reshape", moved, sink.const([groups, width, -1], dtype=np.int64), hint=hint)
