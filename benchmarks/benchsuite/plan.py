"""What a run measures: the quality grid's rows and every section's sizes (full or quick)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnxprune
from onnxprune.options import default
from onnxprune.scoring import METHODS

from .records import GridConfig

SPARSITIES = (0.5, 0.7, 0.8, 0.9)
QUICK_SPARSITIES = (0.5, 0.9)
GROUPS = ("row", "layer", "global")
MINILM_SAMPLES = 512
DEFAULT_MIN_ROW_WEIGHTS: int = default("min_row_weights")

SPEED_MODELS = ("digits_cnn", "minilm")
SPEED_METHODS = ("wanda", "contrib")
SPEED_SPARSITY = 0.5
SPEED_TARGETS = {"wanda": 1.5, "contrib": 3.0}
MEMORY_RATIO_OK = 1.25  # "flat": the larger run may use at most this much more peak RSS

# MiniLM runs take minutes each: its grid keeps the published methods and contrib's fast path.
# The fast path: contrib without the OBS update and without sensitivity allocation (the default
# before both were measured to win).
FAST = "contrib, --no-update --allocation group"
# The opt-in that spends more time on the default's decisions (variant trials, every layer
# judged): measured beside the default on every model.
THOROUGH = "contrib, --thorough"
SHORT_KINDS = ("method", "fast", "thorough")
MOBILE_PATTERN = "2:4"  # the mobile grid's extra column: N:M instead of a sparsity


@dataclass(frozen=True)
class Plan:
    """The sizes of a run. Quick: few calibration samples, one repetition, small memory runs."""

    quality_samples: int | None = None  # calibration samples of the digits grid (None: all)
    speed_samples: int = 512
    speed_reps: int = 3
    memory_samples: tuple[int, int] = (64, 1024)
    # Grid row kinds measured on the digits models (None: all); MiniLM always gets SHORT_KINDS.
    digits_kinds: tuple[str, ...] | None = None


FULL = Plan()
QUICK = Plan(
    quality_samples=64,
    speed_samples=64,
    speed_reps=1,
    memory_samples=(16, 64),
    digits_kinds=SHORT_KINDS,
)


def _default_group(name: str) -> str:
    return f"{METHODS[name].default_group} (default)"


def _variant_configs(public: Sequence[str]) -> list[GridConfig]:
    """Options that change the algorithm: --update, the fast path, --sequential, sensitivity."""
    mrw, label = DEFAULT_MIN_ROW_WEIGHTS, _default_group
    configs = [
        GridConfig(f"{m}, --update", m, None, mrw, "update", label(m), update=True)
        for m in ("wanda", "magnitude")
        if m in public
    ]
    if "contrib" in public:
        configs += [
            GridConfig(FAST, "contrib", None, mrw, "fast", label("contrib"), update=False,
                       allocation="group"),
            GridConfig("contrib, --sequential", "contrib", None, mrw, "sequential",
                       label("contrib"), sequential=True),
            GridConfig(THOROUGH, "contrib", None, mrw, "thorough", label("contrib"),
                       thorough=True),
        ]  # fmt: skip
    if "sparsegpt" in public:
        configs.append(
            GridConfig("sparsegpt, --allocation sensitivity", "sparsegpt", None, mrw,
                       "sensitivity", label("sparsegpt"), allocation="sensitivity")
        )  # fmt: skip
    return configs


def grid_configs(methods_filter: Sequence[str] | None) -> list[GridConfig]:
    """Every public method with its default group, the hidden ``contrib-*`` ablations,
    ``contrib`` with each group, the baselines with ``min_row_weights=0``, then the variants."""
    public = onnxprune.available_methods()
    mrw, label = DEFAULT_MIN_ROW_WEIGHTS, _default_group
    configs = [GridConfig(m, m, None, mrw, "method", label(m)) for m in public]
    configs += [
        GridConfig(name, name, None, mrw, "ablation", label(name))
        for name in METHODS
        if name.startswith("contrib-")
    ]
    configs += [
        GridConfig(f"contrib, group={g}", "contrib", g, mrw, "group", g)
        for g in GROUPS
        if "contrib" in METHODS
    ]
    configs += [
        GridConfig(f"{m}, min_row_weights=0", m, None, 0, "baseline-mrw0", label(m))
        for m in public
        if not m.startswith("contrib")
    ]
    configs += _variant_configs(public)
    if methods_filter:
        configs = [c for c in configs if c.method in methods_filter]
    return configs
