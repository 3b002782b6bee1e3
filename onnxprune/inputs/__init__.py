"""Meeting users where their files are: model folders, raw text and image folders.

- :func:`resolve_model`: a directory holding one ``.onnx`` (an ``optimum-cli export onnx``
  folder, or a Hugging Face repository with an ``onnx/`` subfolder) stands for that file.
- :func:`resolve_data`: ``sentences.txt`` / ``.jsonl`` (with a ``tokenizer.json``) and a folder
  of images (with an explicit preprocessing spec) become streamed calibration sources; every
  other path is left to :func:`onnxprune.calibrate.sources.open_data`.
- :func:`python_source`: an onnxruntime-style reader with ``get_next()``.

The text and image readers need the optional extras ``onnxprune[text]`` (tokenizers) and
``onnxprune[image]`` (Pillow); they are imported only when such data is given.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from ..calibrate.sources import DataSource, model_input_specs
from ..errors import CalibrationDataError, ModelError, UsageError
from ..options import default
from .images import (
    EXAMPLE_SPEC,
    IMAGE_CHUNK,
    IMAGE_SUFFIXES,
    RESIZE_MODES,
    check_image_spec,
    image_source,
    read_image_spec,
)
from .text import TEXT_CHUNK, TOKEN_INPUTS, text_source

__all__ = [
    "EXAMPLE_SPEC",
    "IMAGE_CHUNK",
    "IMAGE_SUFFIXES",
    "RESIZE_MODES",
    "TEXT_CHUNK",
    "TEXT_SUFFIXES",
    "TOKEN_INPUTS",
    "DataOptions",
    "check_image_spec",
    "data_kind",
    "find_tokenizer",
    "image_source",
    "python_source",
    "read_image_spec",
    "resolve_data",
    "resolve_model",
    "text_source",
]

log = logging.getLogger(__name__)
TEXT_SUFFIXES = (".txt", ".jsonl")
# ---------------------------------------------------------------------------------------------
# Model folders


def resolve_model(model: Path, model_file: str | None = None) -> Path:
    """The ``.onnx`` file ``model`` stands for.

    A file is itself. A directory holding exactly one ``.onnx`` (directly, or else in an
    ``onnx/`` subfolder as in Hugging Face repositories) stands for it; earlier outputs
    (``*.pruned.onnx``) are not candidates. Several are refused with their list unless
    ``model_file`` (``--model-file``) names one, relative to the directory.
    """
    if not model.is_dir():
        if model_file is not None:
            raise UsageError(f"--model-file needs a model directory, but {model} is not one")
        return model
    if model_file is not None:
        chosen = model / model_file
        if not chosen.is_file():
            found = ", ".join(str(p.relative_to(model)) for p in _onnx_files(model)) or "none"
            raise ModelError(f"--model-file {model_file} is not in {model} (.onnx files: {found})")
        return chosen
    files = _onnx_files(model)
    if not files:
        raise ModelError(f"model directory {model} holds no .onnx file")
    if len(files) > 1:
        names = ", ".join(str(p.relative_to(model)) for p in files)
        raise ModelError(
            f"model directory {model} holds {len(files)} .onnx files ({names}); choose one with "
            "--model-file NAME"
        )
    log.info("model directory %s: using %s", model, files[0].name)
    return files[0]


def _onnx_files(directory: Path) -> list[Path]:
    for folder in (directory, directory / "onnx"):
        if folder.is_dir():
            files = sorted(
                p
                for p in folder.glob("*.onnx")
                if p.is_file() and not p.name.endswith(".pruned.onnx")
            )
            if files:
                return files
    return []


def find_tokenizer(model_path: Path, given: Path | None, folder: Path | None) -> Path | None:
    """``--tokenizer`` (a tokenizer.json or a directory holding one), else a tokenizer.json
    beside the model file or in the model folder it was found in."""
    if given is not None:
        candidate = given / "tokenizer.json" if given.is_dir() else given
        if not candidate.is_file():
            raise UsageError(f"--tokenizer: no tokenizer.json at {given}")
        return candidate
    for directory in (model_path.parent, folder):
        if directory is not None and (directory / "tokenizer.json").is_file():
            return directory / "tokenizer.json"
    return None


# ---------------------------------------------------------------------------------------------
# Data sources


@dataclass(frozen=True)
class DataOptions:
    """How raw text and images become model inputs (CLI: --tokenizer, --max-length,
    --preprocess)."""

    tokenizer: Path | None = None
    max_length: int = default("max_length")
    preprocess: dict[str, Any] | None = None
    model_folder: Path | None = None


def data_kind(source: DataSource) -> str | None:
    """'text', 'images' or None (anything :func:`open_data` reads itself)."""
    if not isinstance(source, (str, Path)):
        return None
    path = Path(source)
    if path.is_file() and path.suffix.lower() in TEXT_SUFFIXES:
        return "text"
    if path.is_dir():
        try:
            entries = [p for p in path.iterdir() if p.is_file()]
        except OSError:
            return None
        images = any(p.suffix.lower() in IMAGE_SUFFIXES for p in entries)
        if images and not any(p.suffix.lower() in (".npz", ".npy", ".pb") for p in entries):
            return "images"
    return None


def resolve_data(
    source: DataSource | None, model_path: Path, options: DataOptions
) -> tuple[DataSource | None, dict[str, Any] | None]:
    """(the source to calibrate with, what the recipe should record about how it was made).

    Text and image paths become streamed generator factories; everything else is returned as
    given (reader objects with ``get_next()`` are drained once, as onnxruntime's readers are)."""
    if source is None:
        return None, None
    if not isinstance(source, (str, Path)):
        return python_source(source), None
    kind = data_kind(source)
    if kind is None:
        return source, None
    specs = model_input_specs(onnx.load(str(model_path), load_external_data=False))
    if kind == "text":
        tokenizer = find_tokenizer(model_path, options.tokenizer, options.model_folder)
        if tokenizer is None:
            raise CalibrationDataError(
                f"{source} is text: put a tokenizer.json beside the model or give --tokenizer PATH"
            )
        return text_source(Path(source), tokenizer, specs, options.max_length), {
            "kind": "text",
            "tokenizer": str(tokenizer),
            "max_length": options.max_length,
        }
    if options.preprocess is None:
        raise CalibrationDataError(
            f"{source} is a folder of images: give --preprocess with the model's preprocessing, "
            f"e.g. --preprocess '{json.dumps(EXAMPLE_SPEC)}'"
        )
    spec = check_image_spec(options.preprocess)
    return image_source(Path(source), spec, specs), {"kind": "images", "preprocess": spec}


def python_source(source: Any) -> DataSource:
    """An object with ``get_next()`` (onnxruntime's ``CalibrationDataReader``) is read to its
    end once (None) and replayed from memory; other sources are returned unchanged."""
    if hasattr(source, "get_next") and not isinstance(source, dict):
        items = list(iter(source.get_next, None))
        if not items:
            raise CalibrationDataError("the reader's get_next() returned None at once: no samples")
        return items
    return source  # type: ignore[no-any-return]
