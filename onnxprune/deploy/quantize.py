"""int8 quantization with onnxruntime's quantizers, static (calibrated on the run's own
samples) or dynamic."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..calibrate.sources import CalibrationSet
from ..errors import ModelError
from ..io import first_line as _first_line
from ..session import tool_sessions_quiet
from .config import DeployConfig

# One logger for the whole artifact stage, named as before the split.
log = logging.getLogger(__package__)


# onnxruntime's histogram calibrators (entropy, percentile) keep every calibrated activation of
# every sample in memory until the end of the pass (ECOSYSTEM.md): they see at most this many.
HISTOGRAM_MAX_SAMPLES = 128


@contextlib.contextmanager
def _quantizer_warnings(notes: list[str]) -> Iterator[None]:
    """onnxruntime's quantizer warns through ``logging`` on its own loggers or the root one
    (``logging.warning``, which also gives the root logger a printing handler when it has
    none): within the block, those warnings are kept out of stderr and end as one note, the
    first with how many more there were (per-channel quantization reaching a LayerNorm weight
    warned 5 times on a ViT). onnxprune's own records pass as before. The sessions the
    quantizer builds log only errors meanwhile (``tool_sessions_quiet``)."""
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if not record.name.startswith("onnxprune"):
                records.append(record.getMessage())

    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [Collect(logging.WARNING)]
    try:
        with tool_sessions_quiet():
            yield
    finally:
        root.handlers = saved
        if records:
            more = f" (and {len(records) - 1} more warnings)" if len(records) > 1 else ""
            notes.append(f"onnxruntime's quantizer warned: {records[0]}{more}")


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
    selected, batch_size = _calibration_samples(deploy, selected, batch_size, notes)

    class Reader(_StreamingReader, CalibrationDataReader):
        pass

    with (
        tempfile.TemporaryDirectory(prefix="onnxprune-quant-") as tmp,
        _quantizer_warnings(notes),
    ):
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


def _calibration_samples(
    deploy: DeployConfig, selected: np.ndarray, batch_size: int, notes: list[str]
) -> tuple[np.ndarray, int]:
    """The samples [N] bool and batch size the static quantizer calibrates on; a note when
    the histogram calibrators see fewer samples than the run selected."""
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
    return selected, batch_size


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
    with (
        tempfile.TemporaryDirectory(prefix="onnxprune-quant-") as tmp,
        _quantizer_warnings(notes),
    ):
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
