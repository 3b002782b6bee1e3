"""Re-time MiniLM artifacts against the dense model, interleaved, on the held-out sentences.

    python benchmarks/time_minilm_artifacts.py --dense minilm.onnx --eval minilm_eval.npz \
        --artifact int8=p05_q.onnx --artifact structured=s03_p05_q.onnx --rounds 12

Each round runs every model over the same samples at batch 32 (and, every third round, at
batch 1); the printed ratio is the median of the per-sample times over the dense model's.
Pause other jobs while it runs: the ratios move by +-0.06 between runs even on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def _seconds_per_sample(
    session: ort.InferenceSession, data: dict[str, np.ndarray], batch: int, count: int
) -> float:
    names = [i.name for i in session.get_inputs()]
    started = time.perf_counter()
    for start in range(0, count, batch):
        session.run(None, {n: data[n][start : start + batch] for n in names})
    return (time.perf_counter() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dense", type=Path, required=True)
    parser.add_argument("--eval", type=Path, required=True, help="npz with the model inputs")
    parser.add_argument("--artifact", action="append", default=[], help="LABEL=PATH")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--samples", type=int, default=128)
    args = parser.parse_args()
    data = dict(np.load(args.eval))
    count = min(args.samples, len(next(iter(data.values()))))
    paths = {
        "dense": args.dense,
        **{a.split("=", 1)[0]: Path(a.split("=", 1)[1]) for a in args.artifact},
    }
    sessions = {
        k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        for k, p in paths.items()
    }
    for session in sessions.values():  # warm-up
        _seconds_per_sample(session, data, 32, 32)
    times: dict[str, dict[int, list[float]]] = {k: {1: [], 32: []} for k in sessions}
    for round_index in range(args.rounds):
        for label, session in sessions.items():
            times[label][32].append(_seconds_per_sample(session, data, 32, count))
            if round_index % 3 == 0:
                times[label][1].append(_seconds_per_sample(session, data, 1, count))
    for batch in (32, 1):
        dense = statistics.median(times["dense"][batch])
        for label in sessions:
            median = statistics.median(times[label][batch])
            print(
                f"batch {batch:2d} {label}: {median * 1e3:.2f} ms/sample, "
                f"{median / dense:.3f}x dense"
            )


if __name__ == "__main__":
    main()
