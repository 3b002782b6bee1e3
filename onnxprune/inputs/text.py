"""Raw text (``.txt`` lines, ``.jsonl`` records) tokenised into calibration feeds."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..calibrate.sources import InputSpec
from ..errors import CalibrationDataError, UsageError

# Inputs a tokenizer fills, by name (Hugging Face / Optimum exports).
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Lines tokenised per streamed chunk (batches are re-cut to --batch-size later).
TEXT_CHUNK = 64


def _load_tokenizer(path: Path) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError as err:
        raise UsageError(
            "text calibration needs the tokenizers package: pip install 'onnxprune[text]'"
        ) from err
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises its own Exception subclass on bad files
        raise CalibrationDataError(f"cannot read tokenizer {path}: {err}") from err


def _text_lines(path: Path) -> Iterator[tuple[str, str | None]]:
    """(text, text_pair) per non-empty line: plain lines (.txt), or JSON strings / objects with
    "text" and an optional "text_pair" (.jsonl). Read lazily, line by line."""
    jsonl = path.suffix.lower() == ".jsonl"
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                if not jsonl:
                    yield line, None
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as err:
                    raise CalibrationDataError(f"{path}:{number}: not JSON ({err.msg})") from err
                if isinstance(item, str):
                    yield item, None
                elif isinstance(item, dict) and isinstance(item.get("text"), str):
                    pair = item.get("text_pair")
                    yield item["text"], pair if isinstance(pair, str) else None
                else:
                    raise CalibrationDataError(
                        f'{path}:{number}: expected a JSON string or an object with "text"'
                    )
    except UnicodeDecodeError as err:
        raise CalibrationDataError(f"{path} is not UTF-8 text: {err.reason}") from err
    except OSError as err:
        raise CalibrationDataError(f"cannot read {path}: {err.strerror or err}") from err


def text_source(
    path: Path, tokenizer_path: Path, specs: list[InputSpec], max_length: int
) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
    """A streamed source: ``TEXT_CHUNK`` lines at a time, tokenised to the inputs named
    input_ids / attention_mask / token_type_ids ([chunk, seq], padded to the chunk's longest
    sequence, or to the model's fixed sequence length, truncated to ``max_length``)."""
    if max_length < 1:
        raise UsageError(f"--max-length must be at least 1, got {max_length}")
    unknown = [s.name for s in specs if s.name not in TOKEN_INPUTS]
    if unknown or "input_ids" not in {s.name for s in specs}:
        raise CalibrationDataError(
            f"text calibration fills inputs named {', '.join(TOKEN_INPUTS)}; the model's inputs "
            f"are {', '.join(s.name for s in specs)}"
        )
    tokenizer = _load_tokenizer(tokenizer_path)
    by_name = {s.name: s for s in specs}
    fixed = {s.shape[1] for s in specs if len(s.shape) == 2 and isinstance(s.shape[1], int)}
    length = min(fixed) if fixed else None
    tokenizer.enable_truncation(max_length=length or max_length)
    pad_id = tokenizer.token_to_id("[PAD]") or tokenizer.token_to_id("<pad>") or 0
    tokenizer.enable_padding(pad_id=pad_id, length=length)

    def chunks() -> Iterator[dict[str, np.ndarray]]:
        batch: list[tuple[str, str | None]] = []
        for item in _text_lines(path):
            batch.append(item)
            if len(batch) == TEXT_CHUNK:
                yield encode(batch)
                batch = []
        if batch:
            yield encode(batch)

    def encode(batch: list[tuple[str, str | None]]) -> dict[str, np.ndarray]:
        inputs: list[Any] = [text if pair is None else (text, pair) for text, pair in batch]
        encodings = tokenizer.encode_batch(inputs)
        fields = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        return {name: np.asarray(fields[name], dtype=spec.dtype) for name, spec in by_name.items()}

    return chunks
