"""Run configuration: frozen, validated on construction, no logic beyond validation."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import UsageError

GROUPS = ("row", "layer", "global", "auto")


@dataclass(frozen=True)
class NMPattern:
    """Keep ``n`` weights out of every ``m`` consecutive weights along the reduction axis."""

    n: int
    m: int

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def sparsity(self) -> float:
        return 1.0 - self.n / self.m


def parse_pattern(text: str) -> NMPattern | None:
    """``"unstructured"`` -> None; ``"2:4"`` -> NMPattern(2, 4)."""
    if text == "unstructured":
        return None
    match = re.fullmatch(r"(\d+):(\d+)", text.strip())
    if not match:
        raise UsageError(f"--pattern must be 'unstructured' or N:M such as 2:4, got {text!r}")
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise UsageError(f"--pattern {text}: need 0 < N < M")
    return NMPattern(n, m)


@dataclass(frozen=True)
class PruneConfig:
    """Everything that decides which weights are removed. Mirrors the CLI options."""

    sparsity: float
    method: str = "contrib"
    pattern: str = "unstructured"
    # None: the method's own default selection group (see ``onnxprune.scoring``).
    group: str | None = None
    exclude: tuple[str, ...] = ()
    num_samples: int | None = None
    batch_size: int = 32
    seed: int = 0
    # Share of the calibration samples held out for the fidelity check when no --eval is given.
    holdout_fraction: float = 0.1
    # Global selection never removes more than this share of one layer.
    layer_cap: float = 0.98
    # Every output row (neuron / filter) keeps at least this many weights (all, if it has
    # fewer); the overall target is met by pruning the other layers more. 0 disables.
    min_row_weights: int = 8
    # Re-fit the remaining weights of each layer to its calibration outputs (SparseGPT update).
    update: bool = False
    # Input whose zeros mark padding ([batch, seq]); None: detect attention_mask; "none": off.
    sample_mask: str | None = None
    # Share of the hidden units (neurons, channels, heads) to remove structurally, before any
    # weight pruning; 0 disables.
    structured: float = 0.0
    # How --structured ranks units (see ``onnxprune.structure.scores``).
    structured_score: str = "variance"
    nm: NMPattern | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from .scoring import available_methods  # local: scoring imports config types

        if not isinstance(self.sparsity, (int, float)) or not 0.0 <= self.sparsity < 1.0:
            raise UsageError(f"--sparsity must be in [0, 1), got {self.sparsity!r}")
        if self.method not in available_methods(include_hidden=True):
            choices = ", ".join(available_methods())
            raise UsageError(f"unknown --method {self.method!r}; choose one of: {choices}")
        nm = parse_pattern(self.pattern)
        object.__setattr__(self, "nm", nm)
        if nm is not None and abs(self.sparsity - nm.sparsity) > 1e-9:
            raise UsageError(
                f"--pattern {nm} fixes sparsity at {nm.sparsity:g}; "
                f"--sparsity {self.sparsity:g} contradicts it (omit --sparsity)"
            )
        if self.group is not None and self.group not in GROUPS:
            raise UsageError(f"--group must be one of {', '.join(GROUPS)}, got {self.group!r}")
        for pattern in self.exclude:
            try:
                re.compile(pattern)
            except re.error as err:
                raise UsageError(f"--exclude {pattern!r} is not a valid regex: {err}") from err
        if self.num_samples is not None and self.num_samples < 1:
            raise UsageError(f"--num-samples must be at least 1, got {self.num_samples}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise UsageError(f"holdout fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.min_row_weights < 0:
            raise UsageError(f"--min-row-weights must be >= 0, got {self.min_row_weights}")
        if not isinstance(self.structured, (int, float)) or not 0.0 <= self.structured < 1.0:
            raise UsageError(f"--structured must be in [0, 1), got {self.structured!r}")
        from .structure.scores import UNIT_SCORERS

        if self.structured_score not in UNIT_SCORERS:
            choices = ", ".join(UNIT_SCORERS)
            raise UsageError(
                f"unknown --structured-score {self.structured_score!r}; choose one of: {choices}"
            )
        if not 0.0 < self.layer_cap <= 1.0:
            raise UsageError(f"layer cap must be in (0, 1], got {self.layer_cap}")

    @property
    def target_sparsity(self) -> float:
        """The share of each prunable layer's weights to remove."""
        return self.nm.sparsity if self.nm is not None else float(self.sparsity)

    def is_excluded(self, *names: str) -> bool:
        return any(re.search(p, name) for p in self.exclude for name in names if name)
