"""Depthwise floors: the fixed --min-row-weights 8 against looser ones (issue 16, lead 3)."""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import run_benchmarks as RB

from onnxprune.config import PruneConfig
from onnxprune.pipeline import Pruner

point = float(sys.argv[1])
floors = [int(x) for x in sys.argv[2].split(",")]
files = RB.model_files(Path("/work/models"), "mobile")
for mrw in floors:
    t = time.perf_counter()
    pr = Pruner(
        files.onnx,
        files.calib,
        PruneConfig(sparsity=point, min_row_weights=mrw),
        eval_data=files.eval,
    )
    c = pr.build(point)
    f = pr.compare(c).outputs[0]
    row = dict(
        model="mobile",
        point=point,
        variant=f"min_row_weights={mrw}",
        group=c.group,
        allocation=c.allocation,
        trials={k: round(x, 4) for k, x in c.trials.items()},
        top1=round(f.top1_agreement, 4),
        cosine=round(f.cosine, 4),
        seconds=round(time.perf_counter() - t, 1),
    )
    print(row, flush=True)
    with open(str(Path(__file__).with_name("results.jsonl")), "a") as fh:
        fh.write(json.dumps(row) + "\n")
