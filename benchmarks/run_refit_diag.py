"""Why does the CG re-fit (``--refit-steps``) hurt EfficientNet-Lite0? Variants of the re-fit
on one set of calibration statistics, each model measured on the calibration images it was
fitted on *and* on the held-out crops (over-fitting shows as a gap between the two).

The selection is fixed (``--allocation group --group row``: no candidates judged) so that the
variants differ only in the re-fit. Measures: top-1 agreement and mean logit cosine with the
dense model, computed here with onnxruntime.

    nice -n 15 python benchmarks/run_refit_diag.py --model mobile --sparsity 0.5 \\
        --out benchmarks/refit_diag_results.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from onnxprune import correction, reconstruct  # noqa: E402
from onnxprune.config import PruneConfig  # noqa: E402
from onnxprune.pipeline import Pruner  # noqa: E402
from onnxprune.refit_final import refit_written  # noqa: E402

# name -> (refit steps, module settings "module.NAME": value)
VARIANTS: dict[str, tuple[int, dict[str, Any]]] = {
    "none": (0, {}),
    "cg20": (20, {}),
    "cg5": (5, {}),
    # decisions on the plain update, then 20 CG steps on the chosen model only
    "cg20-final": (0, {"final": 20}),
    "reselect-obs+cg20-final": (0, {"final": 20, "reconstruct.RESELECT": True}),
    "cg20-skip-grouped": (20, {"correction.REFIT_SKIP_GROUPED": True}),
    "cg20-min4": (20, {"correction.REFIT_MIN_SAMPLES_PER_COLUMN": 4.0}),
    "cg20-damp0.1": (20, {"correction.CG_DAMPING": 0.1}),
    "cg20-damp1": (20, {"correction.CG_DAMPING": 1.0}),
    "reselect-score": (
        0,
        {"reconstruct.RESELECT": True, "reconstruct.RESELECT_SALIENCY": "score"},
    ),
    "reselect-obs": (0, {"reconstruct.RESELECT": True, "reconstruct.RESELECT_SALIENCY": "obs"}),
    "reselect-blend": (
        0,
        {"reconstruct.RESELECT": True, "reconstruct.RESELECT_SALIENCY": "blend"},
    ),
}
DEFAULTS: dict[str, Any] = {
    "correction.REFIT_SKIP_GROUPED": False,
    "correction.REFIT_MIN_SAMPLES_PER_COLUMN": 0.0,
    "correction.CG_DAMPING": 0.01,
    "reconstruct.RESELECT": False,
    "reconstruct.RESELECT_SALIENCY": "obs",
}
MODULES = {"correction": correction, "reconstruct": reconstruct}
FILES = {
    "mobile": ("mobile.onnx", "mobile_calib64.npz", "mobile_eval.npz"),
    "minilm": ("minilm.onnx", "minilm_calib128.npz", "minilm_eval.npz"),
}


def outputs(session: ort.InferenceSession, data: dict[str, np.ndarray]) -> np.ndarray:
    names = [i.name for i in session.get_inputs()]
    count = len(next(iter(data.values())))
    parts = [
        session.run(None, {n: data[n][s : s + 32] for n in names})[0] for s in range(0, count, 32)
    ]
    return np.concatenate(parts).astype(np.float64)


def fidelity(dense: np.ndarray, pruned: np.ndarray, mask: np.ndarray | None) -> dict[str, float]:
    if mask is not None:  # text: masked mean pooling, normalised embedding cosine
        weights = mask[..., None].astype(np.float64)
        dense = (dense * weights).sum(1) / weights.sum(1)
        pruned = (pruned * weights).sum(1) / weights.sum(1)
    dense = dense.reshape(len(dense), -1)
    pruned = pruned.reshape(len(pruned), -1)
    cosine = (dense * pruned).sum(1) / (
        np.linalg.norm(dense, axis=1) * np.linalg.norm(pruned, axis=1) + 1e-12
    )
    found = {"cosine": float(cosine.mean())}
    if mask is None:
        found["top1"] = float((dense.argmax(1) == pruned.argmax(1)).mean())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(FILES), default="mobile")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--pattern", default="unstructured")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument(
        "--default-pipeline",
        action="store_true",
        help="the default selection (sensitivity allocation, --group auto), not row/group",
    )
    parser.add_argument("--samples", type=int, help="calibration samples (default: all)")
    parser.add_argument("--calib", help="calibration file name in --models-dir")
    parser.add_argument("--models-dir", type=Path, default=Path("/work/models"))
    parser.add_argument("--out", type=Path, default=HERE / "refit_diag_results.jsonl")
    args = parser.parse_args()
    onnx_name, calib_name, eval_name = FILES[args.model]
    calib_name = args.calib or calib_name
    calib = {k: v[: args.samples] for k, v in np.load(args.models_dir / calib_name).items()}
    held = dict(np.load(args.models_dir / eval_name))
    masks = {k: d.get("attention_mask") for k, d in (("calib", calib), ("held", held))}
    dense_session = ort.InferenceSession(
        str(args.models_dir / onnx_name), providers=["CPUExecutionProvider"]
    )
    dense = {"calib": outputs(dense_session, calib), "held": outputs(dense_session, held)}
    shared = None
    for variant in args.variants:
        steps, settings = VARIANTS[variant]
        final = settings.get("final", 0)
        settings = {k: v for k, v in settings.items() if k != "final"}
        for key, value in {**DEFAULTS, **settings}.items():
            module, name = key.split(".")
            setattr(MODULES[module], name, value)
        fixed = {} if args.default_pipeline else {"allocation": "group", "group": "row"}
        config = PruneConfig(
            sparsity=args.sparsity,
            pattern=args.pattern,
            refit_steps=steps,
            num_samples=args.samples,
            **fixed,
        )
        pruner = Pruner(
            args.models_dir / onnx_name,
            args.models_dir / calib_name,
            config,
            eval_data=args.models_dir / eval_name,
        )
        if shared is None:
            shared = pruner.statistics()
        pruner._stats = shared
        clock = time.perf_counter()
        candidate = pruner.build()
        if final:
            refit_written(candidate.model, pruner.layers, pruner.statistics(), config, final)
        seconds = time.perf_counter() - clock
        session = ort.InferenceSession(
            candidate.model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        row: dict[str, Any] = {
            "model": args.model,
            "point": args.pattern if args.pattern != "unstructured" else args.sparsity,
            "variant": variant,
            "pipeline": "default" if args.default_pipeline else "row, no allocation",
            "samples": args.samples,
            "build_seconds": round(seconds, 1),
        }
        for split, data in (("calib", calib), ("held", held)):
            found = fidelity(dense[split], outputs(session, data), masks[split])
            row.update({f"{split}_{k}": round(v, 4) for k, v in found.items()})
        print(json.dumps(row), flush=True)
        with args.out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
