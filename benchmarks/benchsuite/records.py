"""The measured rows of each section, as frozen records (JSON layout: ``codec``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .codec import FLAT, OMIT, OMIT_DEFAULT


@dataclass(frozen=True)
class GridConfig:
    """One row of the quality grid: how ``onnxprune.prune`` is called."""

    label: str
    method: str
    group: str | None
    min_row_weights: int
    # "method", "ablation", "group", "baseline-mrw0", "update", "fast", "sensitivity",
    # "sequential", "thorough"
    kind: str
    # The selection group as configured: the explicit one, or "<method default> (default)".
    group_label: str
    # --update: SparseGPT-style reconstruction after the mask (``sparsegpt`` always has it);
    # None: the method's default (contrib: on).
    update: bool | None = None
    # --allocation; None: the method's default (contrib: sensitivity).
    allocation: str | None = None
    sequential: bool = False
    # --thorough: --group auto also tries the method's variants; every layer judged.
    thorough: bool = field(default=False, metadata=OMIT_DEFAULT)


@dataclass(frozen=True)
class Failure:
    """A call that raised (``traceback``, ``call``) or a process that failed (``command``,
    ``stderr``)."""

    error: str
    traceback: str | None = field(default=None, metadata=OMIT)
    call: str | None = field(default=None, metadata=OMIT)
    command: str | None = field(default=None, metadata=OMIT)
    stderr: str | None = field(default=None, metadata=OMIT)


@dataclass(frozen=True)
class PruneOutcome:
    """What ``onnxprune.prune`` reported for one grid cell."""

    prune_wall: float
    effective_group: str
    variant: str | None
    group_trials: dict[str, float]
    achieved_sparsity: float
    calibration_samples: int
    sensitivity_builds: int | None
    timings: dict[str, float]
    warnings: tuple[str, ...]
    tool_cosine: float | None
    tool_accuracy_pruned: float | None
    tool_accuracy_original: float | None
    fidelity_samples: int | None


@dataclass(frozen=True)
class AccuracyScore:
    """This script's test accuracy of a pruned classifier."""

    accuracy: float


@dataclass(frozen=True)
class EmbeddingScore:
    """Per-sentence cosine of the pruned and the dense pooled embeddings."""

    cosine_mean: float
    cosine_min: float


@dataclass(frozen=True)
class GridRow:
    """One cell of a grid model (digits, MiniLM). ``allocation`` is the one the run used."""

    model: str
    label: str
    method: str
    group: str | None
    min_row_weights: int
    kind: str
    group_label: str
    update: bool | None
    allocation: str | None
    sequential: bool
    sparsity: float
    num_samples: int | None
    load1: float
    outcome: PruneOutcome | None = field(default=None, metadata=FLAT)
    score: AccuracyScore | EmbeddingScore | None = field(default=None, metadata=FLAT)
    # The cell's shown metric: accuracy, or the mean embedding cosine.
    value: float | None = field(default=None, metadata=OMIT)
    failure: Failure | None = field(default=None, metadata=FLAT)
    wall: float = 0.0
    thorough: bool = field(default=False, metadata=OMIT_DEFAULT)

    @property
    def achieved_sparsity(self) -> float | None:
        return self.outcome.achieved_sparsity if self.outcome else None


@dataclass(frozen=True)
class MobileOutcome:
    """One cell of the mobile CNN's grid, from the tool's own comparison (``Pruner``)."""

    effective_group: str
    variant: str | None
    group_trials: dict[str, float]
    achieved_sparsity: float
    layer_sparsity: dict[str, float]
    allocation: str | None
    warnings: tuple[str, ...]
    top1_agreement: float
    tool_cosine: float
    fidelity_samples: int
    value: float


@dataclass(frozen=True)
class MobileRow:
    """A mobile cell; ``sparsity`` is a float or an N:M pattern such as ``"2:4"``."""

    model: str
    label: str
    method: str
    update: bool | None
    group: str | None
    group_label: str
    kind: str
    sparsity: float | str
    calibrate_seconds: float
    load1: float
    outcome: MobileOutcome | None = field(default=None, metadata=FLAT)
    failure: Failure | None = field(default=None, metadata=FLAT)
    wall: float = 0.0
    thorough: bool = field(default=False, metadata=OMIT_DEFAULT)

    @property
    def value(self) -> float | None:
        return self.outcome.value if self.outcome else None

    @property
    def achieved_sparsity(self) -> float | None:
        return self.outcome.achieved_sparsity if self.outcome else None


QualityRow = GridRow | MobileRow


@dataclass(frozen=True)
class DenseReference:
    metric: float | None  # dense test accuracy (classifiers); None where the metric is relative
    eval_samples: int | None


@dataclass(frozen=True)
class QualityBlock:
    dense: DenseReference
    num_samples: int | None
    rows: tuple[GridRow | MobileRow, ...]


# --------------------------------------------------------------------------- speed and memory


@dataclass(frozen=True)
class PlainRun:
    """Plain onnxruntime inference in a fresh process (``--plain-inference``)."""

    samples: int
    setup: float
    inference: float
    peak_rss_kib: int
    process_wall: float
    load1: float


@dataclass(frozen=True)
class CliRun:
    wall: float
    load1: float
    timings: dict[str, float]
    calibration_samples: int
    fidelity_samples: int


@dataclass(frozen=True)
class SpeedSummary:
    plain_inference_median: float
    plain_process_median: float
    cli_median: float
    ratio: float
    ratio_process: float
    target: float | None
    median_timings: dict[str, float]
    calibration_samples: int
    fidelity_samples: int


@dataclass(frozen=True)
class SpeedRow:
    model: str
    method: str
    samples: int
    failure: Failure | None = field(default=None, metadata=FLAT)
    plain_runs: tuple[PlainRun, ...] = ()
    cli_runs: tuple[CliRun, ...] = ()
    summary: SpeedSummary | None = field(default=None, metadata=FLAT)


@dataclass(frozen=True)
class Startup:
    command: str
    median: float
    runs: tuple[float, ...]


@dataclass(frozen=True)
class SpeedSection:
    startup: Startup
    rows: tuple[SpeedRow, ...]


@dataclass(frozen=True)
class MemoryRun:
    num_samples_arg: int
    calibration_samples: int
    peak_rss_kib: int
    wall: float
    load1: float
    measured_with: str


@dataclass(frozen=True)
class MemoryRow:
    model: str
    method: str
    runs: tuple[MemoryRun, ...]
    failure: Failure | None = field(default=None, metadata=FLAT)
    ratio: float | None = field(
        default=None, metadata=OMIT
    )  # peak RSS of the larger run / the smaller one


@dataclass(frozen=True)
class PlainMemory:
    model: str | None = field(default=None, metadata=OMIT)
    peak_rss_kib: int | None = field(default=None, metadata=OMIT)
    measured_with: str | None = field(default=None, metadata=OMIT)
    failure: Failure | None = field(default=None, metadata=FLAT)


@dataclass(frozen=True)
class MemorySection:
    rows: tuple[MemoryRow, ...]
    plain: tuple[PlainMemory, ...]
