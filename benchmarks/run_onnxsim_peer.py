"""The ONNX-native peer: onnxsim 0.8.1's ``apply_sparsegpt_pruning`` / ``apply_wanda_pruning``
on the benchmark models, at the quality points, with their wall time.

Same models, calibration samples and measures as ``run_refit_diag.py`` (MiniLM: masked
mean-pooled embedding cosine on the 256 held-out sentences; EfficientNet-Lite0: top-1
agreement and logit cosine with the dense model on the 128 held-out crops), the calibration
samples handed to onnxsim as batches of 32. Needs ``pip install onnxsim==0.8.1`` (not a
dependency of onnxprune).

    nice -n 15 python benchmarks/run_onnxsim_peer.py --model mobile \\
        --out benchmarks/onnxsim_peer_results.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run_refit_diag import FILES, fidelity, outputs  # noqa: E402

POINTS: dict[str, list[str]] = {
    "minilm": ["0.5", "0.7", "0.8", "0.9"],
    "mobile": ["0.5", "0.7", "2:4"],
}
SAMPLES = {"minilm": 128, "mobile": 64}


def main() -> None:
    import onnxsim

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(FILES), default="mobile")
    parser.add_argument("--methods", nargs="+", default=["sparsegpt", "wanda"])
    parser.add_argument("--points", nargs="+")
    parser.add_argument("--models-dir", type=Path, default=Path("/work/models"))
    parser.add_argument("--out", type=Path, default=HERE / "onnxsim_peer_results.jsonl")
    args = parser.parse_args()
    onnx_name, calib_name, eval_name = FILES[args.model]
    count = SAMPLES[args.model]
    calib = {k: v[:count] for k, v in np.load(args.models_dir / calib_name).items()}
    held = dict(np.load(args.models_dir / eval_name))
    batches = [{k: v[s : s + 32] for k, v in calib.items()} for s in range(0, count, 32)]
    dense = outputs(
        ort.InferenceSession(str(args.models_dir / onnx_name), providers=["CPUExecutionProvider"]),
        held,
    )
    model = onnx.load(str(args.models_dir / onnx_name))
    functions = {
        "sparsegpt": onnxsim.apply_sparsegpt_pruning,
        "wanda": onnxsim.apply_wanda_pruning,
    }
    for point in args.points or POINTS[args.model]:
        for method in args.methods:
            options: dict[str, Any] = {"calibration_data": batches}
            if ":" in point:
                n, m = (int(p) for p in point.split(":"))
                options.update(n=n, m=m)  # both: n of every m weights kept
            else:
                options["sparsity"] = float(point)
            clock = time.perf_counter()
            try:
                pruned = functions[method](model, **options)
            except Exception as err:  # the peer's own failure is a result worth recording
                row: dict[str, Any] = {"error": f"{type(err).__name__}: {err}"[:300]}
            else:
                seconds = time.perf_counter() - clock
                session = ort.InferenceSession(
                    pruned.SerializeToString(), providers=["CPUExecutionProvider"]
                )
                found = fidelity(dense, outputs(session, held), held.get("attention_mask"))
                row = {"seconds": round(seconds, 1), **{k: round(v, 4) for k, v in found.items()}}
            row = {"model": args.model, "point": point, "method": f"onnxsim-{method}", **row}
            print(json.dumps(row), flush=True)
            with args.out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
