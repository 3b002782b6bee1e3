"""Build a synthetic ResNet-18 for the cost benchmark: dense 3x3 convs up to 512 channels.

The fast-default issue's benchmark models are a transformer, two digits nets and two mobile
CNNs whose k x k convs are depthwise. The most common CNN layout, residual blocks of dense 3x3
convs, has much wider conv layers: a 3x3 conv over 512 channels has K = 4608 columns, so its
K x K input correlation and inverse-Hessian factor cost far more than a depthwise layer's. This
model has that shape (numpy and onnx only, no PyTorch): ResNet-18's layout (a 7x7 stem with
stride 2 and a 3x3 max pool, four stages of two basic blocks at 64 / 128 / 256 / 512 channels,
a 1x1 stride-2 shortcut conv where a stage starts, global average pooling and a 1000-class
Gemm), batch normalisation folded into the convs as deployed models have it, at 224 px.

Weights are random (He-initialised), for timing and memory, not fidelity. Images are the
detector builder's smooth random fields (``build_detector.images``).

Usage::

    python benchmarks/build_resnet.py --out-dir DIR [--images 32]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from build_detector import GraphParts, images
from onnx import TensorProto, helper

SIZE = 224
CLASSES = 1000
# (output channels, first stride) per stage, two basic blocks each.
STAGES = [(64, 1), (128, 2), (256, 2), (512, 2)]


def build_model(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    parts = GraphParts()
    nodes, inits, fresh, const = parts.nodes, parts.inits, parts.fresh, parts.const

    def node(op: str, inputs: list[str], stem: str, **attrs: object) -> str:
        out = fresh(stem)
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(x: str, cin: int, cout: int, k: int, stride: int, relu: bool) -> str:
        weight = rng.normal(scale=np.sqrt(2.0 / (cin * k * k)), size=(cout, cin, k, k))
        bias = rng.normal(scale=0.05, size=cout)
        out = node(
            "Conv", [x, const(weight, "w"), const(bias, "b")], "conv",
            kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4,
        )  # fmt: skip
        return node("Relu", [out], "relu") if relu else out

    x = conv("input", 3, 64, 7, 2, True)
    x = node("MaxPool", [x], "pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    channels = 64
    for width, first_stride in STAGES:
        for block in range(2):
            stride = first_stride if block == 0 else 1
            y = conv(x, channels, width, 3, stride, True)
            y = conv(y, width, width, 3, 1, False)
            shortcut = x
            if stride != 1 or channels != width:
                shortcut = conv(x, channels, width, 1, stride, False)
            x = node("Relu", [node("Add", [y, shortcut], "residual")], "relu")
            channels = width
    pooled = node("Flatten", [node("GlobalAveragePool", [x], "gap")], "flat", axis=1)
    fc_weight = rng.normal(scale=np.sqrt(1.0 / channels), size=(CLASSES, channels))
    logits = node(
        "Gemm", [pooled, const(fc_weight, "fc_w"), const(np.zeros(CLASSES), "fc_b")], "fc",
        transB=1,
    )  # fmt: skip
    nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits"))
    graph = helper.make_graph(
        nodes,
        "synthetic_resnet18",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def build(out_dir: Path, count: int) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "resnet18.onnx"
    calib_path = out_dir / f"resnet18_{count}.npz"
    if not model_path.exists():
        onnx.save(build_model(), model_path)
    if not calib_path.exists():
        np.savez(calib_path, input=images(count, SIZE))
    return model_path, calib_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--images", type=int, default=32)
    args = parser.parse_args()
    for path in build(args.out_dir, args.images):
        print(path)


if __name__ == "__main__":
    main()
