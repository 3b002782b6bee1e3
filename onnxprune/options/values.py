"""Options as values: defaults, ``prune()``'s keywords checked, configuration fields checked,
recipe fields written and read."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import UsageError
from .schema import CONFIG, NUMBERS, REQUIRED, RUN, TEXTS, Option
from .table import BY_NAME, KEYWORDS, OPTIONS


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
