"""What every part of ``Pruner`` shares: the run's constants, the candidate records and
the state ``Pruner.__init__`` sets up (``PrunerState``, the first link of the chain of stages)."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort

from ..allocation import (
    SensitivityCurve,
)
from ..boundary import BoundaryCache
from ..branches import BranchLayers
from ..calibrate.sources import (
    CalibrationSet,
)
from ..calibrate.stats import LayerStats
from ..config import PruneConfig
from ..evaluate import CandidateEvaluator
from ..layers import Layer, LayerScan
from ..metric import Metric
from ..progress import Progress
from ..report import LayerReport
from ..scoring import ScoringMethod, get_method
from ..stages import group_stages, layer_depths
from ..suffix import SuffixCut, SuffixEvaluator
from ..verify import ReferenceRun

# Held-out verification never needs more than this many samples.
MAX_HOLDOUT = 256
# A calibration set smaller than this holds nothing out: the fidelity check reuses it.
MIN_HOLDOUT_TOTAL = 10
# --group auto: the selections it tries, and how many calibration samples judge them.
AUTO_GROUPS = ("row", "global")
AUTO_SAMPLES = 64
# Unless --allocation measured: as many of those as hold about AUTO_VALUES output values, at
# least SENSITIVITY_SAMPLES (an encoder's or detector's large outputs and a 1000-class
# classifier's logits 16 samples, a 10-class classifier's all 64). EfficientNet-Lite0's trials
# on 16 samples instead of 64 chose the same group and variant at 0.5 and 0.7 (margins on 16:
# row vs global 0.30 / 0.34, contrib vs contrib-nocomp 0.006 / 0.084) and wrote the same
# model, for a quarter of the cost of its whole-model comparisons.
AUTO_VALUES = 16384
# --allocation sensitivity (estimated curves): each layer's candidates are judged on the first
# calibration samples that hold about SENSITIVITY_VALUES output values, within these bounds.
SENSITIVITY_SAMPLES = 16
MIN_SENSITIVITY_SAMPLES = 4
# 8192 values: EfficientNet-Lite0's 1000 logits on 9 samples judged as well as on 16 (top-1
# agreement with the dense model 0.3281 / 0.1406 at 0.5 / 0.7 on 8 samples, 0.3047 / 0.1094
# on 16; on 4 samples 0.7 fell to 0.0234), at half the cost; a 10-logit classifier keeps 16.
SENSITIVITY_VALUES = 8192
# The original's outputs on at most this many verification samples are kept in memory.
MAX_CACHED_SAMPLES = 1024
# Big-model mode: pruned tensors of at least this many bytes go straight to a file.
SPILL_BYTES = 1 << 20

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """A pruned copy of the model and what was done to it."""

    model: onnx.ModelProto
    sparsity: float
    scorer: ScoringMethod
    group: str
    layers: list[LayerReport]
    warnings: list[str]
    # --group auto: mean output cosine of every variant/group tried.
    trials: dict[str, float] = dataclasses.field(default_factory=dict)
    # weight name -> share of the layer's weights selected for removal.
    removed: dict[str, float] = dataclasses.field(default_factory=dict)
    # Budget remarks (--layer overrides) that hold for every build at this sparsity.
    notes: list[str] = dataclasses.field(default_factory=list)
    # --sequential: calibration passes this candidate needed beyond the one-shot pass.
    stage_passes: int = 0
    # How its layers' shares were decided ("group" or "sensitivity"; --group auto may keep
    # either).
    allocation: str = "group"


# A layer's pruned matrix [out, K], its bias change [out] (or None) and a problem to report.
PrunedMatrix = tuple[np.ndarray, np.ndarray | None, str | None]


@dataclass
class PrunedLayers:
    """Layers decided and pruned, not yet written: per plan the pruned matrix [out, K] and the
    bias change [out] (or None); budget notes, warnings and the share selected per weight."""

    plans: list[LayerPlan]
    finals: list[np.ndarray]
    deltas: list[np.ndarray | None]
    notes: list[str]
    warnings: list[str]
    removed: dict[str, float]
    # One-shot results by ``Pruner._pruned_key`` (what ``Pruner.remember`` keeps).
    results: dict[tuple[object, ...], PrunedMatrix] = field(default_factory=dict)


@dataclass
class LayerPlan:
    """What happens to one layer: scored by ``scorer``, ``target`` of its weights removed,
    ``keep`` the mask (None: chosen during reconstruction), rows keep ``min_row_weights``."""

    index: int
    scorer: ScoringMethod
    target: float
    keep: np.ndarray | None
    min_row_weights: int


class PrunerState:
    """The state one ``Pruner`` holds; the stage classes extend it in a chain (see the
    package docstring)."""

    # Set by ``Pruner.__init__`` (onnxprune/pipeline/pruner.py).
    model_path: Path
    reference_path: Path
    config: PruneConfig
    progress: Progress
    big: bool
    _workdir: tempfile.TemporaryDirectory[str] | None
    base_dir: Path | None
    proto: onnx.ModelProto
    _files: Iterator[int]
    calibration: CalibrationSet
    evaluation: CalibrationSet | None
    calib_mask: np.ndarray
    holdout_mask: np.ndarray
    hold_out: bool
    sample_mask: str | None
    metric: Metric
    scorer: ScoringMethod
    scan: LayerScan
    branches: BranchLayers
    _stats: Mapping[str, LayerStats] | None
    _matrices: list[np.ndarray] | None
    _factors: dict[str, list[tuple[np.ndarray, np.ndarray]] | None]
    # Layers whose x^T x was dropped once their factor was made: kept to the end of the run.
    _kept_factors: set[str]
    _auto_reference: ReferenceRun | None
    _sensitivity_reference: ReferenceRun | None
    _trial_reference: ReferenceRun | None
    # The session over the original the probe references share while they are made
    # (``References._one_original_session``).
    _shared_original: ort.InferenceSession | None
    # Output values per calibration sample, once probed (``References._output_values_per_sample``).
    _values_per_sample: int | None
    _pruned: dict[tuple[object, ...], PrunedMatrix]
    _latest: dict[tuple[object, ...], PrunedMatrix]
    _evaluator: CandidateEvaluator | bool | None
    _own_evaluator: tuple[str, CandidateEvaluator] | None
    _own_setup_seconds: float
    _judge_seconds: dict[bool, list[float]]
    _cuts: list[SuffixCut | None] | None
    _boundary: BoundaryCache | None
    _suffix: tuple[tuple[int, ...], SuffixEvaluator] | None
    _windows: dict[int, tuple[int, ...]]
    _arrays: dict[str, np.ndarray] | None
    _verify_reference: ReferenceRun | None
    _sensitivity: dict[tuple[object, ...], list[SensitivityCurve]]
    sensitivity_builds: int
    unmeasured_layers: list[str]
    base_share_layers: list[str]
    calibration_passes: int
    phase_seconds: dict[str, float]
    stage_statistics: dict[str, LayerStats]
    # The last layer scores computed (``Decisions.layer_scores``): method name, the matrix and
    # statistics they were computed from (held, so compared by identity), scores [out, K].
    _last_scores: tuple[str, np.ndarray, LayerStats, np.ndarray] | None
    # Scores kept for reuse while they fit (``Decisions.layer_scores``): (method name, id of
    # the matrix, id of the statistics) -> (the matrix, the statistics, scores [out, K]).
    _scores: dict[tuple[str, int, int], tuple[np.ndarray, LayerStats, np.ndarray]]
    # Each layer's share removed by a multi-layer selection (``Decisions.group_shares``), by
    # (method name, selection, target, layer indices).
    _group_shares: dict[tuple[object, ...], list[float]]
    # Keep masks a caller selected already, by ``_group_shares``' key, for the ``_selected``
    # call that asks for them next (the estimated sensitivity curves' judged levels).
    _known_masks: dict[tuple[object, ...], list[np.ndarray]]

    def close(self) -> None:
        """Remove the big-model work directory (also done when the Pruner is collected)."""
        self.progress.close()
        if self._workdir is not None:
            self._workdir.cleanup()

    @property
    def layers(self) -> list[Layer]:
        return self.scan.layers

    @property
    def calibration_samples(self) -> int:
        return int(self.calib_mask.sum())

    def auto_variants(self, scorer: ScoringMethod) -> list[ScoringMethod]:
        """The registered variants --group auto tries in place of ``scorer``: only under
        --thorough, since each is one more whole-model trial (MiniLM: about 2 s of a 21 s run)
        for at most 0.003 of fidelity at the benchmark points (README 'What a run costs')."""
        if not self.config.thorough:
            return []
        return [get_method(name) for name in scorer.auto_variants]

    def stages(self) -> list[list[int]]:
        """--sequential: layer indices per calibration stage, shallowest first."""
        return group_stages(layer_depths(self.proto, self.layers), self.config.stages)

    if TYPE_CHECKING:
        # Called by the stages below the one that defines them (Candidates calls the
        # decisions, Decisions the sensitivity targets): declared here for the type checker.

        def _decide(
            self, config: PruneConfig, scorer: ScoringMethod, group: str, chosen: list[int]
        ) -> tuple[list[LayerPlan], list[str]]: ...

        def _prune_layers(
            self,
            config: PruneConfig,
            plans: list[LayerPlan],
            stats: Mapping[str, LayerStats],
            factors_from_stats: bool = False,
        ) -> tuple[list[np.ndarray], list[np.ndarray | None], list[str], dict[str, float]]: ...

        def sensitivity_targets(
            self,
            config: PruneConfig,
            chosen: list[int],
            sparsity: float,
            scorer: ScoringMethod,
            group: str,
        ) -> list[float]: ...
