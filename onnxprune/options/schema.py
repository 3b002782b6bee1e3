"""What an option is: its JSON kind, where its value goes, its range, its --help heading.

The options themselves are declared in ``pruning``, ``gates`` and ``artifact`` (by what they
decide) and put in order in ``table``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..scoring import available_methods

# Where an option's value goes.
CONFIG = "config"  # PruneConfig: decides which weights are removed; recorded in the recipe
DEPLOY = "deploy"  # DeployConfig: what the written artifact is; recorded in the recipe
GATES = "gates"  # Gates: fidelity limits
RUN = "run"  # prune() itself: data, paths, search / sweep (not recorded)

# JSON kinds: what a recipe or a Python caller must give (the CLI's click types match).
NUMBER = "a number"
INT = "an integer"
TEXT = "a string"
TEXTS = "a list of strings"
FLAG = "true or false"
NUMBERS = "a list of numbers"
PATH = "a path"
SOURCE = "a data source"  # a path or a Python source (``onnxprune.calibrate.sources``)
SPEC = "a JSON object, JSON text or a path"

# --help headings, in display order (options without one land in the last).
SECTIONS = ("Basics", "Calibration data", "Method", "Structure", "Gates and search", "Output")
CAL_SECTION, METHOD_SECTION, STRUCT_SECTION, GATES_SECTION = SECTIONS[1:5]

GROUPS = ("row", "layer", "global", "auto")
UPDATE_TARGETS = ("pruned", "dense")
ALLOCATIONS = ("group", "sensitivity", "measured")
# The artifact (``onnxprune.deploy``).
QUANTIZE_CHOICES = ("none", "int8", "int8-dynamic")
QUANT_FORMATS = ("qdq", "qoperator")
QUANT_CALIBRATIONS = ("minmax", "entropy", "percentile")
QUANT_RANGES = ("reduced", "full")
STORAGES = ("dense", "sparse")
OUTPUT_FORMATS = ("onnx", "ort")

# A recipe that lacks a ``config`` option with this marker is incomplete.
REQUIRED = object()
_SAME = object()

CALIB_HELP = (
    "Calibration data: .npz, a directory of .npz or <input>.npy files, test_data_set_* "
    "directories, sentences.txt / .jsonl (with a tokenizer), or a folder of images (with "
    "--preprocess)."
)


def method_names(include_hidden: bool) -> Sequence[str]:
    return available_methods(include_hidden=include_hidden)


def unit_scorer_names(include_hidden: bool) -> Sequence[str]:
    # local: the structure package imports the config, which imports these options
    from ..structure.scores import available_unit_scorers

    return available_unit_scorers(include_hidden=include_hidden)


def unit_allocation_names(include_hidden: bool) -> Sequence[str]:
    from ..structure.scores import available_unit_allocations  # local: as unit_scorer_names

    return available_unit_allocations(include_hidden=include_hidden)


@dataclass(frozen=True)
class Range:
    """``low <= value`` (``low < value`` when ``low_open``), and ``value < high`` or
    ``value <= high`` (``high_closed``) when ``high`` is given."""

    low: float
    high: float | None = None
    low_open: bool = False
    high_closed: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        if self.high is None:
            return above
        return above and (value <= self.high if self.high_closed else value < self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        left, right = "(" if self.low_open else "[", "]" if self.high_closed else ")"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


@dataclass(frozen=True)
class Option:
    """One option: ``name`` is the prune() keyword and the field of the configuration it goes
    to (``goes_to``), ``kind`` its JSON kind, ``help`` its --help text under ``section``."""

    name: str
    kind: str
    default: Any
    help: str
    goes_to: str
    section: str = SECTIONS[-1]
    optional: bool = False  # None is a valid value (the default's "decided later")
    # A fixed tuple, or a registry lookup ``(include_hidden) -> names``: the CLI lists the
    # shown ones; the Python API and recipes also accept hidden ones (ablation variants).
    choices: tuple[str, ...] | Callable[[bool], Sequence[str]] | None = None
    range: Range | None = None
    # CLI spelling (default ``--name-with-dashes``) and extra click attributes.
    flags: tuple[str, ...] = ()
    cli: Mapping[str, Any] = field(default_factory=dict)
    # Choices checked by the click type (an error before the run) or only here (--quantize
    # and friends print no choice list in --help).
    click_choice: bool = True
    # Internal: a PruneConfig field recorded in recipes, neither a CLI option nor a keyword.
    internal: bool = False
    # Recipes: what a recipe without this field replays (default: ``default``; REQUIRED:
    # refused as incomplete), and whether it is written only when it differs from that
    # (advanced options: recipes of runs that leave them alone stay as they were).
    recipe_absent: Any = _SAME
    recipe_sparse: bool = False

    @property
    def flag(self) -> str:
        """The option as the user writes it (``--layer``, ``--format``...)."""
        if self.internal:
            return self.name.replace("_", " ")
        for spelling in self.flags or (self.name,):
            if spelling.startswith("--"):
                return spelling.split("/")[0]
        return "--" + self.name.replace("_", "-")

    @property
    def absent(self) -> Any:
        return self.default if self.recipe_absent is _SAME else self.recipe_absent

    def shown_choices(self) -> Sequence[str]:
        if self.choices is None:
            return ()
        return self.choices if isinstance(self.choices, tuple) else self.choices(False)

    def problem(self, value: object) -> str | None:
        """Why ``value`` is not valid for this option (one line), or None."""
        if value is None and self.optional:
            return None
        if self.choices is not None:
            if isinstance(self.choices, tuple):
                if not isinstance(value, str) or value not in self.choices:
                    return f"{self.flag} must be one of {', '.join(self.choices)}, got {value!r}"
            elif not isinstance(value, str) or value not in self.choices(True):
                shown = ", ".join(self.choices(False))
                return f"unknown {self.flag} {value!r}; choose one of: {shown}"
            return None
        if not _has_kind(value, self.kind):
            # Only a recipe or a Python caller gives a value of the wrong kind (click converts):
            # name it as they wrote it (``layer_overrides`` -> --layer-overrides).
            keyword = self.flag if self.internal else "--" + self.name.replace("_", "-")
            return f"{keyword} must be {self.kind}, got {value!r}"
        if self.range is not None and not self.range.holds(value):  # type: ignore[arg-type]
            return f"{self.flag} must be {self.range}, got {value!r}"
        return None


def _has_kind(value: object, kind: str) -> bool:
    # bool is not accepted where a number is meant (it is an int in Python), and a string is
    # not a list of strings.
    if kind == FLAG:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == NUMBER:
        return isinstance(value, (int, float)) and math.isfinite(value)
    if kind == INT:
        return isinstance(value, int)
    if kind == TEXT:
        return isinstance(value, str)
    if kind == PATH:
        return isinstance(value, (str, Path))
    if kind == SPEC:
        return isinstance(value, (str, Path, dict))
    if kind == SOURCE:
        return True  # checked when read (``resolve_data``)
    items = (int, float) if kind == NUMBERS else (str,)
    return isinstance(value, (tuple, list)) and all(
        isinstance(v, items) and not isinstance(v, bool) for v in value
    )
