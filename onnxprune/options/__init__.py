"""The options of ``onnxprune MODEL`` / ``prune()``, each declared once.

One :class:`Option` per option holds its name (the ``prune()`` keyword, the ``PruneConfig`` /
``DeployConfig`` / ``Gates`` field, the recipe and ``report.arguments`` key), its JSON kind,
default, help text, choices (a tuple, or a registry lookup), range, CLI spelling and help
heading, and where its value goes (``schema``). The options are declared by what they decide
(``pruning``: model, data, method, structure, metric; ``gates``: gates, --sweep, side files;
``artifact``: --quantize and friends) and put in one order in ``table``. From this table:

- ``cli.py`` generates the click options of the prune command (``click_params``);
- ``prune(**options)`` rejects unknown keywords and values of the wrong kind (``resolve``);
- ``PruneConfig``, ``DeployConfig`` and ``Gates`` take their defaults (``default``) and check
  their fields on construction (``check_fields``);
- ``recipe.py`` writes and reads the ``config`` options (``recipe_fields``), and
  ``run/reporting.py`` fills ``report.arguments`` from the ``config`` and ``deploy`` options.

A new option is one entry in one of those modules plus the code that uses it (and, for a
``config`` / ``deploy`` / ``gates`` option, the typed field that carries it, whose default
comes from here).
Checks that involve several options (``--pattern`` N:M against ``--sparsity``, ``--refit-steps``
needs the update...) stay with the configuration they constrain.
"""

from .generate import click_params, click_spec, signature_parameters
from .schema import (
    ALLOCATIONS,
    CALIB_HELP,
    CONFIG,
    DEPLOY,
    FLAG,
    GATES,
    GROUPS,
    INT,
    NUMBER,
    NUMBERS,
    OUTPUT_FORMATS,
    PATH,
    QUANT_CALIBRATIONS,
    QUANT_FORMATS,
    QUANT_RANGES,
    QUANTIZE_CHOICES,
    REQUIRED,
    RUN,
    SECTIONS,
    SOURCE,
    SPEC,
    STORAGES,
    TEXT,
    TEXTS,
    UPDATE_TARGETS,
    Option,
    Range,
)
from .table import BY_NAME, KEYWORDS, OPTIONS
from .values import (
    as_json,
    check_fields,
    config_settings,
    default,
    only,
    options_for,
    recipe_fields,
    resolve,
)

__all__ = [
    "ALLOCATIONS",
    "BY_NAME",
    "CALIB_HELP",
    "CONFIG",
    "DEPLOY",
    "FLAG",
    "GATES",
    "GROUPS",
    "INT",
    "KEYWORDS",
    "NUMBER",
    "NUMBERS",
    "OPTIONS",
    "OUTPUT_FORMATS",
    "PATH",
    "QUANTIZE_CHOICES",
    "QUANT_CALIBRATIONS",
    "QUANT_FORMATS",
    "QUANT_RANGES",
    "REQUIRED",
    "RUN",
    "SECTIONS",
    "SOURCE",
    "SPEC",
    "STORAGES",
    "TEXT",
    "TEXTS",
    "UPDATE_TARGETS",
    "Option",
    "Range",
    "as_json",
    "check_fields",
    "click_params",
    "click_spec",
    "config_settings",
    "default",
    "only",
    "options_for",
    "recipe_fields",
    "resolve",
    "signature_parameters",
]
