"""Fidelity gates: limits on the held-out comparison that decide whether a run passes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import UsageError
from .metric import decision_score
from .options import GATES, check_fields, default
from .verify import Fidelity, OutputFidelity


@dataclass(frozen=True)
class GateFailure:
    output: str
    metric: str
    value: float
    limit: float
    option: str

    def describe(self) -> str:
        if self.metric == "non-finite values":
            return (
                f"{self.output}: {self.value:g} NaN/inf values in the pruned output fail "
                f"{self.option}"
            )
        return (
            f"{self.output}: {self.metric} {self.value:.6g} fails {self.option} {self.limit:g} "
            f"(by {abs(self.value - self.limit):.4g})"
        )


@dataclass(frozen=True)
class Gates:
    """Each limit applies to every model output that has the metric."""

    min_cosine: float | None = default("min_cosine")
    min_top1: float | None = default("min_top1")
    max_abs_error: float | None = default("max_abs_error")
    max_accuracy_drop: float | None = default("max_accuracy_drop")
    # The run's metric score (``onnxprune.metric``; one number over the outputs it scores).
    min_score: float | None = default("min_score")

    def __post_init__(self) -> None:
        check_fields(self, GATES)  # kinds and ranges (``onnxprune.options``)

    @property
    def active(self) -> bool:
        return any(v is not None for v in asdict(self).values())

    def options(self) -> list[str]:
        """The command-line options of the active gates."""
        return ["--" + k.replace("_", "-") for k, v in asdict(self).items() if v is not None]

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def check(self, fidelity: Fidelity) -> list[GateFailure]:
        """Every limit ``fidelity`` fails: per output, then the metric score, then accuracy."""
        failures = []
        for out in fidelity.outputs:
            failures += self._output_failures(out)
        if self.min_score is not None:
            score = decision_score(fidelity)
            if not score >= self.min_score:
                failures.append(
                    GateFailure(
                        "metric",
                        f"{fidelity.metric or 'cosine'} score",
                        score,
                        self.min_score,
                        "--min-score",
                    )
                )
        if self.max_accuracy_drop is not None:
            original, pruned = fidelity.accuracy_original, fidelity.accuracy_pruned
            if original is None or pruned is None:
                raise UsageError("--max-accuracy-drop needs --eval data with a 'labels' array")
            if not original - pruned <= self.max_accuracy_drop:
                failures.append(
                    GateFailure(
                        "accuracy",
                        "accuracy drop",
                        original - pruned,
                        self.max_accuracy_drop,
                        "--max-accuracy-drop",
                    )
                )
        return failures

    def _output_failures(self, out: OutputFidelity) -> list[GateFailure]:
        """The per-output limits ``out`` fails."""
        if out.nonfinite:
            # NaN/inf in the pruned outputs: no metric over them means anything.
            return [
                GateFailure(out.name, "non-finite values", out.nonfinite, 0, option)
                for option in self.options()
            ]
        if out.exact:
            # Integer/bool outputs: exact agreement, gated by --min-top1 only.
            if self.min_top1 is not None and not out.cosine >= self.min_top1:
                return [
                    GateFailure(
                        out.name, "exact agreement", out.cosine, self.min_top1, "--min-top1"
                    )
                ]
            return []
        failures = []
        if self.min_cosine is not None and not out.cosine >= self.min_cosine:
            failures.append(
                GateFailure(out.name, "cosine", out.cosine, self.min_cosine, "--min-cosine")
            )
        if (
            self.min_top1 is not None
            and out.top1_agreement is not None
            and not out.top1_agreement >= self.min_top1
        ):
            failures.append(
                GateFailure(
                    out.name, "top-1 agreement", out.top1_agreement, self.min_top1, "--min-top1"
                )
            )
        if self.max_abs_error is not None and not out.max_abs_error <= self.max_abs_error:
            failures.append(
                GateFailure(
                    out.name,
                    "max abs error",
                    out.max_abs_error,
                    self.max_abs_error,
                    "--max-abs-error",
                )
            )
        return failures
