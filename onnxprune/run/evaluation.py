"""Stage 3 (inside planning): judge a candidate as it would be written, and the curve points
of --sparsity auto and --sweep."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..checks import Gates
from ..config import PruneConfig
from ..deploy import DeployConfig, Finisher
from ..metric import decision_score
from ..pipeline import Candidate, Pruner, mean_cosine
from ..verify import Fidelity, ReferenceRun


@dataclass(frozen=True)
class Judge:
    """``judge(candidate, reference)``: the candidate's fidelity as it would be written (with
    --quantize, the quantized candidate), on ``reference``'s samples (default: the reported
    ones)."""

    pruner: Pruner
    deploy: DeployConfig
    finisher: Finisher

    @classmethod
    def of(cls, pruner: Pruner, deploy: DeployConfig, config: PruneConfig) -> Judge:
        """The judge of ``pruner``'s candidates (its statistics are gathered: the artifact is
        calibrated on the same samples)."""
        finisher = Finisher(deploy, pruner.calibration, pruner.calib_mask, config.batch_size)
        return cls(pruner, deploy, finisher)

    def __call__(self, built: Candidate, reference: ReferenceRun | None = None) -> Fidelity:
        if not self.deploy.changes_weights:
            return self.pruner.compare(built, reference)
        return self.finisher.artifact_fidelity(
            built.model, reference or self.pruner.verification_reference()
        )


def curve_point(sparsity: float, fidelity: Fidelity, gates: Gates) -> dict[str, Any]:
    """One point of the report's fidelity curve."""
    top1 = [o.top1_agreement for o in fidelity.outputs if o.top1_agreement is not None]
    return {
        "sparsity": round(sparsity, 6),
        "cosine": mean_cosine(fidelity),
        "score": decision_score(fidelity),
        "top1": float(np.mean(top1)) if top1 else None,
        "accuracy": fidelity.accuracy_pruned,
        "passes": (not gates.check(fidelity)) if gates.active else None,
        "samples": f"{fidelity.samples} {fidelity.source}",
    }
