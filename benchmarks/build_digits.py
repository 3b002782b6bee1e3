"""Build the small ``load_digits`` example models and calibration data for onnxprune.

This is a benchmark / model-building extra; it is the only place where PyTorch is used.
It trains two small classifiers on scikit-learn's ``load_digits`` data set (8x8 grey-scale
images, 10 classes), exports them to ONNX and writes matching calibration / test arrays:

* ``digits_cnn``: input ``[batch, 1, 8, 8]`` (NCHW),
  Conv-BatchNorm-ReLU-Conv-BatchNorm-ReLU-MaxPool-Flatten-Gemm-ReLU-Gemm.
* ``digits_mlp``: input ``[batch, 64]`` (flattened pixels), Gemm-ReLU-Gemm-ReLU-Gemm.

Both graphs use opset 17, input name ``input``, output name ``logits`` and a dynamic batch
axis. Weights are stored as initializers inside the ``.onnx`` file (no external data).
Pixel values are scaled to ``[0, 1]`` (divided by 16) and stored as float32; labels are int64.
The train/test split is a fixed stratified split (``test_size=0.25``, ``random_state=0``).

Every exported model is checked with ``onnx.checker.check_model(..., full_check=True)`` and
run with onnxruntime; its outputs must match PyTorch (max abs diff < 1e-4), and its test
accuracy is reported.

Usage::

    # write everything into a directory of your choice
    python benchmarks/build_digits.py --out-dir /tmp/digits [--epochs N]

    # regenerate the committed files (paths relative to the repository root)
    python benchmarks/build_digits.py --bundle

Files written by ``--out-dir DIR``:

* ``digits_cnn.onnx``, ``digits_mlp.onnx``
* ``digits_calib_cnn.npz`` (key ``input``: train split, ``[N, 1, 8, 8]`` float32)
* ``digits_test_cnn.npz`` (keys ``input``: ``[M, 1, 8, 8]`` float32, ``labels``: ``[M]`` int64)
* ``digits_calib_mlp.npz`` / ``digits_test_mlp.npz`` (same, with input shape ``[N, 64]``)

Files written by ``--bundle`` (see ``BUNDLE_FILES``):

* ``examples/digits_cnn.onnx``, ``examples/digits_mlp.onnx``
* ``calibration_data/digits/digits_calib.npz`` (CNN calibration = full train split)
* ``calibration_data/digits_test.npz`` (CNN test split with labels)
* ``calibration_data/digits_mlp/digits_calib.npz`` (MLP calibration = full train split)
* ``calibration_data/digits_mlp_test.npz`` (MLP test split with labels)

Other benchmark code can call :func:`train_and_export` directly.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchsuite.models import DIGITS_BUNDLE

SEED = 0
SPLIT_SEED = 0
TEST_SIZE = 0.25
OPSET = 17
DEFAULT_EPOCHS = 40
BATCH_SIZE = 64
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 1e-4
MAX_ABS_DIFF = 1e-4
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"

REPO_ROOT = Path(__file__).resolve().parents[1]

BUNDLE_FILES = DIGITS_BUNDLE


class DigitsCNN(nn.Module):
    """Small CNN for 8x8 digits: two Conv-BN-ReLU blocks, max-pool and a 2-layer head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.flatten(self.pool(x))
        return self.fc2(self.relu3(self.fc1(x)))


class DigitsMLP(nn.Module):
    """Three-layer MLP on the 64 flattened pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 256)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(256, 128)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.fc1(x))
        x = self.relu2(self.fc2(x))
        return self.fc3(x)


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seed all RNGs and enable deterministic torch kernels; restore torch settings on exit."""
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_threads = torch.get_num_threads()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    with contextlib.suppress(RuntimeError):  # works on CPU; kept optional for other builds
        torch.use_deterministic_algorithms(mode=True)
    # A single intra-op thread keeps float reductions in the same order on every machine.
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(x_train, x_test, y_train, y_test)``; x is ``[N, 64]`` float32 in [0, 1]."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y
    )
    return x_train, x_test, y_train, y_test


def _train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> None:
    """Train ``model`` in place with Adam + cosine LR decay on shuffled mini-batches."""
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), BATCH_SIZE):
            idx = perm[start : start + BATCH_SIZE]
            if len(idx) < 2:  # BatchNorm needs more than one sample per batch
                continue
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        sched.step()
    model.eval()


def _inline_initializer_identities(model: onnx.ModelProto) -> None:
    """Replace ``Identity(initializer)`` nodes by a copy of the initializer.

    The TorchScript exporter de-duplicates initializers with equal values and re-creates the
    duplicates through Identity nodes; a pruning tool is happier with plain initializers.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    keep: list[onnx.NodeProto] = []
    for node in graph.node:
        if (
            node.op_type == "Identity"
            and node.input[0] in inits
            and node.output[0] not in graph_outputs
        ):
            arr = numpy_helper.to_array(inits[node.input[0]])
            graph.initializer.append(numpy_helper.from_array(arr.copy(), node.output[0]))
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def _export(model: nn.Module, example: torch.Tensor, path: Path) -> str:
    """Export ``model`` to ``path`` as a single self-contained ONNX file.

    Tries the TorchScript exporter (``dynamo=False``) first, because it can keep the
    BatchNormalization nodes; falls back to the dynamo exporter. Returns the exporter used.
    """
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
                opset_version=OPSET,
                dynamo=False,
                # EVAL mode + no constant folding: BatchNormalization is not fused into Conv.
                training=torch.onnx.TrainingMode.EVAL,
                do_constant_folding=False,
                export_params=True,
                keep_initializers_as_inputs=False,
            )
        exporter = "torchscript"
    except Exception as torchscript_error:
        print(f"  TorchScript exporter failed ({torchscript_error!r}); using the dynamo exporter")
        program = torch.onnx.export(
            model,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim(BATCH_DIM)},),
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            optimize=True,
        )
        if program is None:
            raise RuntimeError("dynamo exporter returned no ONNX program") from torchscript_error
        program.save(str(path), external_data=False)
        exporter = "dynamo"

    onnx_model = onnx.load(str(path))
    _inline_initializer_identities(onnx_model)
    for tensor in onnx_model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise RuntimeError(f"{path}: initializer {tensor.name} uses external data")
    onnx.save(onnx_model, str(path))
    return exporter


def _verify(
    path: Path, model: nn.Module, x_test: np.ndarray, y_test: np.ndarray
) -> tuple[float, float]:
    """Check the ONNX file, compare it with torch and return ``(accuracy, max_abs_diff)``."""
    onnx_model = onnx.load(str(path))
    onnx.checker.check_model(onnx_model, full_check=True)
    if onnx_model.opset_import[0].version != OPSET:
        raise RuntimeError(f"{path}: unexpected opset {onnx_model.opset_import[0].version}")
    dims = onnx_model.graph.input[0].type.tensor_type.shape.dim
    if dims[0].dim_param == "" or dims[0].HasField("dim_value"):
        raise RuntimeError(f"{path}: batch axis is not dynamic")

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if [i.name for i in sess.get_inputs()] != [INPUT_NAME]:
        raise RuntimeError(f"{path}: unexpected input names")
    if [o.name for o in sess.get_outputs()] != [OUTPUT_NAME]:
        raise RuntimeError(f"{path}: unexpected output names")

    with torch.no_grad():
        ref = model(torch.from_numpy(x_test)).numpy()
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: x_test})[0]
    single = sess.run([OUTPUT_NAME], {INPUT_NAME: x_test[:1]})[0]  # batch of one
    diff = float(max(np.abs(got - ref).max(), np.abs(single - ref[:1]).max()))
    if diff >= MAX_ABS_DIFF:
        raise RuntimeError(f"{path}: ONNX vs torch max abs diff {diff:.3g} >= {MAX_ABS_DIFF}")
    acc = float((got.argmax(axis=1) == y_test).mean())
    return acc, diff


def train_and_export(out_dir: Path, epochs: int = DEFAULT_EPOCHS) -> dict[str, float]:
    """Train both digits models, export them and their data to ``out_dir``.

    Returns the ONNX (onnxruntime) test accuracy per model: ``{"digits_cnn": ...,
    "digits_mlp": ...}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x_train, x_test, y_train, y_test = load_split()

    variants: dict[str, tuple[type[nn.Module], tuple[int, ...], str]] = {
        "digits_cnn": (DigitsCNN, (1, 8, 8), "cnn"),
        "digits_mlp": (DigitsMLP, (64,), "mlp"),
    }
    accuracies: dict[str, float] = {}
    for name, (cls, sample_shape, suffix) in variants.items():
        xtr = np.ascontiguousarray(x_train.reshape(-1, *sample_shape))
        xte = np.ascontiguousarray(x_test.reshape(-1, *sample_shape))
        with _deterministic(SEED):
            model = cls()
            _train(model, xtr, y_train, epochs, SEED)
            onnx_path = out_dir / f"{name}.onnx"
            exporter = _export(model, torch.from_numpy(xte[:2]), onnx_path)
            acc, diff = _verify(onnx_path, model, xte, y_test)

        np.savez_compressed(out_dir / f"digits_calib_{suffix}.npz", input=xtr)
        np.savez_compressed(out_dir / f"digits_test_{suffix}.npz", input=xte, labels=y_test)
        ops = [n.op_type for n in onnx.load(str(onnx_path)).graph.node]
        print(
            f"{name}: ONNX test accuracy {acc:.4f} ({len(y_test)} samples), "
            f"max |onnx - torch| {diff:.2e}, exporter {exporter}, "
            f"{onnx_path.stat().st_size} bytes"
        )
        print(f"  ops: {ops}")
        accuracies[name] = acc
    return accuracies


def write_bundle(epochs: int = DEFAULT_EPOCHS, repo_root: Path = REPO_ROOT) -> dict[str, float]:
    """Regenerate the committed example files (``BUNDLE_FILES``) under ``repo_root``."""
    with tempfile.TemporaryDirectory() as tmp:
        accuracies = train_and_export(Path(tmp), epochs)
        for src, dst in BUNDLE_FILES.items():
            target = repo_root / dst
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(tmp) / src, target)
            print(f"wrote {dst} ({target.stat().st_size} bytes)")
    return accuracies


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out-dir", type=Path, help="directory to write models and data into")
    where.add_argument(
        "--bundle",
        action="store_true",
        help="write the committed files under examples/ and calibration_data/ of the repo",
    )
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="training epochs")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")

    start = time.perf_counter()
    if args.bundle:
        accuracies = write_bundle(args.epochs)
    else:
        accuracies = train_and_export(args.out_dir, args.epochs)
    for name, acc in accuracies.items():
        print(f"{name} test accuracy: {acc:.4f}")
    print(f"done in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
