"""Every option, in declaration order (the order of --help within each heading, of
``prune()``'s signature and of the recipe and report fields)."""

from __future__ import annotations

from .artifact import ARTIFACT
from .gates import GATES_AND_FILES
from .pruning import PRUNING
from .schema import (
    CAL_SECTION,
    CONFIG,
    INT,
    NUMBER,
    Option,
    Range,
)

RECORDED: tuple[Option, ...] = (
    Option(
        "seed", INT, 0, "Seed for the held-out split and sample subset.",
        CONFIG, CAL_SECTION, range=Range(0),
    ),
    # Recorded in recipes, not options: the share of the calibration samples held out for the
    # fidelity check when no --eval is given; the most global selection removes from a layer.
    Option(
        "holdout_fraction", NUMBER, 0.1, "", CONFIG, internal=True, range=Range(0.0, 1.0),
    ),
    Option(
        "layer_cap", NUMBER, 0.98, "", CONFIG, internal=True,
        range=Range(0.0, 1.0, low_open=True, high_closed=True),
    ),
)  # fmt: skip

OPTIONS: tuple[Option, ...] = (*PRUNING, *GATES_AND_FILES, *ARTIFACT, *RECORDED)

BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}
# prune()'s keywords: every option that is not internal.
KEYWORDS: tuple[Option, ...] = tuple(o for o in OPTIONS if not o.internal)
