"""Frozen result records to and from the JSON of ``results.json``.

The file's layout predates the records: a row is one flat JSON object whose keys come from
several records (the configuration, the prune outcome, the score, a failure). A field declared
with ``metadata=FLAT`` is written into its parent's object instead of under its own key, and
read back when the keys it requires are present; a field declared with ``metadata=OMIT`` is
left out while it is ``None``, one with ``metadata=OMIT_DEFAULT`` while it has its default (a
field added later: older files load and write back unchanged). Everything else is written
under its own name, in declaration order, so a file written by the old script loads and writes
back to the same JSON.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, TypeVar, Union

T = TypeVar("T")


# Field metadata: ``field(default=None, metadata=FLAT)`` is a nested record (or None) whose keys
# sit in the parent's JSON object; ``metadata=OMIT`` leaves the value out while it is None.
FLAT = {"flat": True}
OMIT = {"omit_none": True}
OMIT_DEFAULT = {"omit_default": True}


def to_json(record: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if field.metadata.get("flat"):
            if value is not None:
                out.update(to_json(value))
        elif not _omitted(field, value):
            out[field.name] = _encode(value)
    return out


def _omitted(field: dataclasses.Field[Any], value: Any) -> bool:
    if field.metadata.get("omit_none"):
        return value is None
    return bool(field.metadata.get("omit_default")) and value == field.default


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(value)
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _required(cls: Any) -> list[str]:
    """Keys that must be present for ``cls`` to be read from a JSON object."""
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


def from_json(cls: type[T], data: dict[str, Any]) -> T:
    kwargs: dict[str, Any] = {}
    hints = _hints(typing.cast(Any, cls))  # a type is hashable; mypy cannot see it of type[T]
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]  # T is a dataclass
        kind = hints[field.name]
        if field.metadata.get("flat"):
            fitting = [c for c in _members(kind) if all(k in data for k in _required(c))]
            kwargs[field.name] = from_json(fitting[0], data) if fitting else None
        elif field.name in data:
            kwargs[field.name] = _decode(kind, data[field.name])
    return cls(**kwargs)


def _members(kind: Any) -> list[Any]:
    """The non-None members of a union (or the type itself)."""
    if typing.get_origin(kind) in (Union, types.UnionType):
        return [a for a in typing.get_args(kind) if a is not type(None)]
    return [kind]


def _decode(kind: Any, value: Any) -> Any:
    if value is None:
        return None
    members = _members(kind)
    records: list[Any] = [m for m in members if dataclasses.is_dataclass(m)]
    if records and isinstance(value, dict):
        fitting = [c for c in records if all(k in value for k in _required(c))]
        return from_json(fitting[0] if fitting else records[0], value)
    origin = typing.get_origin(members[0])
    args = typing.get_args(members[0])
    if origin is tuple:
        return tuple(_decode(args[0], v) for v in value)
    if origin is dict and isinstance(value, dict):
        return {k: _decode(args[1], v) for k, v in value.items()}
    return value
