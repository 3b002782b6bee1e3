"""The benchmark models: their files, building them, running them, this suite's own metric."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO_ROOT / "benchmarks"
DEFAULT_MARKDOWN = REPO_ROOT / "BENCHMARKS.md"
DEFAULT_RESULTS = BENCH_DIR / "results.json"

BATCH_SIZE = 32
ALL_MODELS = ("digits_cnn", "digits_mlp", "minilm", "mobile")
DIGITS_MODELS = ("digits_cnn", "digits_mlp")
# What the quality grid measures per model (and so how it is run and rendered):
# "accuracy": labelled test split; "embedding": pooled sentence-embedding cosine with the dense
# model; "agreement": top-1 agreement with the dense model, from the tool's own comparison.
METRIC = {
    "digits_cnn": "accuracy",
    "digits_mlp": "accuracy",
    "minilm": "embedding",
    "mobile": "agreement",
}
# File written by ``build_digits.train_and_export`` -> its committed copy (relative to the repo
# root) that ``build_digits.py --bundle`` regenerates.
DIGITS_BUNDLE: dict[str, str] = {
    "digits_cnn.onnx": "examples/digits_cnn.onnx",
    "digits_mlp.onnx": "examples/digits_mlp.onnx",
    "digits_calib_cnn.npz": "calibration_data/digits/digits_calib.npz",
    "digits_test_cnn.npz": "calibration_data/digits_test.npz",
    "digits_calib_mlp.npz": "calibration_data/digits_mlp/digits_calib.npz",
    "digits_test_mlp.npz": "calibration_data/digits_mlp_test.npz",
}


@dataclass(frozen=True)
class ModelFiles:
    name: str
    onnx: Path
    calib: Path
    eval: Path

    def paths(self) -> tuple[Path, Path, Path]:
        return self.onnx, self.calib, self.eval


def model_files(models_dir: Path, name: str) -> ModelFiles:
    if name in ("mobile", "minilm"):
        stem = models_dir / name
        return ModelFiles(name, stem.with_suffix(".onnx"), Path(f"{stem}_calib.npz"),
                          Path(f"{stem}_eval.npz"))  # fmt: skip
    suffix = name.removeprefix("digits_")
    return ModelFiles(
        name,
        models_dir / f"{name}.onnx",
        models_dir / f"digits_calib_{suffix}.npz",
        models_dir / f"digits_test_{suffix}.npz",
    )


def copy_digits_bundle(models_dir: Path) -> bool:
    """Copy the committed digits files (``build_digits.py --bundle``: the same build) into
    ``models_dir`` under the names ``train_and_export`` writes (no PyTorch needed); False
    when the checkout lacks them."""
    sources = {name: REPO_ROOT / path for name, path in DIGITS_BUNDLE.items()}
    if not all(p.is_file() for p in sources.values()):
        return False
    models_dir.mkdir(parents=True, exist_ok=True)
    for name, source in sources.items():
        shutil.copyfile(source, models_dir / name)
    return True


def ensure_models(models_dir: Path, names: Sequence[str]) -> dict[str, Any]:
    """Build whatever is missing; return the MiniLM source record (empty without MiniLM)."""
    sys.path.insert(0, str(BENCH_DIR))
    models_dir.mkdir(parents=True, exist_ok=True)
    missing = [
        p
        for n in names
        if n in DIGITS_MODELS
        for p in model_files(models_dir, n).paths()
        if not p.is_file()
    ]
    if missing:
        print(f"building the digits models into {models_dir} (missing: {missing[0].name}, ...)")
        import build_digits

        build_digits.train_and_export(models_dir)
    else:
        print(f"digits models present in {models_dir}")
    if "mobile" in names:
        import build_mobile

        build_mobile.build(models_dir)
    if "minilm" not in names:
        return {}
    import build_minilm

    record: dict[str, Any] = build_minilm.build(models_dir)
    return record


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def run_batches(
    session: ort.InferenceSession, arrays: dict[str, np.ndarray], count: int, batch: int
) -> list[np.ndarray]:
    """First output of ``session`` over the first ``count`` samples, in batches."""
    names = [i.name for i in session.get_inputs()]
    outputs = []
    for start in range(0, count, batch):
        stop = min(start + batch, count)
        feed = {n: arrays[n][start:stop] for n in names}
        outputs.append(session.run(None, feed)[0])
    return outputs


def new_session(path: Path) -> ort.InferenceSession:
    """A session with default options (as a user would create it)."""
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def pooled_embeddings(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked mean over tokens, then L2 normalisation (sentence-transformers pooling).

    ``hidden``: [batch, tokens, width]; ``mask``: [batch, tokens]; result: [batch, width]."""
    weights = mask[..., None].astype(np.float64)
    summed = (hidden.astype(np.float64) * weights).sum(axis=1)
    pooled = summed / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return pooled / np.maximum(norms, 1e-12)


class Evaluator:
    """This suite's own metric for one model: test accuracy or pooled-embedding cosine."""

    def __init__(self, files: ModelFiles) -> None:
        self.files = files
        self.data = load_npz(files.eval)
        self.count = len(next(iter(self.data.values())))
        self.is_text = METRIC.get(files.name) == "embedding"
        self.dense = self._outputs(files.onnx)

    def _outputs(self, path: Path) -> np.ndarray:
        session = new_session(path)
        parts = run_batches(session, self.data, self.count, BATCH_SIZE)
        if self.is_text:
            mask = self.data["attention_mask"]
            return np.concatenate(
                [
                    pooled_embeddings(p, mask[i * BATCH_SIZE : i * BATCH_SIZE + len(p)])
                    for i, p in enumerate(parts)
                ]
            )
        return np.concatenate(parts)

    def dense_metric(self) -> float | None:
        if self.is_text:
            return None
        return float((self.dense.argmax(axis=1) == self.data["labels"]).mean())

    def measure(self, pruned: Path) -> dict[str, float]:
        out = self._outputs(pruned)
        if self.is_text:
            cosines = (out * self.dense).sum(axis=1)
            return {"cosine_mean": float(cosines.mean()), "cosine_min": float(cosines.min())}
        return {"accuracy": float((out.argmax(axis=1) == self.data["labels"]).mean())}
