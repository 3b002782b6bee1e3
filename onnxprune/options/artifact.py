"""The written artifact (``onnxprune.deploy``): int8 quantization, sparse storage, .ort."""

from __future__ import annotations

from .schema import (
    DEPLOY,
    FLAG,
    INT,
    NUMBER,
    OUTPUT_FORMATS,
    QUANT_CALIBRATIONS,
    QUANT_FORMATS,
    QUANT_RANGES,
    QUANTIZE_CHOICES,
    STORAGES,
    TEXT,
    Option,
    Range,
)

ARTIFACT: tuple[Option, ...] = (
    Option(
        "quantize", TEXT, "none",
        "none, int8 or int8-dynamic: after pruning, int8 quantization with onnxruntime "
        "(int8: static, calibrated on the run's calibration data; int8-dynamic: activations "
        "quantized at run time, best for transformers). Symmetric weights keep pruned zeros. "
        "The fidelity check, gates and --sparsity auto judge the quantized file.",
        DEPLOY, choices=QUANTIZE_CHOICES, click_choice=False,
    ),
    Option(
        "quant_format", TEXT, None,
        "With --quantize int8: qdq (default) (QuantizeLinear/DequantizeLinear pairs) or "
        "qoperator (QLinearConv, QLinearMatMul...).",
        DEPLOY, optional=True, choices=QUANT_FORMATS, click_choice=False,
    ),
    Option(
        "per_channel", FLAG, True,
        "With --quantize: one weight scale per output channel, or one per tensor.",
        DEPLOY, flags=("--per-channel/--per-tensor",),
    ),
    Option(
        "quant_calibration", TEXT, None,
        "With --quantize int8: activation range calibration, minmax (default), entropy or "
        "percentile.",
        DEPLOY, optional=True, choices=QUANT_CALIBRATIONS, click_choice=False,
    ),
    Option(
        "quant_range", TEXT, None,
        "With --quantize: int8 weights in 7 bits (reduced; default for int8: onnxruntime's "
        "x86 kernels without VNNI saturate on full-range pairs) or 8 bits (full; default for "
        "int8-dynamic; ARM and VNNI CPUs do not saturate).",
        DEPLOY, optional=True, choices=QUANT_RANGES, click_choice=False,
    ),
    Option(
        "storage", TEXT, "dense",
        "dense, or sparse: store each weight that is smaller so as an ONNX sparse_initializer "
        "(onnxruntime densifies it at load: a smaller file, not a faster model).",
        DEPLOY, choices=STORAGES, click_choice=False,
    ),
    Option(
        "output_format", TEXT, "onnx",
        "onnx, or ort: write onnxruntime's mobile format (.ort, by onnxruntime's own "
        "converter; sparse weights stay sparse). The output must be named NAME.ort.",
        DEPLOY, flags=("--format",), choices=OUTPUT_FORMATS,
        click_choice=False,
    ),
    Option(
        "embedding_bits", INT, None,
        "With --quantize: embedding tables (Gather on a weight) in 8 bits (default; one scale "
        "per table) or 4 (onnxruntime's GatherBlockQuantized, int4 blocks of 32: half the "
        "bytes).",
        DEPLOY, optional=True,  # 8 or 4: checked by DeployConfig
    ),
    Option(
        "embedding_sparsity", NUMBER, 0.0,
        "Zero this fraction of the smallest entries of every row of each embedding table "
        "(never a whole row); the tables are otherwise never pruned.",
        DEPLOY, range=Range(0, 1),
    ),
)  # fmt: skip
