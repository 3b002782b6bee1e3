"""The options of ``onnxprune MODEL`` / ``prune()``, each declared once.

One :class:`Option` per option holds its name (the ``prune()`` keyword, the ``PruneConfig`` /
``DeployConfig`` / ``Gates`` field, the recipe and ``report.arguments`` key), its JSON kind,
default, help text, choices (a tuple, or a registry lookup), range, CLI spelling and help
heading, and where its value goes. From this table:

- ``cli.py`` generates the click options of the prune command (``click_options``);
- ``prune(**options)`` rejects unknown keywords and values of the wrong kind (``resolve``);
- ``PruneConfig``, ``DeployConfig`` and ``Gates`` take their defaults (``default``) and check
  their fields on construction (``check_fields``);
- ``recipe.py`` writes and reads the ``config`` options (``recipe_fields``), and ``api.py``
  fills ``report.arguments`` from the ``config`` and ``deploy`` options.

A new option is one entry here plus the code that uses it (and, for a ``config`` / ``deploy``
/ ``gates`` option, the typed field that carries it, whose default comes from here).
Checks that involve several options (``--pattern`` N:M against ``--sparsity``, ``--refit-steps``
needs the update...) stay with the configuration they constrain.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError

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


def _methods(include_hidden: bool) -> Sequence[str]:
    from .scoring import available_methods  # local: scoring imports config, which imports this

    return available_methods(include_hidden=include_hidden)


def _unit_scorers(include_hidden: bool) -> Sequence[str]:
    from .structure.scores import available_unit_scorers  # local: as _methods

    return available_unit_scorers(include_hidden=include_hidden)


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


_CAL, _METHOD, _STRUCT, _GATES = SECTIONS[1], SECTIONS[2], SECTIONS[3], SECTIONS[4]

# In --help order within each heading.
OPTIONS: tuple[Option, ...] = (
    Option(
        "calib", SOURCE, None, CALIB_HELP + " Required unless --method magnitude with --eval.",
        RUN, "Basics", optional=True,
    ),
    Option(
        "model_file", TEXT, None,
        "MODEL is a directory with several .onnx files: prune this one (relative path).",
        RUN, "Basics", optional=True, cli={"metavar": "NAME"},
    ),
    Option(
        "tokenizer", PATH, None,
        "Text calibration: a tokenizer.json (or its directory); default: beside the model.",
        RUN, _CAL, optional=True,
    ),
    Option(
        "max_length", INT, 128, "Text calibration: truncate sequences to this many tokens.",
        RUN, _CAL, range=Range(1), cli={"type": "int>=1"},
    ),
    Option(
        "preprocess", SPEC, None,
        "Image calibration (--calib a folder of images): size, resize, mean/std or "
        "scale/offset, channels, layout, dtype, as a JSON file or inline JSON (see README).",
        RUN, _CAL, optional=True, cli={"metavar": "SPEC.json|JSON"},
    ),
    Option(
        # prune() also takes "auto" or None (see ``api``); PruneConfig holds the number.
        "sparsity", NUMBER, None,
        "Share of the prunable weights to remove, in [0, 1), over all pruned layers; or "
        "'auto' with a gate: the highest sparsity that passes it. Required unless --pattern "
        "N:M or --recipe fixes it.",
        CONFIG, "Basics", range=Range(0.0, 1.0), cli={"type": str}, recipe_absent=REQUIRED,
    ),
    Option(
        "output", PATH, None,
        "Output model (default: <model>.pruned.onnx). Never the input.",
        RUN, "Basics", optional=True, flags=("-o", "--output"),
    ),
    Option("method", TEXT, "contrib", "Scoring method.", CONFIG, _METHOD, choices=_methods),
    Option(
        "pattern", TEXT, "unstructured",
        "'unstructured', or N:M such as 2:4 / 4:8 along the reduction axis.",
        CONFIG, _STRUCT,
    ),
    Option(
        "group", TEXT, None,
        "Where weights compete: per output row, per layer, over all layers, or auto (try "
        "row and global, keep the one closer to the original). Default: the method's own.",
        CONFIG, _METHOD, optional=True, choices=GROUPS,
    ),
    Option(
        "exclude", TEXTS, (), "Leave layers whose node or weight name matches (repeatable).",
        CONFIG, _STRUCT, cli={"metavar": "REGEX"},
    ),
    Option(
        "layer_overrides", TEXTS, (),
        "Per-layer override for layers whose node or weight name matches REGEX (repeatable, "
        "first match wins). SPEC: 'skip' (like --exclude), S (exactly this sparsity) or "
        "S:METHOD (also scored by METHOD). The other layers share the rest of --sparsity.",
        CONFIG, _STRUCT, flags=("--layer",), cli={"metavar": "REGEX=SPEC"},
    ),
    Option(
        "sequential", FLAG, False,
        "Calibrate and prune in topological stages: each stage's statistics come from the "
        "model already pruned upstream (one extra calibration pass per stage).",
        CONFIG, _METHOD,
    ),
    Option(
        "stages", INT, 8,
        "--sequential: at most this many stages (consecutive depths are merged); 0: one "
        "stage per layer depth.",
        CONFIG, _METHOD, range=Range(0),
    ),
    Option(
        "update_target", TEXT, "pruned",
        "Advanced, --sequential with --update (or sparsegpt): each stage's update fits the "
        "layer's outputs on the pruned upstream's inputs (pruned) or the dense model's outputs "
        "on the same samples (dense; each stage pass also runs the dense model).",
        CONFIG, _METHOD, choices=UPDATE_TARGETS, recipe_sparse=True,
    ),
    Option(
        "allocation", TEXT, None,
        "How the sparsity budget is shared between layers. group: as --group selects. "
        "sensitivity: each layer is pruned alone at its share and at the highest of 5 "
        "sparsities around it, the loss of output score judged on the first 4-16 calibration "
        "samples (about 8k output values), "
        "the others interpolated along the layer's local error; the budget goes where it hurts "
        "least. measured: every one of the 5 sparsities judged on 64 samples (about 10x the "
        "cost). Default: the method's own (contrib: sensitivity; the other methods: group).",
        CONFIG, _METHOD, optional=True, choices=ALLOCATIONS,
    ),
    Option(
        "min_row_weights", INT, 8,
        "Every neuron/filter keeps at least this many weights (tiny layers such as "
        "depthwise 3x3 or a stem conv stay dense); other layers give more. 0: off.",
        CONFIG, _METHOD, range=Range(0),
    ),
    Option(
        "update", FLAG, None,
        "Re-fit each layer's remaining weights to its calibration outputs (SparseGPT-style "
        "reconstruction; gathers a K x K input correlation per layer). Default: the method's "
        "own (contrib: on; the other methods: off, as published).",
        CONFIG, _METHOD, optional=True, flags=("--update/--no-update",),
    ),
    Option(
        "stat_correction", FLAG, None,
        "After pruning, scale each output channel's weights and shift its bias so its mean "
        "and variance over the calibration inputs are the dense layer's (gathers the K x K "
        "input correlation, as --update). Default: off (it loses on EfficientNet-Lite0; "
        "BENCHMARKS.md, post-pruning repairs).",
        CONFIG, _METHOD, optional=True, flags=("--stat-correction/--no-stat-correction",),
        # Recipes written before the option existed were pruned without it.
        recipe_absent=False, recipe_sparse=True,
    ),
    Option(
        "refit_steps", INT, 0,
        "With --update: this many conjugate-gradient steps on each layer's least-squares "
        "objective (centred inputs) over the kept weights after the update; each step costs "
        "about one out x K x K product per layer and candidate. 0: off.",
        CONFIG, _METHOD, range=Range(0), recipe_sparse=True,
    ),
    Option(
        "reselect_mask", FLAG, False,
        "With --update: choose the method's mask again block by block (N:M: group by group) "
        "on the updated weights with the OBS saliency w^2 / [H^-1]_jj, every row removing as "
        "many weights per block as the method's mask does. Default: off.",
        CONFIG, _METHOD, flags=("--reselect-mask/--no-reselect-mask",), recipe_sparse=True,
    ),
    Option(
        "refit_final", INT, 0,
        "With --update: this many conjugate-gradient steps on each layer's least-squares "
        "objective over the kept weights, once, on the chosen model (every decision is made on "
        "the plain update; cheaper and safer than --refit-steps). 0: off.",
        CONFIG, _METHOD, range=Range(0), recipe_sparse=True,
    ),
    Option(
        "sample_mask", TEXT, None,
        "Input [batch, seq] whose zeros mark padding, so statistics count real tokens only "
        "(default: an input named attention_mask, if any; 'none' turns it off).",
        CONFIG, _CAL, optional=True, cli={"metavar": "INPUT|none"},
    ),
    Option(
        "structured", NUMBER, 0.0,
        "Remove this share of the hidden units (MLP neurons, Conv channels, attention heads) "
        "so that tensors really shrink; combines with --sparsity (shrink first, then prune "
        "what is left).",
        CONFIG, _STRUCT, range=Range(0.0, 1.0), cli={"metavar": "R"},
    ),
    Option(
        "structured_score", TEXT, "variance",
        "How --structured ranks units: variance (output variance x reader weight norm, "
        "mean-compensated) or l1 (weight L1 norm, the usual baseline).",
        CONFIG, _STRUCT, choices=_unit_scorers,
    ),
    Option(
        "structured_multiple", INT, 1,
        "With --structured: round each group's kept channels to a multiple of N (8 or 16 "
        "keep int8 / fp16 kernels on their fast path); 1 keeps exactly the share asked for.",
        CONFIG, _STRUCT, range=Range(1, 1024, high_closed=True), cli={"metavar": "N"},
    ),
    Option(
        "num_samples", INT, None, "Use at most N calibration samples.",
        CONFIG, _CAL, optional=True, range=Range(1),
    ),
    Option("batch_size", INT, 32, "Samples per onnxruntime batch.", CONFIG, _CAL, range=Range(1)),
    Option(
        "eval_data", SOURCE, None,
        "Evaluation data (same formats, optional 'labels'); default: hold out part of the "
        "calibration set.",
        RUN, _CAL, optional=True, flags=("--eval",),
    ),
    Option(
        "metric", TEXT, "standardized",
        "What fidelity means: the score --group auto, --allocation sensitivity and "
        "--sparsity auto optimise and --min-score gates. Kinds: standardized (each output "
        "feature scaled by the original's spread), cosine, pooled, top1, top5, topK, "
        "agreement, cells[@T]; presets: classifier, detector, encoder (README 'Choosing the "
        "metric').",
        CONFIG, _GATES, cli={"metavar": "KIND|PRESET"},
    ),
    Option(
        "metric_outputs", TEXTS, (),
        "Score only this output or part of it (repeatable), e.g. 'output0[:,4:]=cells'; "
        "without =KIND, the --metric kind.",
        CONFIG, _GATES, flags=("--metric-output",), cli={"metavar": "NAME[SLICE][=KIND]"},
    ),
    Option(
        "min_score", NUMBER, None, "Gate: the --metric score >= X (in [0, 1]; 1 = identical).",
        GATES, _GATES, optional=True, range=Range(-1.0, 1.0, high_closed=True),
    ),
    Option(
        "min_cosine", NUMBER, None, "Gate: every output's cosine >= X.",
        GATES, _GATES, optional=True, range=Range(-1.0, 1.0, high_closed=True),
    ),
    Option(
        "min_top1", NUMBER, None, "Gate: top-1 agreement >= X.",
        GATES, _GATES, optional=True, range=Range(-1.0, 1.0, high_closed=True),
    ),
    Option(
        "max_abs_error", NUMBER, None, "Gate: max abs error <= X.",
        GATES, _GATES, optional=True, range=Range(0.0),
    ),
    Option(
        "max_accuracy_drop", NUMBER, None,
        "Gate (needs --eval labels): original accuracy - pruned accuracy <= X.",
        GATES, _GATES, optional=True, range=Range(0.0),
    ),
    Option(
        "keep_on_fail", FLAG, False, "Keep the output model even when a gate fails.",
        RUN, _GATES,
    ),
    Option(
        "sweep", NUMBERS, (),
        "Also measure fidelity at these sparsities (one calibration pass); shown in the "
        "report and in --plot.",
        RUN, _GATES, cli={"metavar": "S1,S2,..."},
    ),
    Option(
        "plot", PATH, None,
        "Draw fidelity vs sparsity and per-layer sparsity to this PNG (needs matplotlib).",
        RUN, optional=True,
    ),
    Option(
        "recipe", PATH, None,
        "Replay a saved <out>.recipe.json exactly (its settings replace the pruning options).",
        RUN, _GATES, optional=True,
    ),
    Option(
        "report_path", PATH, None, "Write the report as JSON to this file.",
        RUN, optional=True, flags=("--report",),
    ),
    Option(
        "quantize", TEXT, "none",
        "none, int8 or int8-dynamic: after pruning, int8 quantization with onnxruntime "
        "(int8: static, calibrated on the run's calibration data; int8-dynamic: activations "
        "quantized at run time, best for transformers). Symmetric weights keep pruned zeros. "
        "The fidelity check, gates and --sparsity auto judge the quantized file.",
        DEPLOY, choices=QUANTIZE_CHOICES, click_choice=False,
    ),
    Option(
        "quant_format", TEXT, None,
        "With --quantize int8: qdq (default) (QuantizeLinear/DequantizeLinear pairs) or "
        "qoperator (QLinearConv, QLinearMatMul...).",
        DEPLOY, optional=True, choices=QUANT_FORMATS, click_choice=False,
    ),
    Option(
        "per_channel", FLAG, True,
        "With --quantize: one weight scale per output channel, or one per tensor.",
        DEPLOY, flags=("--per-channel/--per-tensor",),
    ),
    Option(
        "quant_calibration", TEXT, None,
        "With --quantize int8: activation range calibration, minmax (default), entropy or "
        "percentile.",
        DEPLOY, optional=True, choices=QUANT_CALIBRATIONS, click_choice=False,
    ),
    Option(
        "quant_range", TEXT, None,
        "With --quantize: int8 weights in 7 bits (reduced; default for int8: onnxruntime's "
        "x86 kernels without VNNI saturate on full-range pairs) or 8 bits (full; default for "
        "int8-dynamic; ARM and VNNI CPUs do not saturate).",
        DEPLOY, optional=True, choices=QUANT_RANGES, click_choice=False,
    ),
    Option(
        "storage", TEXT, "dense",
        "dense, or sparse: store each weight that is smaller so as an ONNX sparse_initializer "
        "(onnxruntime densifies it at load: a smaller file, not a faster model).",
        DEPLOY, choices=STORAGES, click_choice=False,
    ),
    Option(
        "output_format", TEXT, "onnx",
        "onnx, or ort: write onnxruntime's mobile format (.ort, by onnxruntime's own "
        "converter; sparse weights stay sparse). The output must be named NAME.ort.",
        DEPLOY, flags=("--format",), choices=OUTPUT_FORMATS,
        click_choice=False,
    ),
    Option(
        "embedding_bits", INT, None,
        "With --quantize: embedding tables (Gather on a weight) in 8 bits (default; one scale "
        "per table) or 4 (onnxruntime's GatherBlockQuantized, int4 blocks of 32: half the "
        "bytes).",
        DEPLOY, optional=True,  # 8 or 4: checked by DeployConfig
    ),
    Option(
        "embedding_sparsity", NUMBER, 0.0,
        "Zero this fraction of the smallest entries of every row of each embedding table "
        "(never a whole row); the tables are otherwise never pruned.",
        DEPLOY, range=Range(0, 1),
    ),
    Option(
        "seed", INT, 0, "Seed for the held-out split and sample subset.",
        CONFIG, _CAL, range=Range(0),
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

BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}
# prune()'s keywords: every option that is not internal.
KEYWORDS: tuple[Option, ...] = tuple(o for o in OPTIONS if not o.internal)


def default(name: str) -> Any:
    """The declared default of option ``name`` (for the typed fields that carry it)."""
    return BY_NAME[name].default


def options_for(goes_to: str, *, internal: bool = True) -> tuple[Option, ...]:
    return tuple(o for o in OPTIONS if o.goes_to == goes_to and (internal or not o.internal))


def check_fields(values: object, goes_to: str) -> None:
    """UsageError naming the option for the first field of ``values`` (a PruneConfig,
    DeployConfig or Gates) that is of the wrong kind, out of range or not a choice."""
    for option in options_for(goes_to):
        problem = option.problem(getattr(values, option.name))
        if problem is not None:
            raise UsageError(problem)


def resolve(
    given: Mapping[str, Any], explicit: Iterable[str] = (), others: Iterable[str] = ()
) -> dict[str, Any]:
    """``prune()``'s keywords, checked: every option's value (the default when not given).

    ``explicit``: options the caller takes as its own parameters; ``others``: its other
    parameters (suggested for a misspelt keyword). An unknown keyword is refused with the
    closest known ones; a ``run`` option of the wrong
    kind is refused here (``config`` / ``deploy`` / ``gates`` values are checked by the
    configuration they build). Lists become tuples; a string given for a list stays a string
    (and is refused), it would otherwise become a list of its characters.
    """
    known = [o.name for o in KEYWORDS if o.name not in explicit]
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(name, [*known, *others, *explicit], n=2)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise UsageError(f"prune() got an unknown option {name!r}{hint}")
    values: dict[str, Any] = {}
    for option in KEYWORDS:
        if option.name in explicit:
            continue
        value = given.get(option.name, option.default)
        if option.kind in (TEXTS, NUMBERS) and isinstance(value, (list, tuple)):
            value = tuple(value)
        if option.goes_to == RUN:
            problem = option.problem(value)
            if problem is not None:
                raise UsageError(problem)
        values[option.name] = value
    return values


def only(values: Mapping[str, Any], goes_to: str) -> dict[str, Any]:
    """The values of the options that go to ``goes_to`` (``config`` ones: not internal)."""
    return {o.name: values[o.name] for o in options_for(goes_to, internal=False)}


def as_json(value: Any) -> Any:
    """Tuples as lists (recipes and reports are JSON)."""
    return list(value) if isinstance(value, tuple) else value


def recipe_fields(config: object) -> dict[str, Any]:
    """The recipe's record of ``config`` (a PruneConfig): every ``config`` option, advanced ones
    only when they differ from what their absence replays."""
    record = {}
    for option in options_for(CONFIG):
        value = as_json(getattr(config, option.name))
        if not (option.recipe_sparse and value == option.absent):
            record[option.name] = value
    return record


def config_settings(recipe: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The PruneConfig keywords a recipe's fields give (absent ones: what they replay).

    UsageError (prefixed with ``where``) for a missing required field or a list field that is
    not a list.
    """
    missing = [o.name for o in options_for(CONFIG) if o.name not in recipe and o.absent is REQUIRED]
    if missing:
        raise UsageError(f"{where} is incomplete: no {', '.join(missing)}")
    settings: dict[str, Any] = {}
    for option in options_for(CONFIG):
        value = recipe.get(option.name, option.absent)
        if option.kind == TEXTS:
            if not isinstance(value, (list, tuple)):  # a string would become its characters
                keyword = "--" + option.name.replace("_", "-")
                raise UsageError(f"{where}: {keyword} must be {TEXTS}, got {value!r}")
            value = tuple(value)
        settings[option.name] = value
    return settings


def click_spec(option: Option) -> tuple[list[str], dict[str, Any]]:
    """The declarations and attributes of ``option``'s click option (``click.Option(*spec)``)."""
    import click  # local: the library does not need click

    types: dict[str, Any] = {
        NUMBER: float, INT: int, TEXT: str, TEXTS: str, PATH: click.Path(path_type=Path),
        SOURCE: click.Path(path_type=Path), SPEC: str, NUMBERS: str,
        "int>=1": click.IntRange(min=1),
    }  # fmt: skip
    attrs: dict[str, Any] = {"help": option.help}
    if option.kind == FLAG and not option.flags:
        attrs["is_flag"] = True
    elif option.kind == FLAG:
        attrs["default"] = option.default
    else:
        attrs["type"] = types[option.kind]
        if option.choices is not None and option.click_choice:
            attrs["type"] = click.Choice(list(option.shown_choices()))
        attrs["default"] = None if option.kind in (TEXTS, NUMBERS) else option.default
    attrs["multiple"] = option.kind == TEXTS
    if option.kind == NUMBERS:
        attrs["callback"] = _float_list
    attrs["show_default"] = (
        option.default is not None and option.default is not False and (option.default != ())
    )
    cli = dict(option.cli)
    if isinstance(cli.get("type"), str):
        cli["type"] = types[cli["type"]]
    attrs.update(cli)
    flags = option.flags or ("--" + option.name.replace("_", "-"),)
    return [*flags, option.name], attrs


def _float_list(ctx: object, param: object, value: str | None) -> list[float]:
    """``--sweep 0.3,0.5`` -> [0.3, 0.5]."""
    import click

    if not value:
        return []
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError as err:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from err


def click_params() -> list[Any]:
    """The click options of the prune command, in declaration order (``cli.py``)."""
    import click

    params = []
    for option in KEYWORDS:
        declarations, attrs = click_spec(option)
        params.append(click.Option(declarations, **attrs))
    return params


def signature_parameters() -> list[Any]:
    """``prune()``'s keyword parameters as ``inspect.Parameter`` (for ``help(prune)`` and
    introspection; the function itself takes ``**options``)."""
    import inspect

    return [
        inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default)
        for o in KEYWORDS
    ]
