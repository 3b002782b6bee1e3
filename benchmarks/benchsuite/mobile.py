"""Section 1 for the mobile CNN (EfficientNet-Lite0): its grid through
``onnxprune.pipeline.Pruner``, one calibration pass per configuration for every sparsity."""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Sequence

from onnxprune.config import PruneConfig
from onnxprune.pipeline import Pruner
from onnxprune.scoring import METHODS

from .machine import load1
from .models import ModelFiles
from .plan import FAST, MOBILE_PATTERN, THOROUGH
from .records import DenseReference, Failure, MobileOutcome, MobileRow, QualityBlock

# These rows, at every sparsity and 2:4.
MOBILE_METHODS = ("contrib", "magnitude", "wanda", "ria", "sparsegpt", "stade")


@dataclasses.dataclass(frozen=True)
class MobileConfig:
    label: str
    method: str
    update: bool | None  # None: the method's default
    allocation: str | None  # None: the method's default
    thorough: bool = False


def mobile_configs(
    methods_filter: Sequence[str] | None, labels: Sequence[str] | None
) -> list[MobileConfig]:
    configs = [MobileConfig(m, m, None, None) for m in MOBILE_METHODS]
    configs.append(MobileConfig(FAST, "contrib", False, "group"))
    configs.append(MobileConfig(THOROUGH, "contrib", None, None, thorough=True))
    if methods_filter:
        configs = [c for c in configs if c.method in methods_filter]
    if labels:
        configs = [c for c in configs if c.label in labels]
    return configs


def _kind(config: MobileConfig) -> str:
    if config.thorough:
        return "thorough"
    return "method" if config.label == config.method else "fast"


def _measure(
    pruner: Pruner, files: ModelFiles, config: MobileConfig, point: float | str
) -> MobileOutcome:
    if point == MOBILE_PATTERN:
        # N:M decides which layers are prunable (layers whose input channels per group are not
        # a multiple of M stay dense): a Pruner of its own, with its own calibration pass, as
        # the CLI would run it.
        allocation = None if config.allocation == "sensitivity" else config.allocation
        nm = PruneConfig(sparsity=0.5, method=config.method, update=config.update,
                         pattern=point, allocation=allocation,
                         thorough=config.thorough)  # fmt: skip
        pruner = Pruner(files.onnx, files.calib, nm, eval_data=files.eval)
        candidate = pruner.build()
    else:
        assert isinstance(point, float)
        candidate = pruner.build(point)
    fidelity = pruner.compare(candidate)
    params = sum(x.params for x in candidate.layers)
    zeros = sum(x.params - x.nonzero_after for x in candidate.layers)
    out = fidelity.outputs[0]
    return MobileOutcome(
        effective_group=candidate.group,
        variant=candidate.scorer.name,
        group_trials=dict(candidate.trials),
        achieved_sparsity=zeros / params,
        layer_sparsity={x.name: x.sparsity for x in candidate.layers},
        allocation=candidate.allocation,
        warnings=tuple(candidate.warnings),
        top1_agreement=out.top1_agreement,
        tool_cosine=out.cosine,
        fidelity_samples=fidelity.samples,
        value=out.top1_agreement,
    )


def _config_rows(
    files: ModelFiles, config: MobileConfig, sparsities: Sequence[float]
) -> list[MobileRow]:
    started = time.perf_counter()
    prune = PruneConfig(sparsity=sparsities[0], method=config.method, update=config.update,
                        allocation=config.allocation, thorough=config.thorough)  # fmt: skip
    pruner = Pruner(files.onnx, files.calib, prune, eval_data=files.eval)
    pruner.statistics()
    calibrate = time.perf_counter() - started
    rows = []
    points: list[float | str] = [*sparsities, MOBILE_PATTERN]
    for point in points:
        row = MobileRow(
            model=files.name, label=config.label, method=config.method, update=config.update,
            group=None, group_label=f"{METHODS[config.method].default_group} (default)",
            kind=_kind(config), sparsity=point, calibrate_seconds=calibrate, load1=load1(),
            thorough=config.thorough,
        )  # fmt: skip
        clock = time.perf_counter()
        try:
            outcome = _measure(pruner, files, config, point)
            row = dataclasses.replace(row, outcome=outcome)
            shown = f"top-1 {outcome.top1_agreement:.4f} cosine {outcome.tool_cosine:.4f}"
        except Exception as err:
            failure = Failure(
                error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()
            )
            row = dataclasses.replace(row, failure=failure)
            shown = f"ERROR {failure.error}"
        row = dataclasses.replace(row, wall=time.perf_counter() - clock)
        rows.append(row)
        achieved = row.achieved_sparsity
        print(
            f"  {config.label:<20} {point!s:>5} -> {shown} (achieved "
            f"{achieved if achieved is not None else float('nan'):.4f}, {row.wall:.1f}s; "
            f"calibration {calibrate:.0f}s)",
            flush=True,
        )
    return rows


def run_quality_mobile(
    files: ModelFiles,
    sparsities: Sequence[float],
    methods_filter: Sequence[str] | None,
    labels: Sequence[str] | None = None,
) -> QualityBlock:
    """One calibration pass per configuration serves every sparsity (a pass over 256 images
    at 224x224 takes minutes here), exactly as ``--sweep`` does; the 2:4 pattern, which changes
    which layers are prunable, gets its own. Metric: the tool's own comparison with the dense
    model on the 128 held-out images (``--eval``): top-1 agreement of the logits and their mean
    per-sample cosine."""
    configs = mobile_configs(methods_filter, labels)
    print(
        f"\n== quality: {files.name} ({len(configs)} configs x {len(sparsities)} sparsities + 2:4)"
    )
    rows = [row for config in configs for row in _config_rows(files, config, sparsities)]
    samples = rows[0].outcome.fidelity_samples if rows and rows[0].outcome else None
    return QualityBlock(DenseReference(metric=None, eval_samples=samples), None, tuple(rows))
