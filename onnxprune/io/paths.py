"""Checking the paths a run reads and writes before anything runs."""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from ..errors import OutputWriteError, UsageError


def default_output_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.stem + ".pruned.onnx")


def read_files(paths: dict[str, Path]) -> dict[str, Path]:
    """Every file a run reads: ``paths`` (description -> path), a directory standing for every
    file below it."""
    files: dict[str, Path] = {}
    for name, path in paths.items():
        if path.is_dir():
            try:
                below = sorted(p for p in path.rglob("*") if p.is_file())
            except OSError:
                below = []
            files.update({f"{name} ({file})": file for file in below})
        else:
            files[name] = path
    return files


def check_model_suffix(output_path: Path) -> None:
    """Refuse an output name that onnx would save in a text format (``.json``, ``.textproto``,
    ``.onnxtxt``, ...): onnxprune writes binary protobuf models only, and says so before any
    work rather than failing at the end."""
    try:
        fmt = onnx.serialization.registry.get_format_from_file_extension(output_path.suffix)
    except (AttributeError, KeyError, ValueError):  # an older onnx without the registry
        fmt = None
    if fmt is not None and fmt != "protobuf":
        raise UsageError(
            f"output path {output_path} has the suffix of onnx's {fmt} text format; onnxprune "
            "writes binary protobuf models only: use .onnx"
        )


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file: hard links to one file share it."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def check_output_path(
    output_path: Path, protected: dict[str, Path], what: str = "output path"
) -> None:
    """Fail early when ``output_path`` is one of the run's inputs or cannot be written.

    ``protected`` names the paths that must never be written (the model, its data, other
    outputs of the same run), e.g. ``{"the input model": model_path}``. Paths are compared by
    real path (symbolic links resolved) and, for existing files, by inode (hard links).
    """
    target = output_path.resolve()
    identity = _identity(output_path)
    for name, path in protected.items():
        if target == path.resolve() or (identity is not None and identity == _identity(path)):
            raise UsageError(f"{what} is {name}, refusing to overwrite it: {output_path}")
    if output_path.is_dir():
        raise UsageError(f"{what} is a directory: {output_path}")
    parent = output_path.parent if str(output_path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputWriteError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise OutputWriteError(f"output directory is not writable: {parent}")
