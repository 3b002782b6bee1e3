"""Parsing ``--metric`` kinds and ``--metric-output NAME[SLICE][=KIND]`` selectors."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from types import EllipsisType

import numpy as np

from ..errors import UsageError

DEFAULT_KIND = "standardized"
KINDS = ("standardized", "cosine", "pooled", "top1", "top5", "topK", "agreement", "cells@T")
PRESETS = ("classifier", "detector", "encoder")
# ``cells``: a detector's score cell counts as "on" above this (a common confidence threshold).
DEFAULT_CELL_THRESHOLD = 0.25

# One axis of a NAME[SLICE] selector: an index, a slice or the ellipsis.
Index = int | slice | EllipsisType


def check_kind(text: str, option: str = "--metric") -> str:
    """``text`` if it is a kind or a preset, else a UsageError naming the choices."""
    if text in PRESETS or text in ("standardized", "cosine", "pooled", "agreement"):
        return text
    if re.fullmatch(r"top[1-9]\d*", text):
        return text
    match = re.fullmatch(r"cells(?:@(.+))?", text)
    if match:
        if match.group(1) is not None:
            try:
                float(match.group(1))
            except ValueError:
                raise UsageError(
                    f"{option} {text!r}: the cell threshold must be a number"
                ) from None
        return text
    choices = ", ".join((*KINDS, *PRESETS))
    raise UsageError(f"unknown {option} {text!r}; choose one of: {choices}")


@dataclass(frozen=True)
class OutputSelector:
    """One ``--metric-output NAME[SLICE][=KIND]``: a model output, a part of it, its kind."""

    text: str
    name: str
    index: tuple[Index, ...] | None = None
    kind: str | None = None

    @property
    def part(self) -> str:
        """NAME[SLICE], without the kind."""
        return self.text.partition("=")[0].strip()

    def select(self, array: np.ndarray) -> np.ndarray:
        return array if self.index is None else array[self.index]


def parse_metric_output(text: str) -> OutputSelector:
    """``"output0[:,4:]=cells"`` -> OutputSelector("output0", (slice(None), slice(4, None)),
    "cells"). The slice is NumPy's basic indexing over the whole output, batch axis first; the
    batch axis itself must be kept whole (``:`` or ``...``)."""
    match = re.fullmatch(r"\s*([^\[\]=]+?)\s*(\[([^\]]*)\])?\s*(?:=\s*(\S+))?\s*", text)
    if not match:
        raise UsageError(
            f"--metric-output {text!r}: expected NAME, NAME[SLICE] or NAME[SLICE]=KIND"
        )
    name, _, inside, kind = match.groups()
    index = _parse_index(text, inside) if inside is not None else None
    if kind is not None:
        check_kind(kind, "--metric-output kind")
        if kind in PRESETS:
            raise UsageError(f"--metric-output {text!r}: a preset applies to --metric, not a part")
    return OutputSelector(text, name, index, kind)


def _parse_index(text: str, inside: str) -> tuple[Index, ...]:
    items: list[Index] = []
    for part in inside.split(","):
        part = part.strip()
        try:
            if part == "...":
                items.append(Ellipsis)
            elif ":" in part:
                bounds = [int(b) if b.strip() else None for b in part.split(":")]
                if len(bounds) > 3:
                    raise ValueError(part)
                items.append(slice(*bounds))
            else:
                items.append(int(ast.literal_eval(part)))
        except (ValueError, SyntaxError):
            raise UsageError(
                f"--metric-output {text!r}: {part!r} is not an index, a slice a:b:c or ..."
            ) from None
    first = items[0] if items else Ellipsis
    if first is not Ellipsis and first != slice(None):
        raise UsageError(
            f"--metric-output {text!r}: the first axis is the batch; keep it whole (':' or '...')"
        )
    return tuple(items)
