"""The artifact's stages, run in order and each compared with the original model."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..calibrate.sources import CalibrationSet
from ..compact import compact
from ..embeddings import int4_tables, prune_tables
from ..errors import ModelError
from ..io import gzip_size_bytes, model_size_bytes
from ..session import make_session, run, save_for_session
from ..verify import Fidelity, ReferenceRun
from .config import ArtifactStage, DeployConfig
from .quantize import quantize_int8, quantize_int8_dynamic
from .storage import convert_to_ort, sparse_storage

# One logger for the whole artifact stage, named as before the split.
log = logging.getLogger(__package__)


def first_difference(before: Path, after: Path, reference: ReferenceRun) -> str | None:
    """The first output whose values differ (bit for bit) between the two files in
    onnxruntime on the samples the fidelity check uses, or None when all are identical."""
    a, b = make_session(before), make_session(after)
    names = [o.name for o in a.get_outputs()]
    data = reference.dataset
    for batch in data.batches(reference.selected, reference.batch_size):
        expected = run(a, names, batch.feed, data.name)
        got = run(b, names, batch.feed, data.name)
        for name, x, y in zip(names, expected, got, strict=True):
            if not np.array_equal(x, y):
                return name
    return None


def check_identical(dense: Path, sparse: Path, reference: ReferenceRun) -> None:
    """The sparse-stored file must load in onnxruntime and give exactly the dense-stored
    file's outputs (the same weights once onnxruntime densifies them at load), on the samples
    the fidelity check uses."""
    name = first_difference(dense, sparse, reference)
    if name is not None:
        raise ModelError(
            f"--storage sparse: output {name!r} of the sparse-stored model differs from "
            "the dense-stored one (use --storage dense)"
        )


def compact_file(source: Path, destination: Path, keep: Path, reference: ReferenceRun) -> Path:
    """``source`` (a quantized file) without the quantizer's waste (``compact.compact``; tensor
    names that ``keep``, the model before quantization, has stay), when onnxruntime gives it
    bit-identical outputs on the fidelity samples; otherwise ``source`` itself, logged."""
    original = onnx.load(str(keep), load_external_data=False)
    names = {n for node in original.graph.node for n in [*node.input, *node.output]}
    names |= {t.name for t in original.graph.initializer}
    del original
    onnx.save_model(compact(onnx.load(str(source)), names), str(destination))
    different = first_difference(source, destination, reference)
    if different is not None:
        log.info("compaction changed output %r: the quantizer's file is kept as written", different)
        return source
    log.debug("compaction: %d -> %d bytes", model_size_bytes(source), model_size_bytes(destination))
    return destination


def _stage(name: str, path: Path, fidelity: Fidelity | None) -> ArtifactStage:
    return ArtifactStage(name, model_size_bytes(path), gzip_size_bytes(path), fidelity)


@dataclass
class Finisher:
    """Turns a written pruned model into the artifact (see the module docstring)."""

    deploy: DeployConfig
    # The run's calibration samples (what the pruning was calibrated on), for the quantizer.
    dataset: CalibrationSet
    calib_mask: np.ndarray
    batch_size: int
    # Set by ``stages``: the last ONNX file (the artifact itself unless --format ort).
    last_onnx: Path | None = None

    def _prune_embeddings(self, pruned: Path, work: Path) -> tuple[Path, list[str]]:
        """--embedding-sparsity: ``pruned`` with its embedding rows pruned (a new file)."""
        if not self.deploy.embedding_sparsity:
            return pruned, []
        model = onnx.load(str(pruned))
        if not prune_tables(model, self.deploy.embedding_sparsity):
            return pruned, [
                "--embedding-sparsity: the model has no embedding table (Gather on a "
                "float initializer); nothing pruned"
            ]
        destination = work / "embeddings.onnx"
        onnx.save_model(model, str(destination))
        return destination, []

    def _quantize(self, pruned: Path, work: Path) -> tuple[Path, list[str]]:
        if self.deploy.quantize == "none":
            return pruned, []
        int4 = self.deploy.embedding_bits == 4
        quantized = work / "int8.onnx"
        if self.deploy.quantize == "int8-dynamic":
            notes = quantize_int8_dynamic(pruned, quantized, self.deploy, skip_gather=int4)
        else:
            notes = quantize_int8(
                pruned, quantized, self.deploy, self.dataset, self.calib_mask, self.batch_size,
                skip_gather=int4,
            )  # fmt: skip
        if int4:
            # After int8 (which left every Gather float): the int8 quantizers' shape inference
            # does not know GatherBlockQuantized (com.microsoft) and would lose the types after it.
            model = onnx.load(str(quantized))
            if int4_tables(model):
                onnx.save_model(model, str(quantized))
            else:
                notes.append(
                    "--embedding-bits 4: the model has no embedding table whose width is a "
                    "multiple of 32; nothing stored in int4"
                )
        return quantized, notes

    def stages(
        self, pruned: Path, reference: ReferenceRun, work: Path, pruned_fidelity: Fidelity
    ) -> tuple[Path, list[ArtifactStage], list[str]]:
        """Every stage from ``pruned`` on (files in ``work``), sized and compared with the
        original; the last is the artifact. Returns its path, the stages and report notes."""
        stages = [_stage("pruned", pruned, pruned_fidelity)]
        source, notes = self._prune_embeddings(pruned, work)
        if source != pruned:
            name = f"pruned + embeddings {self.deploy.embedding_sparsity:g}"
            stages.append(_stage(name, source, reference.compare(source)))
        current, quantize_notes = self._quantize(source, work)
        notes += quantize_notes
        if current != source:
            # The quantizer's generated names, node names and unused opset imports go
            # (bit-identical outputs checked): 2.4 KB of the digits CNN's 48 KB.
            current = compact_file(current, work / "compact.onnx", source, reference)
            name = f"{stages[-1].name} + {self.deploy.quantize}"
            if self.deploy.embedding_bits == 4:
                name += " (int4 embeddings)"
            stages.append(_stage(name, current, reference.compare(current)))
        if self.deploy.storage == "sparse":
            stored = work / "sparse.onnx"
            count = sparse_storage(current, stored)
            check_identical(current, stored, reference)
            # Identical outputs (checked above): the fidelity is the dense-stored stage's.
            sparse = _stage(stages[-1].name + " + sparse storage", stored, stages[-1].fidelity)
            sparse.sparse_tensors = count
            stages.append(sparse)
            current = stored
        # The op table describes this file (the .ort flatbuffer is not an ONNX protobuf).
        self.last_onnx = current
        if self.deploy.output_format == "ort":
            converted = work / "model.ort"
            convert_to_ort(current, converted)
            name = stages[-1].name + " as .ort"
            stages.append(_stage(name, converted, reference.compare(converted)))
            current = converted
        return current, stages, notes

    def artifact_fidelity(self, model: onnx.ModelProto, reference: ReferenceRun) -> Fidelity:
        """The artifact's fidelity for a pruned candidate (what searches and sweeps judge).
        Sparse storage is left out: its outputs equal the dense-stored file's (checked on the
        artifact that is written); so is the .ort conversion (the same graph, optimised: its
        fidelity is measured on the written file, which the gates judge)."""
        with tempfile.TemporaryDirectory(prefix="onnxprune-artifact-") as tmp:
            pruned = save_for_session(model, Path(tmp) / "pruned.onnx")
            source, _ = self._prune_embeddings(pruned, Path(tmp))
            artifact, _ = self._quantize(source, Path(tmp))
            return reference.compare(artifact)
