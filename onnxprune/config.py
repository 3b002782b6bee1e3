"""Run configuration: frozen, validated on construction, no logic beyond validation."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .errors import UsageError
from .metric import Metric

GROUPS = ("row", "layer", "global", "auto")
UPDATE_TARGETS = ("pruned", "dense")
ALLOCATIONS = ("group", "sensitivity", "measured")
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
    from .scoring import available_methods  # local: scoring imports config types

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


# The JSON type of every PruneConfig field, checked on construction: a recipe (JSON) and the
# Python API go through the same checks as the command line. bool is not accepted where a
# number is meant (it is an int in Python), and a string is not a list of strings.
_NUMBER = "a number"
_INT = "an integer"
_TEXT = "a string"
_TEXTS = "a list of strings"
_FLAG = "true or false"
FIELD_TYPES: dict[str, tuple[str, bool]] = {  # field -> (kind, None allowed)
    "sparsity": (_NUMBER, False),
    "method": (_TEXT, False),
    "pattern": (_TEXT, False),
    "group": (_TEXT, True),
    "exclude": (_TEXTS, False),
    "num_samples": (_INT, True),
    "batch_size": (_INT, False),
    "seed": (_INT, False),
    "holdout_fraction": (_NUMBER, False),
    "layer_cap": (_NUMBER, False),
    "min_row_weights": (_INT, False),
    "update": (_FLAG, True),
    "sample_mask": (_TEXT, True),
    "structured": (_NUMBER, False),
    "structured_score": (_TEXT, False),
    "structured_multiple": (_INT, False),
    "layer_overrides": (_TEXTS, False),
    "sequential": (_FLAG, False),
    "stages": (_INT, False),
    "update_target": (_TEXT, False),
    "allocation": (_TEXT, True),
    "stat_correction": (_FLAG, True),
    "refit_steps": (_INT, False),
    "reselect_mask": (_FLAG, False),
    "refit_final": (_INT, False),
}


def _has_kind(value: object, kind: str) -> bool:
    if kind == _FLAG:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == _NUMBER:
        return isinstance(value, (int, float)) and math.isfinite(value)
    if kind == _INT:
        return isinstance(value, int)
    if kind == _TEXT:
        return isinstance(value, str)
    return isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value)


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def check_field_types(config: object) -> None:
    """UsageError naming the option when a field has the wrong type (see FIELD_TYPES)."""
    for name, (kind, optional) in FIELD_TYPES.items():
        value = getattr(config, name)
        if value is None and optional:
            continue
        if not _has_kind(value, kind):
            raise UsageError(f"{option_name(name)} must be {kind}, got {value!r}")


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
    # None: the method's default (``ScoringMethod.default_update``), resolved on construction.
    update: bool | None = None
    # Input whose zeros mark padding ([batch, seq]); None: detect attention_mask; "none": off.
    sample_mask: str | None = None
    # Share of the hidden units (neurons, channels, heads) to remove structurally, before any
    # weight pruning; 0 disables.
    structured: float = 0.0
    # How --structured ranks units (see ``onnxprune.structure.scores``).
    structured_score: str = "variance"
    # --structured-multiple: each group keeps a multiple of this many channels (int8 / fp16
    # kernels work in blocks of 8 or 16); 1 keeps exactly the share --structured asks for.
    structured_multiple: int = 1
    # --layer REGEX=SPEC, in order: the first pattern matching a layer's name decides.
    layer_overrides: tuple[str, ...] = ()
    # --sequential: calibrate and prune in topological stages (at most ``stages`` of them;
    # 0: one stage per depth), each stage's statistics from the model pruned upstream.
    sequential: bool = False
    stages: int = 8
    # Advanced, --sequential with the update: what each stage's update fits. "pruned": the
    # layer's outputs on the inputs the pruned upstream gives it (W x'); "dense": the dense
    # model's outputs on the same samples (W x), from an extra dense copy in each stage pass.
    update_target: str = "pruned"
    # How the budget is shared between layers: "group" (as --group selects: the same share per
    # layer, or scores competing across layers under global selection) or "sensitivity" (each
    # layer pruned alone and measured; see ``onnxprune.allocation``). None: the method's
    # default (``allocation_mode``).
    allocation: str | None = None
    # The fidelity metric decisions optimise and --min-score gates (``onnxprune.metric``): a
    # kind or a preset for every output, or only the --metric-output NAME[SLICE][=KIND] parts.
    metric: str = "standardized"
    metric_outputs: tuple[str, ...] = ()
    # After pruning, scale each output row and shift its bias so the channel's mean and
    # variance over the calibration inputs are the dense layer's (``onnxprune.correction``).
    # None: the method's default (``ScoringMethod.default_stat_correction``).
    stat_correction: bool | None = None
    # With the update: this many conjugate-gradient steps on the layer's least-squares
    # objective over the kept weights (``onnxprune.correction.refit_on_support``); 0: none.
    refit_steps: int = 0
    # With the update: the fixed mask is chosen again block by block (N:M: group by group) on
    # the updated weights with the OBS saliency, each row keeping its count per block
    # (``onnxprune.reconstruct.Reselect``).
    reselect_mask: bool = False
    # With the update: this many conjugate-gradient steps on the support, applied once to the
    # built model after every decision was made on the plain update
    # (``onnxprune.refit_final``); 0: none.
    refit_final: int = 0
    nm: NMPattern | None = field(init=False, repr=False, compare=False)
    overrides: tuple[LayerOverride, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # local: scoring imports config types
        from .scoring import available_methods, get_method

        check_field_types(self)
        if self.seed < 0:
            raise UsageError(f"--seed must be >= 0, got {self.seed}")
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
        overrides = tuple(parse_layer_override(text) for text in self.layer_overrides)
        object.__setattr__(self, "overrides", overrides)
        if nm is not None:
            for override in overrides:
                if not override.skip:
                    raise UsageError(
                        f"--layer {override.text!r}: an N:M --pattern fixes every layer's "
                        "sparsity; only 'skip' overrides combine with it"
                    )
        if self.update_target not in UPDATE_TARGETS:
            raise UsageError(
                f"update target must be one of {', '.join(UPDATE_TARGETS)}, "
                f"got {self.update_target!r}"
            )
        if self.update_target == "dense" and not self.sequential:
            raise UsageError(
                "--update-target dense needs --sequential (one-shot, every layer already sees "
                "the dense model's inputs)"
            )
        if self.update is None:
            object.__setattr__(self, "update", get_method(self.method).default_update)
        if self.refit_steps < 0:
            raise UsageError(f"--refit-steps must be >= 0, got {self.refit_steps}")
        if self.refit_steps and not (self.update or get_method(self.method).adaptive_mask):
            raise UsageError("--refit-steps re-fits the update's weights: it needs --update")
        if self.refit_final < 0:
            raise UsageError(f"--refit-final must be >= 0, got {self.refit_final}")
        if self.refit_final and not (self.update or get_method(self.method).adaptive_mask):
            raise UsageError("--refit-final re-fits the update's weights: it needs --update")
        if self.refit_final and self.sequential:
            raise UsageError("--refit-final cannot be combined with --sequential")
        if self.reselect_mask and not self.update:
            raise UsageError("--reselect-mask works inside the update: it needs --update")
        if self.refit_steps and self.update_target == "dense":
            raise UsageError("--refit-steps cannot be combined with --update-target dense")
        if self.stat_correction is None:
            default = get_method(self.method).default_stat_correction
            object.__setattr__(self, "stat_correction", default)
        if self.stat_correction and self.update_target == "dense":
            # The dense model's input second moments are not gathered: no variance target.
            raise UsageError("--stat-correction cannot be combined with --update-target dense")
        if self.allocation is not None and self.allocation not in ALLOCATIONS:
            raise UsageError(
                f"--allocation must be one of {', '.join(ALLOCATIONS)}, got {self.allocation!r}"
            )
        if self.allocation in SENSITIVITY_ALLOCATIONS and nm is not None:
            raise UsageError(
                f"--allocation {self.allocation} cannot be combined with --pattern {nm}: an N:M "
                "pattern fixes every layer's sparsity"
            )
        if self.stages < 0:
            raise UsageError(f"--stages must be >= 0, got {self.stages}")
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
        if not 1 <= self.structured_multiple <= 1024:
            raise UsageError(
                f"--structured-multiple must be in [1, 1024], got {self.structured_multiple}"
            )
        from .structure.scores import UNIT_SCORERS

        if self.structured_score not in UNIT_SCORERS:
            choices = ", ".join(UNIT_SCORERS)
            raise UsageError(
                f"unknown --structured-score {self.structured_score!r}; choose one of: {choices}"
            )
        Metric(self.metric, self.metric_outputs)  # validates both (UsageError)
        if not 0.0 < self.layer_cap <= 1.0:
            raise UsageError(f"layer cap must be in (0, 1], got {self.layer_cap}")

    @property
    def allocation_mode(self) -> str:
        """The allocation that runs: the one asked for, else the method's default ("group"
        under an N:M pattern, which fixes every layer's share)."""
        if self.allocation is not None:
            return self.allocation
        if self.nm is not None:
            return "group"
        from .scoring import get_method

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
