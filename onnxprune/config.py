"""Run configuration: frozen, validated on construction, no logic beyond validation."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import UsageError
from .metric import Metric
from .options import ALLOCATIONS, CONFIG, GROUPS, UPDATE_TARGETS, check_fields, default
from .scoring import available_methods, get_method

__all__ = ["ALLOCATIONS", "GROUPS", "SENSITIVITY_ALLOCATIONS", "UPDATE_TARGETS", "PruneConfig"]
# The allocations that measure each layer's damage (``onnxprune.allocation``).
SENSITIVITY_ALLOCATIONS = ("sensitivity", "measured")


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


@dataclass(frozen=True)
class LayerOverride:
    """``--layer REGEX=SPEC``: layers whose node or weight name matches ``regex`` are skipped
    (``skip``), or pruned to exactly ``sparsity`` (``S``), optionally scored by ``method``
    (``S:METHOD``)."""

    text: str
    regex: str
    skip: bool = False
    sparsity: float | None = None
    method: str | None = None


def parse_layer_override(text: str) -> LayerOverride:
    """``"classifier=skip"``, ``"conv1=0.3"``, ``"attn.*=0.6:wanda"`` -> LayerOverride.

    The regex is everything before the last ``=`` (a spec never contains one).
    """
    regex, sep, spec = text.rpartition("=")
    if not sep or not regex:
        raise UsageError(
            f"--layer {text!r}: expected REGEX=SPEC with SPEC skip, S or S:METHOD "
            "(e.g. 'classifier=skip', 'conv1=0.3', 'attn.*=0.6:wanda')"
        )
    try:
        re.compile(regex)
    except re.error as err:
        raise UsageError(f"--layer {text!r}: {regex!r} is not a valid regex: {err}") from err
    spec = spec.strip()
    if spec == "skip":
        return LayerOverride(text, regex, skip=True)
    value, _, method = spec.partition(":")
    try:
        sparsity = float(value)
    except ValueError as err:
        raise UsageError(
            f"--layer {text!r}: SPEC must be skip, S or S:METHOD, got {spec!r}"
        ) from err
    if not 0.0 <= sparsity < 1.0:
        raise UsageError(f"--layer {text!r}: sparsity must be in [0, 1), got {value}")
    if method and method not in available_methods(include_hidden=True):
        choices = ", ".join(available_methods())
        raise UsageError(f"--layer {text!r}: unknown method {method!r}; choose one of: {choices}")
    return LayerOverride(text, regex, sparsity=sparsity, method=method or None)


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
    """Everything that decides which weights are removed: the typed carrier of the ``config``
    options, whose defaults, help, choices and ranges are declared in ``onnxprune.options``
    (the comments here say what the pipeline does with each)."""

    sparsity: float
    method: str = default("method")
    pattern: str = default("pattern")
    # None: the method's own default selection group (see ``onnxprune.scoring``).
    group: str | None = default("group")
    exclude: tuple[str, ...] = default("exclude")
    num_samples: int | None = default("num_samples")
    batch_size: int = default("batch_size")
    seed: int = default("seed")
    # Share of the calibration samples held out for the fidelity check when no --eval is given.
    holdout_fraction: float = default("holdout_fraction")
    # Global selection never removes more than this share of one layer.
    layer_cap: float = default("layer_cap")
    # Every output row (neuron / filter) keeps at least this many weights (all, if it has
    # fewer); the overall target is met by pruning the other layers more. 0 disables.
    min_row_weights: int = default("min_row_weights")
    # Re-fit the remaining weights of each layer to its calibration outputs (SparseGPT update).
    # None: the method's default (``ScoringMethod.default_update``), resolved on construction.
    update: bool | None = default("update")
    # Input whose zeros mark padding ([batch, seq]); None: detect attention_mask; "none": off.
    sample_mask: str | None = default("sample_mask")
    # Share of the hidden units (neurons, channels, heads) to remove structurally, before any
    # weight pruning; 0 disables.
    structured: float = default("structured")
    # How --structured ranks units (see ``onnxprune.structure.scores``).
    structured_score: str = default("structured_score")
    # How the removed share is spread over the groups; None: the unit scorer's own.
    structured_allocation: str | None = default("structured_allocation")
    # --structured-multiple: each group keeps a multiple of this many channels (int8 / fp16
    # kernels work in blocks of 8 or 16); 1 keeps exactly the share --structured asks for.
    structured_multiple: int = default("structured_multiple")
    # --layer REGEX=SPEC, in order: the first pattern matching a layer's name decides.
    layer_overrides: tuple[str, ...] = default("layer_overrides")
    # --sequential: calibrate and prune in topological stages (at most ``stages`` of them;
    # 0: one stage per depth), each stage's statistics from the model pruned upstream.
    sequential: bool = default("sequential")
    stages: int = default("stages")
    # Advanced, --sequential with the update: what each stage's update fits. "pruned": the
    # layer's outputs on the inputs the pruned upstream gives it (W x'); "dense": the dense
    # model's outputs on the same samples (W x), from an extra dense copy in each stage pass.
    update_target: str = default("update_target")
    # How the budget is shared between layers: "group" (as --group selects: the same share per
    # layer, or scores competing across layers under global selection) or "sensitivity" (each
    # layer pruned alone and measured; see ``onnxprune.allocation``). None: the method's
    # default (``allocation_mode``).
    allocation: str | None = default("allocation")
    # --thorough: --group auto also tries the method's auto variants, and the sensitivity
    # allocation judges every layer (no judging budget); see ``PrunerState.auto_variants`` and
    # ``Sensitivity._over_judging_budget``.
    thorough: bool = default("thorough")
    # The fidelity metric decisions optimise and --min-score gates (``onnxprune.metric``): a
    # kind or a preset for every output, or only the --metric-output NAME[SLICE][=KIND] parts.
    metric: str = default("metric")
    metric_outputs: tuple[str, ...] = default("metric_outputs")
    # After pruning, scale each output row and shift its bias so the channel's mean and
    # variance over the calibration inputs are the dense layer's (``onnxprune.correction``).
    # None: the method's default (``ScoringMethod.default_stat_correction``).
    stat_correction: bool | None = default("stat_correction")
    # With the update: this many conjugate-gradient steps on the layer's least-squares
    # objective over the kept weights (``onnxprune.correction.refit_on_support``); 0: none.
    refit_steps: int = default("refit_steps")
    # With the update: the fixed mask is chosen again block by block (N:M: group by group) on
    # the updated weights with the OBS saliency, each row keeping its count per block
    # (``onnxprune.reconstruct.reselect_block``).
    reselect_mask: bool = default("reselect_mask")
    # With the update: this many conjugate-gradient steps on the support, applied once to the
    # built model after every decision was made on the plain update
    # (``onnxprune.refit_final``); 0: none.
    refit_final: int = default("refit_final")
    nm: NMPattern | None = field(init=False, repr=False, compare=False)
    overrides: tuple[LayerOverride, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Each field alone: kind, range, choice (``onnxprune.options``); then the combinations.
        check_fields(self, CONFIG)
        nm = parse_pattern(self.pattern)
        object.__setattr__(self, "nm", nm)
        if nm is not None and abs(self.sparsity - nm.sparsity) > 1e-9:
            raise UsageError(
                f"--pattern {nm} fixes sparsity at {nm.sparsity:g}; "
                f"--sparsity {self.sparsity:g} contradicts it (omit --sparsity)"
            )
        for pattern in self.exclude:
            try:
                re.compile(pattern)
            except re.error as err:
                raise UsageError(f"--exclude {pattern!r} is not a valid regex: {err}") from err
        overrides = tuple(parse_layer_override(text) for text in self.layer_overrides)
        object.__setattr__(self, "overrides", overrides)
        if nm is not None:
            for override in overrides:
                if not override.skip:
                    raise UsageError(
                        f"--layer {override.text!r}: an N:M --pattern fixes every layer's "
                        "sparsity; only 'skip' overrides combine with it"
                    )
        if self.update_target == "dense" and not self.sequential:
            raise UsageError(
                "--update-target dense needs --sequential (one-shot, every layer already sees "
                "the dense model's inputs)"
            )
        if self.update is None:
            object.__setattr__(self, "update", get_method(self.method).default_update)
        if self.refit_steps and not (self.update or get_method(self.method).adaptive_mask):
            raise UsageError("--refit-steps re-fits the update's weights: it needs --update")
        if self.refit_final and not (self.update or get_method(self.method).adaptive_mask):
            raise UsageError("--refit-final re-fits the update's weights: it needs --update")
        if self.refit_final and self.sequential:
            raise UsageError("--refit-final cannot be combined with --sequential")
        if self.reselect_mask and not self.update:
            raise UsageError("--reselect-mask works inside the update: it needs --update")
        if self.refit_steps and self.update_target == "dense":
            raise UsageError("--refit-steps cannot be combined with --update-target dense")
        if self.stat_correction is None:
            default_correction = get_method(self.method).default_stat_correction
            object.__setattr__(self, "stat_correction", default_correction)
        if self.stat_correction and self.update_target == "dense":
            # The dense model's input second moments are not gathered: no variance target.
            raise UsageError("--stat-correction cannot be combined with --update-target dense")
        if self.allocation in SENSITIVITY_ALLOCATIONS and nm is not None:
            raise UsageError(
                f"--allocation {self.allocation} cannot be combined with --pattern {nm}: an N:M "
                "pattern fixes every layer's sparsity"
            )
        Metric(self.metric, self.metric_outputs)  # validates both (UsageError)

    @property
    def allocation_mode(self) -> str:
        """The allocation that runs: the one asked for, else the method's default ("group"
        under an N:M pattern, which fixes every layer's share)."""
        if self.allocation is not None:
            return self.allocation
        if self.nm is not None:
            return "group"
        return get_method(self.method).default_allocation

    @property
    def target_sparsity(self) -> float:
        """The share of each prunable layer's weights to remove."""
        return self.nm.sparsity if self.nm is not None else float(self.sparsity)

    def is_excluded(self, *names: str) -> bool:
        return any(re.search(p, name) for p in self.exclude for name in names if name)

    def override_for(self, *names: str) -> LayerOverride | None:
        """The first --layer override whose regex matches one of the names (re.search)."""
        for override in self.overrides:
            if any(re.search(override.regex, name) for name in names if name):
                return override
        return None
