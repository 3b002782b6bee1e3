"""Why sparsegpt beats contrib at 2:4 on EfficientNet-Lite0: swap layer classes between the two."""

import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import run_benchmarks as RB

from onnxprune.config import PruneConfig
from onnxprune.pipeline import Pruner

files = RB.model_files(Path("/work/models"), "mobile")
calib = sys.argv[1] if len(sys.argv) > 1 else str(files.calib)
cands = {}
prs = {}
for m in ["contrib", "sparsegpt"]:
    t = time.perf_counter()
    pr = Pruner(
        files.onnx, calib, PruneConfig(sparsity=0.5, pattern="2:4", method=m), eval_data=files.eval
    )
    c = pr.build()
    f = pr.compare(c).outputs[0]
    cands[m] = c
    prs[m] = pr
    print(
        m,
        round(f.top1_agreement, 4),
        round(f.cosine, 4),
        round(time.perf_counter() - t, 1),
        flush=True,
    )
base = cands["contrib"].model
# classify weights
kinds = {}
for n in base.graph.node:
    if n.op_type == "Conv":
        g = next((a.i for a in n.attribute if a.name == "group"), 1)
        kinds[n.input[1]] = "dw" if g > 1 else "conv"
    elif n.op_type in ("Gemm", "MatMul"):
        kinds[n.input[1]] = "fc"
inits = {m: {i.name: i for i in cands[m].model.graph.initializer} for m in cands}


def hybrid(take_from_sgpt):
    mdl = copy.deepcopy(base)
    for i in mdl.graph.initializer:
        if take_from_sgpt(i.name):
            i.CopyFrom(inits["sparsegpt"][i.name])
    return mdl


pr = prs["contrib"]


def score(mdl):
    c = dataclasses.replace(cands["contrib"], model=mdl)
    f = pr.compare(c).outputs[0]
    return round(f.top1_agreement, 4), round(f.cosine, 4)


# biases: take bias with the weight (bias of same node)
node_of = {}
for n in base.graph.node:
    if n.input[1:2] and n.input[1] in kinds:
        for x in n.input[1:]:
            node_of[x] = kinds[n.input[1]]
for cls in ["dw", "conv", "fc"]:
    print(
        "sgpt",
        cls,
        "in contrib:",
        score(hybrid(lambda name, cls=cls: node_of.get(name) == cls)),
        flush=True,
    )
print("kinds:", {k: sum(1 for v in kinds.values() if v == k) for k in ["dw", "conv", "fc"]})
# per-layer swap for convs: order by gain
names = [n for n, k in kinds.items()]
res = []
for n in names:
    r = score(hybrid(lambda name, n=n: name == n))
    res.append((n, kinds[n], r))
    print(n, kinds[n], r, flush=True)
Path(__file__).with_name("diag24_layers.json").write_text(json.dumps(res))
