"""Section 1, the quality grid of the digits models and MiniLM: one ``onnxprune.prune`` call
per configuration and sparsity, scored by the tool and by this suite's ``Evaluator``."""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import onnxprune
from onnxprune.report import Report

from .machine import load1
from .models import BATCH_SIZE, Evaluator, ModelFiles
from .records import (
    AccuracyScore,
    DenseReference,
    EmbeddingScore,
    Failure,
    GridConfig,
    GridRow,
    PruneOutcome,
    QualityBlock,
)


def outcome_of(report: Report, prune_wall: float) -> PruneOutcome:
    fidelity = report.fidelity
    return PruneOutcome(
        prune_wall=prune_wall,
        effective_group=report.group,
        variant=getattr(report, "variant", None),
        group_trials=dict(getattr(report, "group_trials", None) or {}),
        achieved_sparsity=report.achieved_sparsity,
        calibration_samples=report.calibration_samples,
        sensitivity_builds=report.sensitivity_builds,
        timings=dict(report.timings),
        warnings=tuple(report.warnings),
        tool_cosine=fidelity.outputs[0].cosine if fidelity else None,
        tool_accuracy_pruned=fidelity.accuracy_pruned if fidelity else None,
        tool_accuracy_original=fidelity.accuracy_original if fidelity else None,
        fidelity_samples=fidelity.samples if fidelity else None,
    )


def _score(measured: dict[str, float]) -> tuple[AccuracyScore | EmbeddingScore, float]:
    """The score record and the cell's shown value."""
    if "accuracy" in measured:
        return AccuracyScore(measured["accuracy"]), measured["accuracy"]
    score = EmbeddingScore(measured["cosine_mean"], measured["cosine_min"])
    return score, score.cosine_mean


def measure_cell(
    files: ModelFiles,
    evaluator: Evaluator,
    config: GridConfig,
    sparsity: float,
    num_samples: int | None,
    output: Path,
) -> GridRow:
    """Prune once and score the written model; an exception becomes the row's failure."""
    row = GridRow(
        model=files.name, **vars(config), sparsity=sparsity, num_samples=num_samples,
        load1=load1(),
    )  # fmt: skip
    arguments = dict(
        sparsity=sparsity, output=output, method=config.method, group=config.group,
        num_samples=num_samples, batch_size=BATCH_SIZE, min_row_weights=config.min_row_weights,
        update=config.update, allocation=config.allocation, sequential=config.sequential,
        thorough=config.thorough, eval_data=files.eval,
    )  # fmt: skip
    started = time.perf_counter()
    fields: dict[str, object] = {}
    try:
        report = onnxprune.prune(files.onnx, files.calib, **arguments)  # type: ignore[arg-type]
        fields.update(
            outcome=outcome_of(report, time.perf_counter() - started),
            allocation=report.arguments.get("allocation"),
        )
        fields["score"], fields["value"] = _score(evaluator.measure(output))
    except Exception as err:
        shown = ("sparsity", "output", "method", "group", "num_samples", "batch_size",
                 "min_row_weights")  # fmt: skip
        call = ", ".join(
            f"{k}={str(v)!r}" if isinstance(v, Path) else f"{k}={v!r}"
            for k, v in arguments.items()
            if k in shown
        )
        fields["failure"] = Failure(
            error=f"{type(err).__name__}: {err}",
            traceback=traceback.format_exc(),
            call=f"onnxprune.prune({str(files.onnx)!r}, {str(files.calib)!r}, {call}, "
            f"eval_data={str(files.eval)!r})",
        )
    return dataclasses.replace(row, wall=time.perf_counter() - started, **fields)  # type: ignore[arg-type]


def run_quality(
    files: ModelFiles,
    configs: Sequence[GridConfig],
    sparsities: Sequence[float],
    num_samples: int | None,
    work_dir: Path,
) -> QualityBlock:
    print(f"\n== quality: {files.name} ({len(configs)} configs x {len(sparsities)} sparsities)")
    clock = time.perf_counter()
    evaluator = Evaluator(files)
    dense = DenseReference(metric=evaluator.dense_metric(), eval_samples=evaluator.count)
    print(f"dense reference computed in {time.perf_counter() - clock:.1f}s: {dense}")
    output = work_dir / f"{files.name}.pruned.onnx"
    rows: list[GridRow] = []
    for config in configs:
        for sparsity in sparsities:
            row = measure_cell(files, evaluator, config, sparsity, num_samples, output)
            rows.append(row)
            shown = f"{row.value:.4f}" if row.value is not None else f"ERROR {row.failure}"
            achieved = row.achieved_sparsity
            print(
                f"  {config.label:<34} s={sparsity:.2f} -> {shown} "
                f"(achieved {achieved if achieved is not None else float('nan'):.4f}, "
                f"{row.wall:.1f}s)",
                flush=True,
            )
    output.unlink(missing_ok=True)
    return QualityBlock(dense=dense, num_samples=num_samples, rows=tuple(rows))
