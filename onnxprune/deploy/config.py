"""The artifact options (``DeployConfig``), a stage's record, and the combinations refused
before anything runs."""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import onnx

from ..embeddings import EMBEDDING_BITS
from ..errors import UsageError
from ..options import DEPLOY, check_fields, default
from ..verify import Fidelity

# Quantized ops: a model holding any of them is already quantized.
_QUANTIZED_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "MatMulInteger",
    "ConvInteger",
}


@dataclass(frozen=True)
class DeployConfig:
    """What happens to the pruned model before it is written. Mirrors the CLI options."""

    quantize: str = default("quantize")
    # None: the default of the static quantizer (qdq, minmax); refused with int8-dynamic,
    # which has neither (QOperator ops, activation ranges measured at run time).
    quant_format: str | None = default("quant_format")
    per_channel: bool = default("per_channel")
    quant_calibration: str | None = default("quant_calibration")
    storage: str = default("storage")
    # --quant-range: int8 weights in [-63, 63] ("reduced", 7 bits) or [-127, 127] ("full").
    # None: reduced for --quantize int8, full for int8-dynamic (``weight_range``).
    quant_range: str | None = default("quant_range")
    # --format: "onnx", or "ort" (onnxruntime's mobile format, the written file's format).
    output_format: str = default("output_format")
    # --embedding-bits: with --quantize, 8 (onnxruntime's int8 Gather, one scale per table) or
    # 4 (int4 GatherBlockQuantized, blocks of 32); None: 8. See embeddings.py.
    embedding_bits: int | None = default("embedding_bits")
    # --embedding-sparsity: the fraction of each embedding row zeroed (0: tables untouched).
    embedding_sparsity: float = default("embedding_sparsity")

    def __post_init__(self) -> None:
        check_fields(self, DEPLOY)  # kinds, choices and ranges (``onnxprune.options``)
        if self.embedding_bits is not None and self.embedding_bits not in EMBEDDING_BITS:
            raise UsageError(f"--embedding-bits must be 8 or 4, got {self.embedding_bits!r}")
        if self.embedding_bits == 4 and self.output_format == "ort":
            raise UsageError(
                "--embedding-bits 4 cannot be written with --format ort: onnxruntime's .ort "
                "format has no int4 tensors (use --format onnx)"
            )
        if self.quantize == "none":
            for option, used in (
                ("--embedding-bits", self.embedding_bits is not None),
                ("--quant-format", self.quant_format is not None),
                ("--quant-calibration", self.quant_calibration is not None),
                ("--quant-range", self.quant_range is not None),
                ("--per-tensor", not self.per_channel),
            ):
                if used:
                    raise UsageError(f"{option} needs --quantize int8 or int8-dynamic")
        if self.quantize == "int8-dynamic":
            for option, value in (
                ("--quant-format", self.quant_format),
                ("--quant-calibration", self.quant_calibration),
            ):
                if value is not None:
                    raise UsageError(
                        f"{option} applies to --quantize int8 (static); int8-dynamic measures "
                        "activation ranges at run time"
                    )

    @property
    def format(self) -> str:
        return self.quant_format or "qdq"

    @property
    def calibration(self) -> str:
        return self.quant_calibration or "minmax"

    @property
    def reduce_range(self) -> bool:
        """7-bit weights. onnxruntime's x86 int8 kernels without VNNI (AVX2) multiply u8
        activations by s8 weights in pairs summed into int16 (vpmaddubsw), which saturates
        when both use the full range; measured on the digits CNN pruned 0.8 with per-channel
        QDQ on an AVX2 CPU: accuracy 0.9800 fused vs 0.9933 for the same file with the fusions
        off, 0.9933 fused with reduced range (BENCHMARKS.md). Static int8 defaults to reduced;
        int8-dynamic keeps full (MiniLM measured within target with it)."""
        if self.quant_range is not None:
            return self.quant_range == "reduced"
        return self.quantize == "int8"

    @property
    def changes_weights(self) -> bool:
        """Whether the artifact's weights (and so its outputs) differ from the pruned model's:
        sparse storage and the .ort format keep them exactly."""
        return self.quantize != "none" or self.embedding_sparsity > 0

    @property
    def active(self) -> bool:
        return self.changes_weights or self.storage != "dense" or self.output_format != "onnx"

    @property
    def one_file(self) -> bool:
        """Whether the artifact must hold its tensors in one file: sparse initializers stay
        inside the protobuf, and a .ort file is one flatbuffer."""
        return self.storage == "sparse" or self.output_format == "ort"

    def arguments(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: object) -> DeployConfig:
        """The options a recipe recorded (``arguments()``), checked like the command line's;
        a key missing from the record (an option added since) takes its default."""
        if not isinstance(record, dict):
            raise UsageError(f"'deploy' must map artifact options to values, got {record!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise UsageError(f"'deploy': unknown option(s) {', '.join(map(repr, unknown))}")
        return cls(**record)


@dataclass
class ArtifactStage:
    """One stage of the artifact: its size and its fidelity against the original model."""

    name: str
    file_size: int
    gzip_size: int | None
    fidelity: Fidelity | None = None
    # Sparse storage: how many initializers were stored as sparse_initializer.
    sparse_tensors: int | None = None


def refuse_impossible(
    deploy: DeployConfig, model: onnx.ModelProto, big: bool, output: Path
) -> None:
    """Combinations that cannot work, refused in one line before anything runs."""
    if deploy.quantize != "none":
        if big:
            raise UsageError("--quantize is not supported on models over 1.5 GB yet")
        quantized = sorted({n.op_type for n in model.graph.node} & _QUANTIZED_OPS)
        if quantized:
            raise UsageError(
                f"--quantize: the model is already quantized ({', '.join(quantized)}); prune "
                "its float version and quantize that"
            )
    if deploy.embedding_sparsity > 0 and big:
        raise UsageError("--embedding-sparsity is not supported on models over 1.5 GB yet")
    # A model under the big-model size with external data (as torch's dynamo exporter writes
    # even tiny ones) is written inline for these two (``DeployConfig.one_file``).
    if deploy.output_format == "ort":
        if big:
            raise UsageError(
                "--format ort cannot hold external data (the .ort file is one flatbuffer under "
                "2 GB); use --format onnx"
            )
        if not output.name.lower().endswith(".ort"):
            raise UsageError(
                f"--format ort writes onnxruntime's .ort format: name the output NAME.ort "
                f"(-o {output.with_suffix('.ort').name}), not {output.name}"
            )
        if importlib.util.find_spec("onnxruntime.tools.convert_onnx_models_to_ort") is None:
            raise UsageError(
                "--format ort needs onnxruntime's converter (onnxruntime.tools), which this "
                "onnxruntime build does not ship"
            )
    if deploy.storage == "sparse":
        if big:
            raise UsageError(
                "--storage sparse cannot be combined with external data: sparse initializers "
                "must stay inside the 2 GB protobuf (use --storage dense)"
            )
        if model.graph.sparse_initializer:
            raise UsageError(
                "--storage sparse: the model already has sparse initializers; onnxprune "
                "prunes dense weights (densify it first)"
            )
