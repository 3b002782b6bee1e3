"""A folder of images turned into calibration feeds by an explicit preprocessing spec."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..calibrate.sources import InputSpec
from ..errors import CalibrationDataError, UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
# Images decoded per streamed chunk (batches are re-cut to --batch-size later).
IMAGE_CHUNK = 16

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

    def chunks() -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(files), IMAGE_CHUNK):
            part = files[start : start + IMAGE_CHUNK]
            yield {target.name: np.stack([_load_image(Image, p, spec) for p in part])}

    return chunks


def _load_image(Image: Any, path: Path, spec: dict[str, Any]) -> np.ndarray:
    """One image as the model's input [C, H, W] (NCHW) or [H, W, C] (NHWC), resized and
    normalised by ``spec``; ``Image``: Pillow's module (imported only for image data)."""
    height, width = spec["size"]
    mode = spec["channels"] if spec["channels"] != "BGR" else "RGB"
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
