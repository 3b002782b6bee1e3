"""Run calibration batches through one augmented session and fold each batch at once."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ..graph import GraphView
from ..layers import Layer
from ..progress import Progress, as_progress
from ..session import make_session, run, save_for_session, session_in_memory
from .augment import build_plan
from .fold import LayerAccumulator, fold_batch
from .gates import NodeSink
from .sources import CalibrationSet
from .stats import LayerStats, StatsOnDisk

log = logging.getLogger(__name__)

# The conv outputs of one calibration batch take at most about this many bytes (float32): the
# calibration graph reads many activations again at its taps and runs without a memory arena,
# so a batch's activations are fresh pages every run, and touching them costs more than the
# per-batch overhead of smaller batches. Calibration passes (time, peak RSS of the process)
# with at most 1 GiB / 512 MiB / 256 MiB per batch:
# - a 62-layer detector at 640 px, 140 MB of conv outputs per sample (batches of 32: wanda
#   4.9 s, 4.4 GB): contrib 3.1-4.0 s, 0.70-0.81 GB / 2.8-2.9 s, 0.48 GB / 2.5 s, 0.37 GB;
#   wanda 3.1-3.5 s, 1.6 GB / 2.9-3.0 s, 0.92 GB / 3.1 s, 0.55 GB;
# - EfficientNet-Lite0, 26 MB per sample: contrib 4.1-4.4 s, 0.92-0.99 GB / 3.6-3.7 s,
#   0.78 GB / 3.5-4.2 s, 0.68-0.77 GB; wanda (512 / 256) 2.55 s, 1.2-1.3 GB / 2.45 s, 0.8-0.9 GB.
CALIBRATION_BATCH_BYTES = 256 << 20


def calibration_batch(batch_size: int, conv_bytes_per_sample: int) -> int:
    """The calibration batch: ``batch_size``, or fewer samples where a batch's conv outputs
    (``conv_bytes_per_sample`` each) would exceed CALIBRATION_BATCH_BYTES. Statistics are
    sums over samples, so the batch changes only their float rounding."""
    fitting = CALIBRATION_BATCH_BYTES // max(conv_bytes_per_sample, 1)
    return max(1, min(batch_size, fitting))


def collect_statistics(
    model: onnx.ModelProto,
    layers: list[Layer],
    dataset: CalibrationSet,
    selected: np.ndarray,
    batch_size: int,
    gated: bool,
    progress: bool | Progress,
    hessian: bool = False,
    sample_mask: str | None = None,
    session_dir: Path | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
    reference: onnx.ModelProto | None = None,
) -> dict[str, LayerStats]:
    """Statistics of every layer over the selected samples, keyed by weight name.

    ``session_dir``: where the augmented model is written for onnxruntime (a temporary
    directory by default); big-model mode passes the directory the model's external data is
    in, which is also where its tensors are read from. ``shapes``: run-time shapes already
    probed on the first batch (``probe_shapes``), which saves the padding probe a second run.
    ``reference``: the dense model, run in the same session on the same batches; with
    ``hessian``, each layer's input moments then also hold ``cross`` and ``ref_sum``.
    """
    masked: frozenset[str] = frozenset()
    shapes = dict(shapes or {})
    if sample_mask is not None:
        masked, probed = _tensors_shaped_like_mask(
            model, layers, dataset, selected, batch_size, sample_mask, session_dir, shapes
        )
        shapes.update(probed)
    conv_outputs = [
        n.output[0] for layer in layers if layer.op.stats_kind == "conv" for n in layer.nodes
    ]
    dense_inputs = [
        (layer, n.input[layer.op.data_input])
        for layer in layers
        if layer.op.stats_kind == "dense"
        for n in layer.nodes
    ]
    # Sizes only, on one sample. In big-model mode each probe loads the model once more, so
    # only the conv outputs (which the conv taps need anyway) are probed there.
    sized = conv_outputs + ([name for _, name in dense_inputs] if session_dir is None else [])
    missing = [name for name in dict.fromkeys(sized) if name not in shapes]
    if missing:
        shapes.update(probe_shapes(model, missing, dataset, selected, 1, session_dir))
    conv_positions = {name: math.prod(shapes[name][2:]) for name in conv_outputs if name in shapes}
    per_sample = _tapped_bytes_per_sample(conv_outputs, dense_inputs, shapes, gated)
    fitting = calibration_batch(batch_size, per_sample)
    if fitting < batch_size:
        log.info("calibration in batches of %d (tapped activations: %d MB per sample)",
                 fitting, per_sample >> 20)  # fmt: skip
        batch_size = fitting
    plan = build_plan(
        model, layers, gated, hessian, sample_mask, masked, session_dir, reference=reference,
        conv_positions=conv_positions,
    )  # fmt: skip
    accumulators = {layer.weight_name: LayerAccumulator() for layer in layers}
    with _session(plan.model, session_dir, "augmented") as session:
        total = int(selected.sum())
        with as_progress(progress).phase("calibrating", total, "sample") as advance:
            for batch in dataset.batches(selected, batch_size):
                values = run(session, plan.outputs, batch.feed, dataset.name)
                fetched = dict(zip(plan.outputs, values, strict=True))
                fold_batch(plan, layers, fetched, accumulators)
                advance(batch.count)
    stats = {}
    for layer in layers:
        acc = accumulators[layer.weight_name]
        assert acc.inputs is not None
        stats[layer.weight_name] = LayerStats(acc.inputs, acc.gated, plan.gates[layer.weight_name])
    return stats


def _tapped_bytes_per_sample(
    conv_outputs: list[str],
    dense_inputs: list[tuple[Layer, str]],
    shapes: dict[str, tuple[int, ...]],
    gated: bool,
) -> int:
    """Bytes of float32 activations one sample makes the calibration graph hold at its
    taps (axis 0 of every shape is the batch): each conv layer's output [C, H, W], and for a
    dense layer at each of its input's positions [..., K] the input and its square, plus with
    ``gated`` statistics the output's gate and its square (2K + 2 out values): MiniLM's 36
    layers at 72 tokens, 24 MB per sample by this count, measured 21.5 MB per sample of
    calibration-pass peak RSS (0.98 GB in batches of 16, 1.33 GB in batches of 32). An input
    an exporter flattened to [batch x positions, K] counts one position per sample: an
    undercount, which keeps the larger batch."""
    total = sum(4 * math.prod(shapes[n][1:]) for n in conv_outputs if n in shapes)
    for layer, name in dense_inputs:
        shape = shapes.get(name)
        if shape is None or len(shape) < 2:
            continue
        out, columns = layer.matrix_shape
        values = 2 * columns + (2 * out if gated else 0)
        total += 4 * math.prod(shape[1:-1]) * values
    return total


# Big-model mode: the statistics of one part of the layers take at most this many bytes
# (float64 sums); each part is one pass over the calibration data.
PART_BYTES = 1 << 30


def collect_statistics_in_parts(
    model: onnx.ModelProto,
    layers: list[Layer],
    dataset: CalibrationSet,
    selected: np.ndarray,
    batch_size: int,
    gated: bool,
    progress: bool | Progress,
    hessian: bool,
    sample_mask: str | None,
    workdir: Path,
) -> StatsOnDisk:
    """``collect_statistics`` for a model too big to hold every layer's statistics in memory:
    the layers are split into parts of at most ``PART_BYTES`` of statistics, each part is one
    pass over the data (its own augmented session), and each part's result goes to disk."""
    stored = StatsOnDisk(workdir / "stats")
    for part in _parts(layers, gated, hessian):
        found = collect_statistics(
            model, part, dataset, selected, batch_size, gated, progress, hessian, sample_mask,
            session_dir=workdir,
        )  # fmt: skip
        for name, layer_stats in found.items():
            stored.store(name, layer_stats)
        del found
    return stored


def _parts(layers: list[Layer], gated: bool, hessian: bool) -> list[list[Layer]]:
    parts: list[list[Layer]] = [[]]
    size = 0
    for layer in layers:
        rows, columns = layer.matrix_shape
        need = 8 * (2 * columns + (2 * rows * columns if gated else 0))
        need += 8 * columns * columns if hessian else 0
        if parts[-1] and size + need > PART_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(layer)
        size += need
    return parts


@contextlib.contextmanager
def _session(
    model: onnx.ModelProto, directory: Path | None, stem: str
) -> Iterator[ort.InferenceSession]:
    """A session over ``model``: in memory (nothing written), or in big-model mode from a
    file in ``directory`` (where its external tensors live), removed afterwards. ``model``
    is a throw-away (the augmented or probe copy): in memory, its weights are moved out of
    it rather than copied. Its large intermediates live for one pass: no memory arena."""
    if directory is None:
        yield session_in_memory(model, consume=True, arena=False)
        return
    handle, name = tempfile.mkstemp(prefix=f"{stem}-", suffix=".onnx", dir=directory)
    os.close(handle)  # only the name is wanted: the model is written to it by path
    path = Path(name)
    try:
        yield make_session(save_for_session(model, path), arena=False)
    finally:
        path.unlink(missing_ok=True)


def _tensors_shaped_like_mask(
    model: onnx.ModelProto,
    layers: list[Layer],
    dataset: CalibrationSet,
    selected: np.ndarray,
    batch_size: int,
    mask_name: str,
    session_dir: Path | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> tuple[frozenset[str], dict[str, tuple[int, ...]]]:
    """Layer inputs that are [batch, seq, K] with the mask's [batch, seq], seen on one real
    batch, and the shapes of the dense layers' inputs seen there (batch first).

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
    if not names:
        return frozenset(), {}
    known = shapes is not None and all(n in shapes for n in [mask_name, *names])
    if not known:
        # Shapes only: a batch of 2 samples (3 when sequences are 2 long, so that batch and
        # sequence stay apart) costs far less than a full one.
        for count in (2, 3):
            probe = np.zeros_like(selected)
            probe[np.flatnonzero(selected)[:count]] = True
            batch = next(iter(dataset.batches(probe, count)))
            mask_shape = tuple(batch.feed[mask_name].shape)
            if mask_shape[0] != mask_shape[-1]:
                break
        selected, batch_size = probe, count
    else:
        assert shapes is not None
        mask_shape = shapes[mask_name]
    if len(mask_shape) != 2 or mask_shape[0] == mask_shape[1]:
        return frozenset(), {}  # a square batch could not tell batch from sequence
    if not known:
        shapes = probe_shapes(model, names, dataset, selected, batch_size, session_dir)
    assert shapes is not None
    masked = frozenset(
        name for name in names if len(shapes[name]) == 3 and shapes[name][:2] == mask_shape
    )
    return masked, {name: shapes[name] for name in names}


def probe_shapes(
    model: onnx.ModelProto,
    names: list[str],
    dataset: CalibrationSet,
    selected: np.ndarray,
    batch_size: int,
    session_dir: Path | None = None,
) -> dict[str, tuple[int, ...]]:
    """Run-time shapes of the named tensors on the first calibration batch (one Shape node
    per tensor, so only [rank] integers come back)."""
    if not names:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    sink = NodeSink(GraphView(probe, session_dir), "onnxprune_probe")
    outputs = [sink.op("Shape", name, hint="shape") for name in names]  # [rank] int64 each
    probe.graph.node.extend(sink.nodes)
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(s, onnx.TensorProto.INT64, None) for s in outputs
    )
    batch = next(iter(dataset.batches(selected, batch_size)))
    with _session(probe, session_dir, "probe") as session:
        values = run(session, outputs, batch.feed, dataset.name)
    return {name: tuple(int(d) for d in value) for name, value in zip(names, values, strict=True)}
