"""The deployable artifact: after pruning (and shrinking), optionally quantize to int8 and store
the remaining zeros sparsely, then check what will be written.

Stages, each a file in the staging directory, each compared with the original model:

1. ``pruned``: the fp32 (or fp16) pruned model, as ``prune()`` always wrote it;
2. ``int8`` (``--quantize int8``): onnxruntime's static quantizer (``quantize_static``) on
   that file, calibrated with the run's own calibration samples through a streaming
   ``CalibrationDataReader``; weights are symmetric int8 (per output channel by default), so a
   pruned weight (exactly 0.0) quantizes to exactly 0 and stays 0 after DequantizeLinear;
   or (``--quantize int8-dynamic``) onnxruntime's ``quantize_dynamic``: the same weights,
   activations quantized per batch at run time;
3. ``sparse`` (``--storage sparse``): every initializer that is smaller as a COO
   ``sparse_initializer`` (values + int64 indices) than dense is rewritten so; onnxruntime
   densifies it again at load, so the outputs must equal the dense-stored file's exactly;
4. ``ort`` (``--format ort``): onnxruntime's mobile format, written by onnxruntime's own
   converter (``onnxruntime.tools.convert_onnx_models_to_ort``, fixed optimisations, no
   platform-specific layout); sparse initializers stay sparse in it. Compared with the
   original like every other stage (the converter's graph optimisations may move the last bits).

The last stage is the artifact; the fidelity check, the gates and ``--sparsity auto`` judge it.
"""

from .config import ArtifactStage, DeployConfig, refuse_impossible
from .finish import Finisher, check_identical, compact_file, first_difference
from .quantize import HISTOGRAM_MAX_SAMPLES, _StreamingReader, quantize_int8, quantize_int8_dynamic
from .storage import convert_to_ort, sparse_storage

__all__ = [
    "HISTOGRAM_MAX_SAMPLES",
    "ArtifactStage",
    "DeployConfig",
    "Finisher",
    "_StreamingReader",
    "check_identical",
    "compact_file",
    "convert_to_ort",
    "first_difference",
    "quantize_int8",
    "quantize_int8_dynamic",
    "refuse_impossible",
    "sparse_storage",
]
