"""Build a synthetic mobile detector for the cost benchmark: 60+ prunable layers, depthwise convs.

The cost benchmark (``benchmarks/run_cost.py``) needs a model of the shape the fast-default issue
names: a mobile detector at 640 px with more than 60 prunable layers, depthwise convolutions
among them. No such model ships in a PyPI package, so this one is generated (numpy and onnx
only, no PyTorch): a MobileNetV2-style backbone (width 0.5), every block an expand 1x1 conv, a
depthwise 3x3 conv and a project 1x1 conv with ReLU6 (Clip) after the first two and a residual
Add where the shapes allow, then a 1x1 neck and a 1x1 detection head whose output is
``[batch, 4 + classes, H/32, W/32]`` (box coordinates and class scores per cell, like an
anchor-free detector).

Weights are random (He-initialised, so activations keep their scale through the depth): the
model is for timing and memory, not for fidelity. Images are smooth random fields (a low
resolution noise upsampled), normalised to about unit variance.

Usage::

    python benchmarks/build_detector.py --out-dir DIR [--blocks 20] [--size 640] [--images 32]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# (expansion, output channels, blocks, first stride) per stage: MobileNetV2's layout at width
# 0.5, the width mobile detectors run at 640 px on a CPU.
STAGES = [(1, 8, 1, 1), (6, 12, 2, 2), (6, 16, 3, 2), (6, 32, 4, 2), (6, 48, 3, 1),
          (6, 80, 3, 2), (6, 160, 1, 1)]  # fmt: skip
CLASSES = 80


def _stage_plan(blocks: int) -> list[tuple[int, int, int]]:
    """(expansion, out channels, stride) per block: MobileNetV2's 17 blocks, repeated in order
    until ``blocks`` (the extra blocks keep their stage's channels and stride 1)."""
    base = []
    for expansion, channels, count, stride in STAGES:
        for k in range(count):
            base.append((expansion, channels, stride if k == 0 else 1))
    plan = list(base[:blocks])
    extra = blocks - len(plan)
    position = 0
    while extra > 0:  # deepen every stage in turn, one stride-1 block at a time
        expansion, channels, _ = base[position % len(base)]
        index = next(i for i, b in enumerate(plan) if b[1] == channels) + 1
        plan.insert(index, (expansion, channels, 1))
        position += 1
        extra -= 1
    return plan


class GraphParts:
    """The nodes and float32 initializers of a generated graph, with numbered names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, value: np.ndarray, stem: str) -> str:
        name = self.fresh(stem)
        self.inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name


def build_model(blocks: int = 20, size: int = 640, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    parts = GraphParts()
    nodes, inits, fresh, const = parts.nodes, parts.inits, parts.fresh, parts.const

    low, high = const(np.array(0.0), "relu6_low"), const(np.array(6.0), "relu6_high")

    def conv(x: str, cin: int, cout: int, k: int, stride: int, group: int, act: bool) -> str:
        fan_in = cin // group * k * k
        weight = rng.normal(scale=np.sqrt(2.0 / fan_in), size=(cout, cin // group, k, k))
        bias = rng.normal(scale=0.05, size=cout)
        out = fresh("conv")
        nodes.append(
            helper.make_node(
                "Conv", [x, const(weight, "w"), const(bias, "b")], [out], name=out,
                kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=group,
            )
        )  # fmt: skip
        if not act:
            return out
        clipped = fresh("relu6")
        nodes.append(helper.make_node("Clip", [out, low, high], [clipped], name=clipped))
        return clipped

    x = conv("images", 3, 16, 3, 2, 1, True)
    channels = 16
    for expansion, out_channels, stride in _stage_plan(blocks):
        hidden = channels * expansion
        y = conv(x, channels, hidden, 1, 1, 1, True) if expansion != 1 else x
        y = conv(y, hidden, hidden, 3, stride, hidden, True)
        y = conv(y, hidden, out_channels, 1, 1, 1, False)
        if stride == 1 and out_channels == channels:
            added = fresh("residual")
            nodes.append(helper.make_node("Add", [x, y], [added], name=added))
            y = added
        x, channels = y, out_channels
    neck = conv(x, channels, 128, 1, 1, 1, True)
    head = conv(neck, 128, 4 + CLASSES, 1, 1, 1, False)
    nodes.append(helper.make_node("Identity", [head], ["detections"], name="detections"))
    graph = helper.make_graph(
        nodes,
        "synthetic_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])],
        [
            helper.make_tensor_value_info(
                "detections", TensorProto.FLOAT, ["batch", 4 + CLASSES, size // 32, size // 32]
            )
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def images(count: int, size: int, seed: int = 1) -> np.ndarray:
    """Smooth random fields [count, 3, size, size]: noise at 1/16 resolution, upsampled."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(count, 3, size // 16 + 1, size // 16 + 1)).astype(np.float32)
    fine = np.repeat(np.repeat(coarse, 16, axis=2), 16, axis=3)[:, :, :size, :size]
    return np.ascontiguousarray(fine + 0.1 * rng.normal(size=fine.shape).astype(np.float32))


def build(out_dir: Path, blocks: int, size: int, count: int) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / f"detector_b{blocks}_{size}.onnx"
    calib_path = out_dir / f"detector_{size}_{count}.npz"
    if not model_path.exists():
        onnx.save(build_model(blocks, size), model_path)
    if not calib_path.exists():
        np.savez(calib_path, images=images(count, size))
    return model_path, calib_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--images", type=int, default=32)
    args = parser.parse_args()
    model, calib = build(args.out_dir, args.blocks, args.size, args.images)
    print(f"wrote {model} and {calib}")


if __name__ == "__main__":
    main()
