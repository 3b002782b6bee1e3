"""EfficientNet-Lite0: re-selection saliency variants side by side (issue 16, lead 1)."""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import run_benchmarks as RB

import onnxprune.reconstruct as R
from onnxprune.config import PruneConfig
from onnxprune.pipeline import Pruner

files = RB.model_files(Path("/work/models"), "mobile")
point = sys.argv[1]
variants = sys.argv[2].split(",")
calib = sys.argv[3] if len(sys.argv) > 3 else str(files.calib)
VAR = {
    "default": (dict(), dict(RESELECT=False)),
    "sparsegpt": (dict(method="sparsegpt"), dict(RESELECT=False)),
    "obs": (dict(), dict(RESELECT=True, RESELECT_SALIENCY="obs")),
    "mix50": (dict(), dict(RESELECT=True, RESELECT_SALIENCY="mix", RESELECT_MIX=0.5)),
    "mix75": (dict(), dict(RESELECT=True, RESELECT_SALIENCY="mix", RESELECT_MIX=0.75)),
    "mix90": (dict(), dict(RESELECT=True, RESELECT_SALIENCY="mix", RESELECT_MIX=0.9)),
    "score": (dict(), dict(RESELECT=True, RESELECT_SALIENCY="score")),
    "mix25": (dict(), dict(RESELECT=True, RESELECT_SALIENCY="mix", RESELECT_MIX=0.25)),
}
kwp = dict(sparsity=0.5, pattern="2:4") if point == "2:4" else dict(sparsity=float(point))
pr = None
for v in variants:
    kw, patch = VAR[v]
    for k, x in patch.items():
        setattr(R, k, x)
    t = time.perf_counter()
    pr = Pruner(files.onnx, calib, PruneConfig(**kwp, **kw), eval_data=files.eval)
    c = pr.build()
    f = pr.compare(c).outputs[0]
    row = dict(
        model="mobile",
        point=point,
        variant=v,
        calib=Path(calib).name,
        top1=round(f.top1_agreement, 4),
        cosine=round(f.cosine, 4),
        group=c.group,
        scorer=c.scorer.name,
        seconds=round(time.perf_counter() - t, 1),
    )
    print(row, flush=True)
    with open(str(Path(__file__).with_name("results.jsonl")), "a") as fh:
        fh.write(json.dumps(row) + "\n")
