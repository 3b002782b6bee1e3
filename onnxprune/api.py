"""``prune()``: one model in, one pruned model out, with its report (and recipe).

The run is a chain of stages (``onnxprune.run``), each with a typed hand-off: request ->
calibration -> planning (evaluation judges the candidates) -> writing -> verification ->
report, then publishing. ``pipeline.Pruner`` does the heavy lifting inside them.
"""

from __future__ import annotations

import contextlib
import inspect
import tempfile
import time
from pathlib import Path
from typing import Any

import onnx

from .calibrate.sources import DataSource
from .config import PruneConfig
from .errors import UsageError
from .io import staging_dir
from .options import signature_parameters
from .progress import Progress
from .report import Report
from .run.calibration import calibrate, load
from .run.counts import count_weights, op_counts
from .run.evaluation import Judge
from .run.guards import unmatched_patterns
from .run.planning import plan
from .run.reporting import describe_plan, finish_report
from .run.request import prepare
from .run.timing import Timer
from .run.verification import verify
from .run.writing import copy_unpruned, publish_run, write
from .session import save_for_session

__all__ = ["count_weights", "op_counts", "prune", "unmatched_patterns"]


def prune(
    model: str | Path | onnx.ModelProto,
    calib: DataSource | None,
    *,
    config: PruneConfig | None = None,
    progress: bool = False,
    **options: Any,
) -> Report:
    """Prune ``model`` with statistics from ``calib`` and write the result to ``output``.

    Each keyword in ``options`` is the CLI option of the same name (``onnxprune --help``
    groups them; ``onnxprune.options`` declares them, with their defaults, and
    ``inspect.signature(prune)`` lists them). An unknown keyword or a value of the wrong kind
    is a :class:`onnxprune.UsageError`.

    Args:
        model: an ``.onnx`` path; a directory holding one (an Optimum export folder; several:
            name one with ``model_file``); or an ``onnx.ModelProto`` (then ``output`` is
            required).
        calib: calibration data: a path (``.npz``, a directory of ``.npz`` / ``<input>.npy``,
            ``test_data_set_*`` directories, ``sentences.txt`` / ``.jsonl`` with a tokenizer,
            a folder of images with ``preprocess``); a zero-argument callable returning an
            iterator of feed dicts (streamed once per pass); an iterable of feed dicts; or an
            object with ``get_next()`` such as onnxruntime's ``CalibrationDataReader``. May be
            None only with ``method="magnitude"`` and ``eval_data``.
        sparsity: share of prunable weights to remove in [0, 1), or ``"auto"`` with a gate
            (searched on calibration samples, reported on the held-out or ``eval_data`` ones).
        output: the pruned model (default ``<model>.pruned.onnx``); its recipe is written to
            ``<output>.recipe.json``.
        eval_data: evaluation data (same forms); default: a held-out part of ``calib``.
        min_cosine, min_top1, max_abs_error, max_accuracy_drop: fidelity gates.
        recipe: replay a saved recipe (its settings replace the pruning options; a warning
            names every option given that it overrides).
        tokenizer, max_length: text calibration: a ``tokenizer.json`` (default: beside the
            model) and the length sequences are truncated to.
        quantize, quant_format, per_channel, quant_calibration, quant_range, storage,
            output_format, embedding_bits, embedding_sparsity: turn
            the pruned model into the written artifact (``onnxprune.deploy``:
            ``quantize="int8"`` or ``"int8-dynamic"``, ``storage="sparse"``,
            ``output_format="ort"``); the fidelity check, the gates and the search then judge
            that file. A recipe records them and its replay writes the same artifact.
        preprocess: image calibration: a JSON spec (dict, JSON text or a file path), e.g.
            ``{"size": [224, 224], "resize": "shorter-side-crop", "mean": [...], "std": [...],
            "channels": "RGB", "layout": "NCHW", "dtype": "float32"}``.

        config: a ready :class:`PruneConfig` (its settings replace the pruning options).
        progress: show a progress bar on stderr.

    Returns:
        The :class:`Report` (``exit_code`` is 5 when a gate failed and no output was kept).

    Raises:
        onnxprune.OnnxPruneError: a subclass, with a one-line message, for bad input.
    """
    if isinstance(model, onnx.ModelProto):
        return _prune_proto(model, calib, config, progress, options)
    started = time.perf_counter()
    request = prepare(model, calib, config, options)  # checked options, data and paths
    timer = Timer(started)
    with contextlib.ExitStack() as stack:  # closes the pruners (big-model work directories)
        loaded = load(request, Progress(progress), stack, timer)
        if not loaded.pruner.layers:
            return copy_unpruned(request, loaded, timer)
        calibrated = calibrate(request, loaded, stack, timer)
        report = loaded.report
        judge = Judge.of(calibrated.pruner, request.settings.deploy, request.config)
        chosen = plan(request, calibrated, report, judge, timer)
        describe_plan(report, chosen, calibrated)
        with staging_dir(request.output_path) as staging:
            written = write(request, chosen, judge, staging, report, timer)
            verify(request, chosen, written, judge, report, timer)
            recipe = finish_report(request, chosen, calibrated, written, report, timer)
            return publish_run(request, written, report, recipe)


def _prune_proto(
    model: onnx.ModelProto,
    calib: DataSource | None,
    config: PruneConfig | None,
    progress: bool,
    options: dict[str, Any],
) -> Report:
    if options.get("output") is None:
        raise UsageError("prune(ModelProto) needs output= (there is no input path to name it)")
    with tempfile.TemporaryDirectory(prefix="onnxprune-") as proto_dir:
        # onnxruntime and the checker read models from files.
        path = save_for_session(model, Path(proto_dir) / "model.onnx")
        report = prune(path, calib, config=config, progress=progress, **options)
        report.model = "<onnx.ModelProto>"
        return report


def _prune_signature() -> inspect.Signature:
    """``prune(model, calib, *, config, progress, <every option>)``, for ``help(prune)`` and
    introspection (the options come in as ``**options``, checked by ``options.resolve``)."""
    own = [p for p in inspect.signature(prune).parameters.values() if p.name != "options"]
    declared = [p for p in signature_parameters() if p.name != "calib"]
    return inspect.signature(prune).replace(parameters=own + declared)


prune.__signature__ = _prune_signature()  # type: ignore[attr-defined]
