"""The original model's outputs on the samples each decision is judged on, and the
differential check of a candidate against them."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx

from ..config import PruneConfig
from ..session import make_session, save_for_session
from ..verify import Fidelity, ReferenceRun
from .base import (
    AUTO_SAMPLES,
    AUTO_VALUES,
    MAX_CACHED_SAMPLES,
    MIN_SENSITIVITY_SAMPLES,
    SENSITIVITY_SAMPLES,
    SENSITIVITY_VALUES,
    Candidate,
)
from .setup import (
    candidate_file,
)
from .statistics import StatisticsStage

log = logging.getLogger(__name__)


class References(StatisticsStage):
    def calibration_reference(self) -> ReferenceRun:
        """The original's outputs on the first AUTO_SAMPLES calibration samples, on which
        --group auto and --allocation measured judge candidates (never the held-out ones, so
        the reported fidelity stays an honest estimate)."""
        if self._auto_reference is None:
            self._auto_reference = self._probe_reference(AUTO_SAMPLES)
        return self._auto_reference

    def trial_reference(self, config: PruneConfig) -> ReferenceRun:
        """Where --group auto judges its trials: the calibration reference with --allocation
        measured, else its first samples holding about AUTO_VALUES output values. Made (and
        run) together with the sensitivity reference when the run estimates sensitivity
        curves, in one session over the original (``_one_original_session``)."""
        if config.allocation_mode == "measured":
            return self.calibration_reference()
        if self._trial_reference is None:
            with self._one_original_session():
                wanted = math.ceil(AUTO_VALUES / max(self._output_values_per_sample(), 1))
                count = min(AUTO_SAMPLES, max(SENSITIVITY_SAMPLES, wanted))
                self._trial_reference = (
                    self.calibration_reference()
                    if count >= AUTO_SAMPLES
                    else self._probe_reference(count)
                )
                probes = [self._trial_reference]
                if config.allocation_mode == "sensitivity":
                    probes.append(self.sensitivity_reference())
                # They run now, while the one session over the original is there.
                for probe in probes:
                    probe.run_original()
        return self._trial_reference

    @contextmanager
    def _one_original_session(self) -> Iterator[None]:
        """Within the block, the probe references (and the output-size probe) share one
        session over the original instead of building one each (about 0.05 s apiece on
        EfficientNet-Lite0); it is dropped at the end of the block."""
        self._shared_original = make_session(self.reference_path)
        try:
            yield
        finally:
            self._shared_original = None

    def sensitivity_reference(self) -> ReferenceRun:
        """The first calibration samples, on which the estimated sensitivity curves judge their
        candidates: enough samples for about SENSITIVITY_VALUES output values (a classifier's
        few logits need SENSITIVITY_SAMPLES, a detector's or encoder's large outputs fewer),
        at least MIN_SENSITIVITY_SAMPLES."""
        if self._sensitivity_reference is None:
            wanted = math.ceil(SENSITIVITY_VALUES / max(self._output_values_per_sample(), 1))
            count = min(SENSITIVITY_SAMPLES, max(MIN_SENSITIVITY_SAMPLES, wanted))
            self._sensitivity_reference = self._probe_reference(count)
        return self._sensitivity_reference

    def _probe_reference(self, count: int) -> ReferenceRun:
        """The original's outputs and the inputs of the first ``count`` calibration samples,
        cached: candidates are judged on them many times."""
        probe = np.zeros_like(self.calib_mask)
        probe[np.flatnonzero(self.calib_mask)[:count]] = True
        return ReferenceRun(
            self.reference_path,
            self.calibration,
            probe,
            self.config.batch_size,
            "calibration",
            cache=True,
            cache_feeds=True,
            metric=self.metric,
            session=self._shared_original,
        )

    def _output_values_per_sample(self) -> int:
        """How many output values one sample gives: from the --group auto reference when it
        ran, else from running the original on one sample."""
        auto = self._auto_reference
        if auto is not None and auto.ran:
            return auto.values_per_sample()
        if self._values_per_sample is None:
            # Kept: the trial and the sensitivity references both ask, and each probe loads
            # the original into a session of its own.
            one = np.zeros_like(self.calib_mask)
            one[np.flatnonzero(self.calib_mask)[:1]] = True
            self._values_per_sample = ReferenceRun(
                self.reference_path,
                self.calibration,
                one,
                1,
                "calibration",
                session=self._shared_original,
            ).values_per_sample()
        return self._values_per_sample

    def search_reference(self) -> ReferenceRun:
        """Where --sparsity auto measures its candidates. Without --eval: every other held-out
        sample (never seen by the statistics, so --update's fit to the calibration samples
        does not flatter it); the rest of the held-out samples stay for the reported fidelity,
        which is therefore not measured on the samples the sparsity was chosen on. With --eval
        (or too few samples to split): the first AUTO_SAMPLES calibration samples."""
        held = np.flatnonzero(self.holdout_mask)
        if self.evaluation is not None or self.holdout_mask is self.calib_mask or held.size < 2:
            return self.calibration_reference()
        search = np.zeros_like(self.holdout_mask)
        search[held[::2]] = True
        self.holdout_mask = self.holdout_mask & ~search
        self._verify_reference = None
        return ReferenceRun(
            self.reference_path,
            self.calibration,
            search,
            self.config.batch_size,
            "search (held-out)",
            cache=True,
            metric=self.metric,
        )

    def verification_reference(self) -> ReferenceRun:
        """The original's side of the held-out (or --eval) check; cached outputs are kept
        because searches and sweeps compare many candidates against it."""
        if self._verify_reference is None:
            if self.evaluation is not None:
                data, selected, source = (
                    self.evaluation,
                    np.ones(self.evaluation.total, dtype=bool),
                    "--eval",
                )
            else:
                held_out = self.holdout_mask is not self.calib_mask
                data, selected = self.calibration, self.holdout_mask
                source = "held-out" if held_out else "calibration"
            # Searches, sweeps and inspect compare many candidates: keep the original's
            # outputs when that stays small.
            cache = int(selected.sum()) <= MAX_CACHED_SAMPLES
            self._verify_reference = ReferenceRun(
                self.reference_path,
                data,
                selected,
                self.config.batch_size,
                source,
                cache=cache,
                metric=self.metric,
            )
            if self.big and cache:
                # Run the original now and drop its session: never two big sessions at once.
                self._verify_reference.prefetch()
        return self._verify_reference

    def compare(self, candidate: Candidate, reference: ReferenceRun | None = None) -> Fidelity:
        with self.candidate_file(candidate.model) as path:
            return (reference or self.verification_reference()).compare(path)

    @contextmanager
    def candidate_file(self, model: onnx.ModelProto) -> Iterator[Path]:
        """``model`` on disk for onnxruntime; in big-model mode, beside the files its external
        tensors live in (the work directory)."""
        if self.base_dir is None:
            with candidate_file(model) as path:
                yield path
            return
        path = self.base_dir / f"candidate-{next(self._files)}.onnx"
        try:
            yield save_for_session(model, path)
        finally:
            path.unlink(missing_ok=True)
