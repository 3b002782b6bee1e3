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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .calibrate.sources import DataSource, InputSpec, model_input_specs
from .errors import CalibrationDataError, ModelError, UsageError
from .options import default

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".jsonl")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
# Inputs a tokenizer fills, by name (Hugging Face / Optimum exports).
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Lines tokenised per streamed chunk (batches are re-cut to --batch-size later).
TEXT_CHUNK = 64
IMAGE_CHUNK = 16


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


# ---------------------------------------------------------------------------------------------
# Text


def _load_tokenizer(path: Path) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError as err:
        raise UsageError(
            "text calibration needs the tokenizers package: pip install 'onnxprune[text]'"
        ) from err
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises its own Exception subclass on bad files
        raise CalibrationDataError(f"cannot read tokenizer {path}: {err}") from err


def _text_lines(path: Path) -> Iterator[tuple[str, str | None]]:
    """(text, text_pair) per non-empty line: plain lines (.txt), or JSON strings / objects with
    "text" and an optional "text_pair" (.jsonl). Read lazily, line by line."""
    jsonl = path.suffix.lower() == ".jsonl"
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                if not jsonl:
                    yield line, None
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as err:
                    raise CalibrationDataError(f"{path}:{number}: not JSON ({err.msg})") from err
                if isinstance(item, str):
                    yield item, None
                elif isinstance(item, dict) and isinstance(item.get("text"), str):
                    pair = item.get("text_pair")
                    yield item["text"], pair if isinstance(pair, str) else None
                else:
                    raise CalibrationDataError(
                        f'{path}:{number}: expected a JSON string or an object with "text"'
                    )
    except UnicodeDecodeError as err:
        raise CalibrationDataError(f"{path} is not UTF-8 text: {err.reason}") from err
    except OSError as err:
        raise CalibrationDataError(f"cannot read {path}: {err.strerror or err}") from err


def text_source(
    path: Path, tokenizer_path: Path, specs: list[InputSpec], max_length: int
) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
    """A streamed source: ``TEXT_CHUNK`` lines at a time, tokenised to the inputs named
    input_ids / attention_mask / token_type_ids ([chunk, seq], padded to the chunk's longest
    sequence, or to the model's fixed sequence length, truncated to ``max_length``)."""
    if max_length < 1:
        raise UsageError(f"--max-length must be at least 1, got {max_length}")
    unknown = [s.name for s in specs if s.name not in TOKEN_INPUTS]
    if unknown or "input_ids" not in {s.name for s in specs}:
        raise CalibrationDataError(
            f"text calibration fills inputs named {', '.join(TOKEN_INPUTS)}; the model's inputs "
            f"are {', '.join(s.name for s in specs)}"
        )
    tokenizer = _load_tokenizer(tokenizer_path)
    by_name = {s.name: s for s in specs}
    fixed = {s.shape[1] for s in specs if len(s.shape) == 2 and isinstance(s.shape[1], int)}
    length = min(fixed) if fixed else None
    tokenizer.enable_truncation(max_length=length or max_length)
    pad_id = tokenizer.token_to_id("[PAD]") or tokenizer.token_to_id("<pad>") or 0
    tokenizer.enable_padding(pad_id=pad_id, length=length)

    def chunks() -> Iterator[dict[str, np.ndarray]]:
        batch: list[tuple[str, str | None]] = []
        for item in _text_lines(path):
            batch.append(item)
            if len(batch) == TEXT_CHUNK:
                yield encode(batch)
                batch = []
        if batch:
            yield encode(batch)

    def encode(batch: list[tuple[str, str | None]]) -> dict[str, np.ndarray]:
        inputs: list[Any] = [text if pair is None else (text, pair) for text, pair in batch]
        encodings = tokenizer.encode_batch(inputs)
        fields = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        return {name: np.asarray(fields[name], dtype=spec.dtype) for name, spec in by_name.items()}

    return chunks


# ---------------------------------------------------------------------------------------------
# Images

EXAMPLE_SPEC: dict[str, Any] = {
    "size": [224, 224],
    "resize": "shorter-side-crop",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "channels": "RGB",
    "layout": "NCHW",
    "dtype": "float32",
}
RESIZE_MODES = ("stretch", "shorter-side-crop")
_REQUIRED = ("size", "resize", "channels", "layout", "dtype")
_OPTIONAL = ("mean", "std", "scale", "offset")


def read_image_spec(text: str) -> dict[str, Any]:
    """``--preprocess``: a JSON file, or the JSON object itself."""
    raw = text
    if not text.lstrip().startswith("{"):
        try:
            raw = Path(text).read_text()
        except OSError as err:
            raise UsageError(f"--preprocess: cannot read {text}: {err.strerror or err}") from err
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as err:
        raise UsageError(f"--preprocess is not valid JSON: {err.msg}") from err
    if not isinstance(spec, dict):
        raise UsageError("--preprocess must be a JSON object")
    return check_image_spec(spec)


def check_image_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Validate and normalise a preprocessing spec (every field explicit, nothing guessed).

    Pixels v (0..255) become ``(v / 255 - mean) / std`` (mean/std on the 0..1 scale, as
    torchvision's Normalize) or ``v * scale + offset``; give exactly one of the two forms.
    """
    example = json.dumps(EXAMPLE_SPEC)
    missing = [k for k in _REQUIRED if k not in spec]
    unknown = sorted(set(spec) - set(_REQUIRED) - set(_OPTIONAL))
    if missing or unknown:
        what = f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(unknown)}"
        raise UsageError(f"--preprocess: {what}; example: {example}")
    size = spec["size"]
    if isinstance(size, int):
        size = [size, size]
    if not (
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(s, int) and s > 0 for s in size)
    ):
        raise UsageError("--preprocess: size is [height, width] (or one integer)")
    if spec["resize"] not in RESIZE_MODES:
        raise UsageError(f"--preprocess: resize must be one of {', '.join(RESIZE_MODES)}")
    channels = spec["channels"]
    if channels not in ("RGB", "BGR", "L"):
        raise UsageError("--preprocess: channels must be RGB, BGR or L (grayscale)")
    if spec["layout"] not in ("NCHW", "NHWC"):
        raise UsageError("--preprocess: layout must be NCHW or NHWC")
    if spec["dtype"] not in ("float32", "float16", "uint8"):
        raise UsageError("--preprocess: dtype must be float32, float16 or uint8")
    normalise = "mean" in spec or "std" in spec
    affine = "scale" in spec or "offset" in spec
    if normalise == affine:
        raise UsageError(
            "--preprocess: give either mean and std (on the 0..1 scale) or scale and offset "
            "(on 0..255 pixels)"
        )
    keys = ("mean", "std") if normalise else ("scale", "offset")
    width = len(channels)
    values: dict[str, list[float]] = {}
    for key in keys:
        value = spec.get(key)
        value = [value] * width if isinstance(value, (int, float)) else value
        if not (
            isinstance(value, list)
            and len(value) == width
            and all(isinstance(v, (int, float)) for v in value)
        ):
            raise UsageError(f"--preprocess: {key} needs {width} number(s) (one per channel)")
        values[key] = [float(v) for v in value]
    if normalise and any(v == 0 for v in values["std"]):
        raise UsageError("--preprocess: std must not be 0")
    return {
        "size": size,
        "resize": spec["resize"],
        "channels": channels,
        "layout": spec["layout"],
        "dtype": spec["dtype"],
        **values,
    }


def image_source(
    folder: Path, spec: dict[str, Any], specs: list[InputSpec]
) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
    """A streamed source: the folder's images in name order, ``IMAGE_CHUNK`` at a time, as the
    model's one input ([chunk, C, H, W] for NCHW, [chunk, H, W, C] for NHWC)."""
    try:
        from PIL import Image
    except ImportError as err:
        raise UsageError("image calibration needs Pillow: pip install 'onnxprune[image]'") from err
    if len(specs) != 1:
        raise CalibrationDataError(
            f"image calibration feeds one input; the model has {len(specs)} "
            f"({', '.join(s.name for s in specs)})"
        )
    target = specs[0]
    if np.dtype(spec["dtype"]) != target.dtype:
        raise CalibrationDataError(
            f"--preprocess dtype {spec['dtype']} but input {target.name!r} is {target.dtype}"
        )
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    height, width = spec["size"]
    mode = spec["channels"] if spec["channels"] != "BGR" else "RGB"

    def load(path: Path) -> np.ndarray:
        try:
            with Image.open(path) as opened:
                image = opened.convert(mode)
                if spec["resize"] == "shorter-side-crop":
                    # Resize so the image covers height x width, then cut the centre.
                    factor = max(height / image.height, width / image.width)
                    size = (
                        max(width, round(image.width * factor)),
                        max(height, round(image.height * factor)),
                    )
                    image = image.resize(size, Image.Resampling.BILINEAR)
                    left, top = (size[0] - width) // 2, (size[1] - height) // 2
                    image = image.crop((left, top, left + width, top + height))
                else:
                    image = image.resize((width, height), Image.Resampling.BILINEAR)
                pixels = np.asarray(image, dtype=np.float32)  # [H, W] or [H, W, C]
        except OSError as err:
            raise CalibrationDataError(f"cannot read image {path}: {err}") from err
        if pixels.ndim == 2:
            pixels = pixels[:, :, np.newaxis]
        if spec["channels"] == "BGR":
            pixels = pixels[:, :, ::-1]
        if "mean" in spec:
            mean, std = (np.asarray(spec[k], np.float32) for k in ("mean", "std"))
            pixels = (pixels / np.float32(255.0) - mean) / std
        else:
            scale, offset = (np.asarray(spec[k], np.float32) for k in ("scale", "offset"))
            pixels = pixels * scale + offset
        if spec["layout"] == "NCHW":
            pixels = pixels.transpose(2, 0, 1)
        if spec["dtype"] == "uint8":
            pixels = np.clip(np.rint(pixels), 0, 255)
        return pixels.astype(spec["dtype"])

    def chunks() -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(files), IMAGE_CHUNK):
            part = files[start : start + IMAGE_CHUNK]
            yield {target.name: np.stack([load(p) for p in part])}

    return chunks
