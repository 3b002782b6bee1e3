"""The deployable artifact: after pruning (and shrinking), optionally quantize to int8 and store
the remaining zeros sparsely, then check what will be written.

Stages, each a file in the staging directory, each compared with the original model:

1. ``pruned``: the fp32 (or fp16) pruned model, as ``prune()`` always wrote it;
2. ``int8`` (``--quantize int8``): onnxruntime's static quantizer (``quantize_static``) on
   that file, calibrated with the run's own calibration samples through a streaming
   ``CalibrationDataReader``; weights are symmetric int8 (per output channel by default), so a
   pruned weight (exactly 0.0) quantizes to exactly 0 and stays 0 after DequantizeLinear;
   or (``--quantize int8-dynamic``) onnxruntime's ``quantize_dynamic``: the same weights,
   activations quantized per batch at run time;
3. ``sparse`` (``--storage sparse``): every initializer that is smaller as a COO
   ``sparse_initializer`` (values + int64 indices) than dense is rewritten so; onnxruntime
   densifies it again at load, so the outputs must equal the dense-stored file's exactly;
4. ``ort`` (``--format ort``): onnxruntime's mobile format, written by onnxruntime's own
   converter (``onnxruntime.tools.convert_onnx_models_to_ort``, fixed optimisations, no
   platform-specific layout); sparse initializers stay sparse in it. Compared with the
   original like every other stage (the converter's graph optimisations may move the last bits).

The last stage is the artifact; the fidelity check, the gates and ``--sparsity auto`` judge it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .calibrate.sources import CalibrationSet
from .compact import compact
from .embeddings import EMBEDDING_BITS, int4_tables, prune_tables
from .errors import ModelError, UsageError
from .io import gzip_size_bytes, model_size_bytes
from .options import DEPLOY, check_fields, default
from .session import make_session, run, save_for_session
from .verify import Fidelity, ReferenceRun

log = logging.getLogger(__name__)


# onnxruntime's histogram calibrators (entropy, percentile) keep every calibrated activation of
# every sample in memory until the end of the pass (ECOSYSTEM.md): they see at most this many.
HISTOGRAM_MAX_SAMPLES = 128
# A sparse tensor's fixed cost beyond values and indices (two TensorProto headers, dims).
_SPARSE_OVERHEAD_BYTES = 32
# ONNX requires int64 COO indices: 8 bytes per stored value.
_INDEX_BYTES = 8
# Quantized ops: a model holding any of them is already quantized.
_QUANTIZED_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "MatMulInteger",
    "ConvInteger",
}


@dataclass(frozen=True)
class DeployConfig:
    """What happens to the pruned model before it is written. Mirrors the CLI options."""

    quantize: str = default("quantize")
    # None: the default of the static quantizer (qdq, minmax); refused with int8-dynamic,
    # which has neither (QOperator ops, activation ranges measured at run time).
    quant_format: str | None = default("quant_format")
    per_channel: bool = default("per_channel")
    quant_calibration: str | None = default("quant_calibration")
    storage: str = default("storage")
    # --quant-range: int8 weights in [-63, 63] ("reduced", 7 bits) or [-127, 127] ("full").
    # None: reduced for --quantize int8, full for int8-dynamic (``weight_range``).
    quant_range: str | None = default("quant_range")
    # --format: "onnx", or "ort" (onnxruntime's mobile format, the written file's format).
    output_format: str = default("output_format")
    # --embedding-bits: with --quantize, 8 (onnxruntime's int8 Gather, one scale per table) or
    # 4 (int4 GatherBlockQuantized, blocks of 32); None: 8. See embeddings.py.
    embedding_bits: int | None = default("embedding_bits")
    # --embedding-sparsity: the fraction of each embedding row zeroed (0: tables untouched).
    embedding_sparsity: float = default("embedding_sparsity")

    def __post_init__(self) -> None:
        check_fields(self, DEPLOY)  # kinds, choices and ranges (``onnxprune.options``)
        if self.embedding_bits is not None and self.embedding_bits not in EMBEDDING_BITS:
            raise UsageError(f"--embedding-bits must be 8 or 4, got {self.embedding_bits!r}")
        if self.embedding_bits == 4 and self.output_format == "ort":
            raise UsageError(
                "--embedding-bits 4 cannot be written with --format ort: onnxruntime's .ort "
                "format has no int4 tensors (use --format onnx)"
            )
        if self.quantize == "none":
            for option, used in (
                ("--embedding-bits", self.embedding_bits is not None),
                ("--quant-format", self.quant_format is not None),
                ("--quant-calibration", self.quant_calibration is not None),
                ("--quant-range", self.quant_range is not None),
                ("--per-tensor", not self.per_channel),
            ):
                if used:
                    raise UsageError(f"{option} needs --quantize int8 or int8-dynamic")
        if self.quantize == "int8-dynamic":
            for option, value in (
                ("--quant-format", self.quant_format),
                ("--quant-calibration", self.quant_calibration),
            ):
                if value is not None:
                    raise UsageError(
                        f"{option} applies to --quantize int8 (static); int8-dynamic measures "
                        "activation ranges at run time"
                    )

    @property
    def format(self) -> str:
        return self.quant_format or "qdq"

    @property
    def calibration(self) -> str:
        return self.quant_calibration or "minmax"

    @property
    def reduce_range(self) -> bool:
        """7-bit weights. onnxruntime's x86 int8 kernels without VNNI (AVX2) multiply u8
        activations by s8 weights in pairs summed into int16 (vpmaddubsw), which saturates
        when both use the full range; measured on the digits CNN pruned 0.8 with per-channel
        QDQ on an AVX2 CPU: accuracy 0.9800 fused vs 0.9933 for the same file with the fusions
        off, 0.9933 fused with reduced range (BENCHMARKS.md). Static int8 defaults to reduced;
        int8-dynamic keeps full (MiniLM measured within target with it)."""
        if self.quant_range is not None:
            return self.quant_range == "reduced"
        return self.quantize == "int8"

    @property
    def changes_weights(self) -> bool:
        """Whether the artifact's weights (and so its outputs) differ from the pruned model's:
        sparse storage and the .ort format keep them exactly."""
        return self.quantize != "none" or self.embedding_sparsity > 0

    @property
    def active(self) -> bool:
        return self.changes_weights or self.storage != "dense" or self.output_format != "onnx"

    def arguments(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: object) -> DeployConfig:
        """The options a recipe recorded (``arguments()``), checked like the command line's;
        a key missing from the record (an option added since) takes its default."""
        if not isinstance(record, dict):
            raise UsageError(f"'deploy' must map artifact options to values, got {record!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise UsageError(f"'deploy': unknown option(s) {', '.join(map(repr, unknown))}")
        return cls(**record)


@dataclass
class ArtifactStage:
    """One stage of the artifact: its size and its fidelity against the original model."""

    name: str
    file_size: int
    gzip_size: int | None
    fidelity: Fidelity | None = None
    # Sparse storage: how many initializers were stored as sparse_initializer.
    sparse_tensors: int | None = None


def refuse_impossible(
    deploy: DeployConfig, model: onnx.ModelProto, external_data: bool, big: bool, output: Path
) -> None:
    """Combinations that cannot work, refused in one line before anything runs."""
    if deploy.quantize != "none":
        if big:
            raise UsageError("--quantize is not supported on models over 1.5 GB yet")
        quantized = sorted({n.op_type for n in model.graph.node} & _QUANTIZED_OPS)
        if quantized:
            raise UsageError(
                f"--quantize: the model is already quantized ({', '.join(quantized)}); prune "
                "its float version and quantize that"
            )
    if deploy.embedding_sparsity > 0 and big:
        raise UsageError("--embedding-sparsity is not supported on models over 1.5 GB yet")
    if deploy.output_format == "ort":
        if big or external_data:
            raise UsageError(
                "--format ort cannot hold external data (the .ort file is one flatbuffer under "
                "2 GB); use --format onnx"
            )
        if not output.name.lower().endswith(".ort"):
            raise UsageError(
                f"--format ort writes onnxruntime's .ort format: name the output NAME.ort "
                f"(-o {output.with_suffix('.ort').name}), not {output.name}"
            )
        if importlib.util.find_spec("onnxruntime.tools.convert_onnx_models_to_ort") is None:
            raise UsageError(
                "--format ort needs onnxruntime's converter (onnxruntime.tools), which this "
                "onnxruntime build does not ship"
            )
    if deploy.storage == "sparse":
        if big or external_data:
            raise UsageError(
                "--storage sparse cannot be combined with external data: sparse initializers "
                "must stay inside the 2 GB protobuf (use --storage dense)"
            )
        if model.graph.sparse_initializer:
            raise UsageError(
                "--storage sparse: the model already has sparse initializers; onnxprune "
                "prunes dense weights (densify it first)"
            )


class _StreamingReader:
    """onnxruntime's ``CalibrationDataReader`` protocol over the run's calibration samples:
    one batch in memory at a time, rewound by starting a new pass."""

    def __init__(self, dataset: CalibrationSet, selected: np.ndarray, batch_size: int) -> None:
        self.dataset = dataset
        self.selected = selected
        self.batch_size = batch_size
        self._batches: Iterator[dict[str, np.ndarray]] | None = None

    def _start(self) -> Iterator[dict[str, np.ndarray]]:
        return (b.feed for b in self.dataset.batches(self.selected, self.batch_size))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._batches is None:
            self._batches = self._start()
        return next(self._batches, None)

    def rewind(self) -> None:
        self._batches = None


def quantize_int8(
    source: Path,
    destination: Path,
    deploy: DeployConfig,
    dataset: CalibrationSet,
    selected: np.ndarray,
    batch_size: int,
    skip_gather: bool = False,
) -> list[str]:
    """Static int8 quantization of ``source`` into ``destination``; returns notes for the report.
    ``skip_gather``: Gather nodes stay float (their tables are stored in int4 afterwards).

    As onnxruntime recommends, the model is pre-processed first (``quant_pre_process``: symbolic
    shape inference and graph optimisation); when that fails on this graph the quantizer runs on
    the model as it is and a note says so.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    notes: list[str] = []
    selected = np.asarray(selected, dtype=bool)
    if deploy.calibration != "minmax" and int(selected.sum()) > HISTOGRAM_MAX_SAMPLES:
        # Only the first samples: the histogram calibrators hold every activation in memory.
        kept = np.flatnonzero(selected)[:HISTOGRAM_MAX_SAMPLES]
        selected = np.zeros_like(selected)
        selected[kept] = True
        notes.append(
            f"--quant-calibration {deploy.calibration}: calibrated on the first "
            f"{HISTOGRAM_MAX_SAMPLES} samples (onnxruntime's histogram calibrator keeps every "
            "activation in memory)"
        )

    if deploy.calibration != "minmax":
        # onnxruntime's histogram collector stacks the batches of each tensor into one array
        # (np.asarray over the list) and fails on a last batch of another size: one sample per
        # batch makes every batch the same shape.
        batch_size = 1

    class Reader(_StreamingReader, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory(prefix="onnxprune-quant-") as tmp:
        prepared = _pre_process(source, Path(tmp) / "prepared.onnx", notes)
        method = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[deploy.calibration]
        try:
            quantize_static(
                str(prepared),
                str(destination),
                Reader(dataset, selected, batch_size),
                quant_format=QuantFormat.QDQ if deploy.format == "qdq" else QuantFormat.QOperator,
                per_channel=deploy.per_channel,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=method,
                reduce_range=deploy.reduce_range,
                # onnxruntime's default op list (both registries), without Gather if asked.
                op_types_to_quantize=_op_types({*QLinearOpsRegistry, *QDQRegistry}, skip_gather),
                # Symmetric weights: 0.0 maps to the integer 0 (zero point 0) and back to 0.0.
                extra_options={"WeightSymmetric": True},
            )
        except Exception as err:  # onnxruntime's quantizer raises plain exceptions
            log.debug("quantize_static failed", exc_info=True)
            raise ModelError(f"int8 quantization failed: {_first_line(err)}") from err
    return notes


def _op_types(registry: set[str], skip_gather: bool) -> list[str]:
    return sorted(registry - {"Gather"} if skip_gather else registry)


def quantize_int8_dynamic(
    source: Path, destination: Path, deploy: DeployConfig, skip_gather: bool = False
) -> list[str]:
    """Dynamic int8 quantization (onnxruntime ``quantize_dynamic``): symmetric int8 weights
    (per output channel by default), activations quantized per batch at run time
    (DynamicQuantizeLinear + MatMulInteger / ConvInteger). No calibration; onnxruntime's advice
    for transformers, whose activations have outlier channels a static range clips."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="onnxprune-quant-") as tmp:
        prepared = _pre_process(source, Path(tmp) / "prepared.onnx", notes)
        try:
            quantize_dynamic(
                str(prepared),
                str(destination),
                per_channel=deploy.per_channel,
                reduce_range=deploy.reduce_range,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=_op_types(set(IntegerOpsRegistry), skip_gather),
                extra_options={"WeightSymmetric": True},
            )
        except Exception as err:  # onnxruntime's quantizer raises plain exceptions
            log.debug("quantize_dynamic failed", exc_info=True)
            raise ModelError(f"int8 quantization failed: {_first_line(err)}") from err
    return notes


def _pre_process(source: Path, destination: Path, notes: list[str]) -> Path:
    """onnxruntime's recommended pre-processing (``quant_pre_process``: symbolic shape
    inference, ONNX shape inference, graph optimisation). Symbolic shape inference gives up on
    some exporters' graphs (MiniLM's attention mask arithmetic): then without it, and when
    even that fails, the quantizer runs on the model as it is. Each fallback is noted."""
    from onnxruntime.quantization import quant_pre_process

    first_error: BaseException | None = None
    source, destination = source.resolve(), destination.resolve()
    for skip_symbolic in (False, True):
        try:
            # When symbolic shape inference gives up, onnxruntime saves its partial model
            # ("sym_shape_infer_temp.onnx" and a data file) into the working directory: keep
            # that out of the user's directory.
            with (
                tempfile.TemporaryDirectory(prefix="onnxprune-shapes-") as scratch,
                contextlib.chdir(scratch),
            ):
                quant_pre_process(str(source), str(destination), skip_symbolic_shape=skip_symbolic)
        except Exception as err:  # any failure of the optional pre-processing step
            log.debug("quant_pre_process failed", exc_info=True)
            first_error = first_error or err
            continue
        if skip_symbolic:
            notes.append(
                "quantization pre-processing without symbolic shape inference (it failed: "
                f"{_first_line(first_error or RuntimeError())})"
            )
        return destination
    notes.append(
        "quantization pre-processing failed, quantized without it: "
        f"{_first_line(first_error or RuntimeError())}"
    )
    return source


def sparse_storage(source: Path, destination: Path) -> int:
    """Rewrite every initializer that is smaller in COO form (values + int64 linear indices)
    as a ``sparse_initializer``; returns how many were rewritten. Graph inputs that double as
    initializers (old exporters) stay dense: a sparse initializer cannot be overridden."""
    model = onnx.load(str(source))
    graph_inputs = {i.name for i in model.graph.input}
    dense: list[onnx.TensorProto] = []
    sparse: list[onnx.SparseTensorProto] = []
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor)
        # INT4 tables (--embedding-bits 4) are packed two per byte: already smaller than COO.
        if (
            tensor.name in graph_inputs
            or array.ndim == 0
            or array.dtype == np.object_
            or tensor.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4)
        ):
            dense.append(tensor)
            continue
        flat = array.reshape(-1)
        nonzero = np.flatnonzero(flat)
        sparse_bytes = nonzero.size * (array.itemsize + _INDEX_BYTES) + _SPARSE_OVERHEAD_BYTES
        if sparse_bytes >= array.nbytes:
            dense.append(tensor)
            continue
        values = numpy_helper.from_array(flat[nonzero], tensor.name)
        indices = numpy_helper.from_array(nonzero.astype(np.int64))
        sparse.append(onnx.helper.make_sparse_tensor(values, indices, list(array.shape)))
    del model.graph.initializer[:]
    model.graph.initializer.extend(dense)
    model.graph.sparse_initializer.extend(sparse)
    onnx.save_model(model, str(destination))
    return len(sparse)


def convert_to_ort(source: Path, destination: Path) -> None:
    """onnxruntime's mobile format, written by onnxruntime's own converter
    (``convert_onnx_models_to_ort``, optimisation style "Fixed": the graph optimised once at
    the "all" level, without the platform-specific NCHWc layout, saved as a flatbuffer). The
    converter prints its progress and writes a ``required_operators.config`` beside the model:
    both stay in a scratch directory / the debug log."""
    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    chatter = io.StringIO()
    # The converter's own logger says where it wrote the operator config (INFO, on stderr).
    converter_log = logging.getLogger("ort_format_model.utils")
    level = converter_log.level
    with tempfile.TemporaryDirectory(prefix="onnxprune-ort-") as tmp:
        model = Path(tmp) / "model.onnx"
        shutil.copyfile(source, model)  # the converter names its output after its input
        try:
            converter_log.setLevel(logging.WARNING)
            # The converter reads the .ort file back without closing it (a ResourceWarning when
            # the file object is collected): that is onnxruntime's, not the user's concern.
            with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                convert_onnx_models_to_ort(model, Path(tmp) / "out", [OptimizationStyle.Fixed])
        except Exception as err:  # the converter raises whatever onnxruntime raised
            log.debug("ORT format conversion failed: %s", chatter.getvalue(), exc_info=True)
            raise ModelError(f"--format ort: conversion failed: {_first_line(err)}") from err
        finally:
            converter_log.setLevel(level)
        log.debug("%s", chatter.getvalue())
        converted = Path(tmp) / "out" / "model.ort"
        if not converted.is_file():
            raise ModelError("--format ort: onnxruntime's converter wrote no .ort file")
        shutil.move(converted, destination)


def first_difference(before: Path, after: Path, reference: ReferenceRun) -> str | None:
    """The first output whose values differ (bit for bit) between the two files in
    onnxruntime on the samples the fidelity check uses, or None when all are identical."""
    a, b = make_session(before), make_session(after)
    names = [o.name for o in a.get_outputs()]
    data = reference.dataset
    for batch in data.batches(reference.selected, reference.batch_size):
        expected = run(a, names, batch.feed, data.name)
        got = run(b, names, batch.feed, data.name)
        for name, x, y in zip(names, expected, got, strict=True):
            if not np.array_equal(x, y):
                return name
    return None


def check_identical(dense: Path, sparse: Path, reference: ReferenceRun) -> None:
    """The sparse-stored file must load in onnxruntime and give exactly the dense-stored
    file's outputs (the same weights once onnxruntime densifies them at load), on the samples
    the fidelity check uses."""
    name = first_difference(dense, sparse, reference)
    if name is not None:
        raise ModelError(
            f"--storage sparse: output {name!r} of the sparse-stored model differs from "
            "the dense-stored one (use --storage dense)"
        )


def compact_file(source: Path, destination: Path, keep: Path, reference: ReferenceRun) -> Path:
    """``source`` (a quantized file) without the quantizer's waste (``compact.compact``; tensor
    names that ``keep``, the model before quantization, has stay), when onnxruntime gives it
    bit-identical outputs on the fidelity samples; otherwise ``source`` itself, logged."""
    original = onnx.load(str(keep), load_external_data=False)
    names = {n for node in original.graph.node for n in [*node.input, *node.output]}
    names |= {t.name for t in original.graph.initializer}
    del original
    onnx.save_model(compact(onnx.load(str(source)), names), str(destination))
    different = first_difference(source, destination, reference)
    if different is not None:
        log.info("compaction changed output %r: the quantizer's file is kept as written", different)
        return source
    log.debug("compaction: %d -> %d bytes", model_size_bytes(source), model_size_bytes(destination))
    return destination


def _stage(name: str, path: Path, fidelity: Fidelity | None) -> ArtifactStage:
    return ArtifactStage(name, model_size_bytes(path), gzip_size_bytes(path), fidelity)


@dataclass
class Finisher:
    """Turns a written pruned model into the artifact (see the module docstring)."""

    deploy: DeployConfig
    # The run's calibration samples (what the pruning was calibrated on), for the quantizer.
    dataset: CalibrationSet
    calib_mask: np.ndarray
    batch_size: int
    # Set by ``stages``: the last ONNX file (the artifact itself unless --format ort).
    last_onnx: Path | None = None

    def _prune_embeddings(self, pruned: Path, work: Path) -> tuple[Path, list[str]]:
        """--embedding-sparsity: ``pruned`` with its embedding rows pruned (a new file)."""
        if not self.deploy.embedding_sparsity:
            return pruned, []
        model = onnx.load(str(pruned))
        if not prune_tables(model, self.deploy.embedding_sparsity):
            return pruned, [
                "--embedding-sparsity: the model has no embedding table (Gather on a "
                "float initializer); nothing pruned"
            ]
        destination = work / "embeddings.onnx"
        onnx.save_model(model, str(destination))
        return destination, []

    def _quantize(self, pruned: Path, work: Path) -> tuple[Path, list[str]]:
        if self.deploy.quantize == "none":
            return pruned, []
        int4 = self.deploy.embedding_bits == 4
        quantized = work / "int8.onnx"
        if self.deploy.quantize == "int8-dynamic":
            notes = quantize_int8_dynamic(pruned, quantized, self.deploy, skip_gather=int4)
        else:
            notes = quantize_int8(
                pruned, quantized, self.deploy, self.dataset, self.calib_mask, self.batch_size,
                skip_gather=int4,
            )  # fmt: skip
        if int4:
            # After int8 (which left every Gather float): the int8 quantizers' shape inference
            # does not know GatherBlockQuantized (com.microsoft) and would lose the types after it.
            model = onnx.load(str(quantized))
            if int4_tables(model):
                onnx.save_model(model, str(quantized))
            else:
                notes.append(
                    "--embedding-bits 4: the model has no embedding table whose width is a "
                    "multiple of 32; nothing stored in int4"
                )
        return quantized, notes

    def stages(
        self, pruned: Path, reference: ReferenceRun, work: Path, pruned_fidelity: Fidelity
    ) -> tuple[Path, list[ArtifactStage], list[str]]:
        """Every stage from ``pruned`` on (files in ``work``), sized and compared with the
        original; the last is the artifact. Returns its path, the stages and report notes."""
        stages = [_stage("pruned", pruned, pruned_fidelity)]
        source, notes = self._prune_embeddings(pruned, work)
        if source != pruned:
            name = f"pruned + embeddings {self.deploy.embedding_sparsity:g}"
            stages.append(_stage(name, source, reference.compare(source)))
        current, quantize_notes = self._quantize(source, work)
        notes += quantize_notes
        if current != source:
            # The quantizer's generated names, node names and unused opset imports go
            # (bit-identical outputs checked): 2.4 KB of the digits CNN's 48 KB.
            current = compact_file(current, work / "compact.onnx", source, reference)
            name = f"{stages[-1].name} + {self.deploy.quantize}"
            if self.deploy.embedding_bits == 4:
                name += " (int4 embeddings)"
            stages.append(_stage(name, current, reference.compare(current)))
        if self.deploy.storage == "sparse":
            stored = work / "sparse.onnx"
            count = sparse_storage(current, stored)
            check_identical(current, stored, reference)
            # Identical outputs (checked above): the fidelity is the dense-stored stage's.
            sparse = _stage(stages[-1].name + " + sparse storage", stored, stages[-1].fidelity)
            sparse.sparse_tensors = count
            stages.append(sparse)
            current = stored
        # The op table describes this file (the .ort flatbuffer is not an ONNX protobuf).
        self.last_onnx = current
        if self.deploy.output_format == "ort":
            converted = work / "model.ort"
            convert_to_ort(current, converted)
            name = stages[-1].name + " as .ort"
            stages.append(_stage(name, converted, reference.compare(converted)))
            current = converted
        return current, stages, notes

    def artifact_fidelity(self, model: onnx.ModelProto, reference: ReferenceRun) -> Fidelity:
        """The artifact's fidelity for a pruned candidate (what searches and sweeps judge).
        Sparse storage is left out: its outputs equal the dense-stored file's (checked on the
        artifact that is written); so is the .ort conversion (the same graph, optimised: its
        fidelity is measured on the written file, which the gates judge)."""
        with tempfile.TemporaryDirectory(prefix="onnxprune-artifact-") as tmp:
            pruned = save_for_session(model, Path(tmp) / "pruned.onnx")
            source, _ = self._prune_embeddings(pruned, Path(tmp))
            artifact, _ = self._quantize(source, Path(tmp))
            return reference.compare(artifact)


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]
