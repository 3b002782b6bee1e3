"""The fidelity gates, what a failed gate keeps, --sweep, and the run's side files."""

from __future__ import annotations

from .schema import (
    FLAG,
    GATES,
    GATES_SECTION,
    NUMBER,
    NUMBERS,
    PATH,
    RUN,
    Option,
    Range,
)

GATES_AND_FILES: tuple[Option, ...] = (
    Option(
        "min_score", NUMBER, None, "Gate: the --metric score >= X (in [0, 1]; 1 = identical).",
        GATES, GATES_SECTION, optional=True, range=Range(-1.0, 1.0, high_closed=True),
    ),
    Option(
        "min_cosine", NUMBER, None, "Gate: every output's cosine >= X.",
        GATES, GATES_SECTION, optional=True, range=Range(-1.0, 1.0, high_closed=True),
    ),
    Option(
        "min_top1", NUMBER, None, "Gate: top-1 agreement >= X.",
        GATES, GATES_SECTION, optional=True, range=Range(-1.0, 1.0, high_closed=True),
    ),
    Option(
        "max_abs_error", NUMBER, None, "Gate: max abs error <= X.",
        GATES, GATES_SECTION, optional=True, range=Range(0.0),
    ),
    Option(
        "max_accuracy_drop", NUMBER, None,
        "Gate (needs --eval labels): original accuracy - pruned accuracy <= X.",
        GATES, GATES_SECTION, optional=True, range=Range(0.0),
    ),
    Option(
        "keep_on_fail", FLAG, False, "Keep the output model even when a gate fails.",
        RUN, GATES_SECTION,
    ),
    Option(
        "sweep", NUMBERS, (),
        "Also measure fidelity at these sparsities (one calibration pass); shown in the "
        "report and in --plot.",
        RUN, GATES_SECTION, cli={"metavar": "S1,S2,..."},
    ),
    Option(
        "plot", PATH, None,
        "Draw fidelity vs sparsity and per-layer sparsity to this PNG (needs matplotlib).",
        RUN, optional=True,
    ),
    Option(
        "recipe", PATH, None,
        "Replay a saved <out>.recipe.json exactly (its settings replace the pruning options).",
        RUN, GATES_SECTION, optional=True,
    ),
    Option(
        "report_path", PATH, None, "Write the report as JSON to this file.",
        RUN, optional=True, flags=("--report",),
    ),
)  # fmt: skip
