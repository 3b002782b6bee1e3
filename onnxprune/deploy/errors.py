"""The first line of an error from onnxruntime's tools, for a one-line message."""

from __future__ import annotations


def first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]
