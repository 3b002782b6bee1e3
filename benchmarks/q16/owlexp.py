"""OWL prior vs the current sensitivity allocation, same statistics, one process per model/point."""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pathlib import Path

import onnx
import run_benchmarks as RB

import onnxprune.owl as owl
from onnxprune.config import PruneConfig
from onnxprune.pipeline import Pruner

model, point = sys.argv[1], float(sys.argv[2])
variants = sys.argv[3].split(",") if len(sys.argv) > 3 else ["default", "owl"]
files = RB.model_files(Path("/work/models"), model)
extra = dict(num_samples=256) if model == "minilm" else {}
pr = Pruner(files.onnx, files.calib, PruneConfig(sparsity=point, **extra), eval_data=files.eval)
pr.statistics()
ev = RB.Evaluator(files) if model == "minilm" else None
for v in variants:
    owl.OWL_PRIOR = v == "owl"
    t = time.perf_counter()
    c = pr.build(point)
    row = dict(
        model=model,
        point=point,
        variant=v,
        group=c.group,
        allocation=c.allocation,
        trials={k: round(x, 4) for k, x in c.trials.items()},
    )
    if ev is None:
        f = pr.compare(c).outputs[0]
        row.update(top1=round(f.top1_agreement, 4), cosine=round(f.cosine, 4))
    else:
        out = Path(f"/tmp/owl_{model}_{v}.onnx")
        onnx.save(c.model, out)
        m = ev.measure(out)
        row.update(embedding_cosine=round(m["cosine_mean"], 4))
    row["seconds"] = round(time.perf_counter() - t, 1)
    print(row, flush=True)
    with open(str(Path(__file__).with_name("results.jsonl")), "a") as fh:
        fh.write(json.dumps(row) + "\n")
