"""Prune Silero VAD (an If on the sample rate: a 16 kHz and an 8 kHz branch) end to end.

Checks pruning inside If branches on a real export. Needs ``silero_vad.onnx`` from the
``silero-vad`` wheel (6.2.3 measured):

    pip download silero-vad==6.2.3 --no-deps -d /tmp/silero
    cd /tmp/silero && unzip -o silero_vad-6.2.3-py3-none-any.whl silero_vad/data/silero_vad.onnx
    python benchmarks/silero_vad.py /tmp/silero/silero_vad/data/silero_vad.onnx

No speech corpus is bundled: calibration and check windows are synthetic (harmonic tones under
an envelope plus noise, alternating with near-silence), 96 calibration and 64 check windows
per rate, state zero, one window per run (the model's own batch of 1). Prints, per method,
rate mode and sparsity: the achieved sparsity over the pruned layers, the run's standardized
score on its held-out windows, and per rate the largest and mean change of the speech
probability and the share of windows whose decision (p > 0.5) is unchanged.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import onnxprune

RATES = {16000: (512, 64), 8000: (256, 32)}  # samples per window, context samples


def windows(rate: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """[count, context + window] float32: odd rows voiced, even rows near-silence."""
    size, context = RATES[rate]
    t = np.arange(size + context) / rate
    rows = []
    for k in range(count):
        signal = np.zeros_like(t)
        if k % 2:
            f0 = rng.uniform(90, 250)
            for h in range(1, 8):
                signal += np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h
            signal *= 0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 6) * t))
        signal += rng.normal(0, 0.02 if k % 2 else 0.01, t.shape)
        rows.append(signal.astype(np.float32))
    return np.stack(rows)


def stacked(rate: int, count: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One stacked chunk: ``count`` complete feeds (input [1, n], state [2, 1, 128], sr [])."""
    return {
        "input": windows(rate, count, rng)[:, None, :],
        "state": np.zeros((count, 2, 1, 128), np.float32),
        "sr": np.full(count, rate, np.int64),
    }


def probabilities(path: Path, chunk: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = []
    for i in range(len(chunk["sr"])):
        feed = {name: chunk[name][i] for name in ("input", "state")}
        feed["sr"] = np.asarray(chunk["sr"][i])
        out.append(session.run(["output"], feed)[0].reshape(-1))
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--methods", nargs="+", default=["contrib", "wanda", "magnitude"])
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.3, 0.5])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    calib = {rate: stacked(rate, 96, rng) for rate in RATES}
    check = {rate: stacked(rate, 64, rng) for rate in RATES}
    reference = {rate: probabilities(args.model, chunk) for rate, chunk in check.items()}
    print("| method | calibrated on | sparsity | achieved | score | rate | max dp | mean dp "
          "| same decision | time |")  # fmt: skip
    print("| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            for mode in ("both rates", "16 kHz only"):
                data = [calib[16000]] + ([calib[8000]] if mode == "both rates" else [])
                for sparsity in args.sparsities:
                    out = Path(tmp) / "vad.onnx"
                    clock = time.perf_counter()
                    report = onnxprune.prune(
                        args.model, data, sparsity=sparsity, method=method, output=out
                    )
                    seconds = time.perf_counter() - clock
                    assert report.fidelity is not None
                    for rate, chunk in check.items():
                        pruned = probabilities(out, chunk)
                        change = np.abs(pruned - reference[rate])
                        same = np.mean((pruned > 0.5) == (reference[rate] > 0.5))
                        print(
                            f"| {method} | {mode} | {sparsity:.1f} "
                            f"| {report.achieved_sparsity:.4f} "
                            f"| {report.fidelity.score:.4f} | {rate // 1000} kHz "
                            f"| {change.max():.4f} | {change.mean():.4f} | {same:.3f} "
                            f"| {seconds:.1f}s |"
                        )


if __name__ == "__main__":
    main()
