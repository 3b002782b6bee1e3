"""Options as click options (the prune command) and as ``prune()``'s signature."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .schema import FLAG, INT, NUMBER, NUMBERS, PATH, SOURCE, SPEC, TEXT, TEXTS, Option
from .table import KEYWORDS


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
