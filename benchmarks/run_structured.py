"""Benchmark --structured: size, multiply-adds, onnxruntime CPU latency and fidelity; one run.

For the digits CNN and all-MiniLM-L6-v2 (built from PyPI packages by the scripts next to this
one, into ``bench_out/models``), every configuration below is pruned with ``onnxprune.prune``
and compared with the dense model side by side in the same run:

- parameters, file size, multiply-adds of every MatMul/Gemm/Conv (shapes read at run time on
  the timed inputs) as ratios to the dense model;
- latency: default onnxruntime CPU sessions of the dense and the shrunk model, timed in
  alternation (median of rounds of repeated runs) at batch 1 (one sentence at its own length /
  one image) and batch 32 (MiniLM: 32 held-out sentences padded to 72 tokens);
- fidelity: digits test accuracy; MiniLM cosine of mean-pooled embeddings on the 256 held-out
  sentences (the same metric as run_benchmarks.py).

Rows: ``variance`` (the default scorer) against ``l1`` (weight L1 norm, uniform per layer, no
compensation: the usual baseline) at the same ratio; MiniLM FFN neurons only
(``--exclude attention``) at 0.25 / 0.5 / 0.75, and the whole model (FFN neurons and heads)
at 0.5. The markdown goes into BENCHMARKS.md between the ``structured`` markers (the rest of
the file is left alone) and the raw numbers into ``benchmarks/structured_results.json``.

Usage: python benchmarks/run_structured.py [--out-dir bench_out] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchsuite.codec import to_json
from benchsuite.machine import environment, git_state
from benchsuite.models import (
    BENCH_DIR,
    DEFAULT_MARKDOWN,
    Evaluator,
    ModelFiles,
    ensure_models,
    load_npz,
    model_files,
    new_session,
)

import onnxprune

BEGIN, END = "<!-- structured:begin -->", "<!-- structured:end -->"
RESULTS = BENCH_DIR / "structured_results.json"
SCORERS = ("variance", "l1")
# Allocation ablations (hidden scorers): fidelity only, no latency rows.
ABLATIONS = ("variance-standardised", "variance-uniform")
MINILM_FFN_RATIOS = (0.25, 0.5, 0.75)
DIGITS_RATIOS = (0.25, 0.5, 0.75)
LATENCY_ROUNDS = 7
ROUND_SECONDS = 0.3
LAYER_OPS = ("MatMul", "Gemm", "Conv")


def multiply_adds(path: Path, feed: dict[str, np.ndarray]) -> int:
    """Sum over MatMul/Gemm/Conv nodes of output elements x reduction length, shapes taken
    from one onnxruntime run on ``feed`` (Shape nodes on every operand)."""
    model = onnx.load(path)
    shapes: list[tuple[onnx.NodeProto, list[str]]] = []
    extra = []
    for index, node in enumerate(list(model.graph.node)):
        if node.op_type not in LAYER_OPS:
            continue
        names = []
        for k, tensor in enumerate([node.input[0], node.input[1], node.output[0]]):
            name = f"bench_shape_{index}_{k}"
            extra.append(onnx.helper.make_node("Shape", [tensor], [name]))
            names.append(name)
        shapes.append((node, names))
    model.graph.node.extend(extra)
    model.graph.output.extend(
        onnx.helper.make_tensor_value_info(n, onnx.TensorProto.INT64, None)
        for _, names in shapes
        for n in names
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    wanted = [n for _, names in shapes for n in names]
    values = dict(zip(wanted, session.run(wanted, feed), strict=True))
    total = 0
    for node, (a, w, y) in shapes:
        out = int(np.prod(values[y]))
        if node.op_type == "Conv":
            total += out * int(np.prod(values[w][1:]))
        elif node.op_type == "Gemm":
            trans_a = any(a_.name == "transA" and a_.i for a_ in node.attribute)
            total += out * int(values[a][0 if trans_a else 1])
        else:
            total += out * int(values[a][-1])
    return total


def latencies(paths: Sequence[Path], feed: dict[str, np.ndarray]) -> list[float]:
    """Median seconds per run of each model, measured in alternation (same load for all);
    each round repeats a run for about ROUND_SECONDS (at least 3 times)."""
    sessions = [new_session(p) for p in paths]
    names = [[i.name for i in s.get_inputs()] for s in sessions]
    feeds = [{n: feed[n] for n in ns} for ns in names]
    for session, f in zip(sessions, feeds, strict=True):
        for _ in range(3):
            session.run(None, f)
    start = time.perf_counter()
    sessions[0].run(None, feeds[0])
    repeats = max(3, int(ROUND_SECONDS / max(time.perf_counter() - start, 1e-6)))
    samples: list[list[float]] = [[] for _ in sessions]
    for round_index in range(LATENCY_ROUNDS):
        order = range(len(sessions)) if round_index % 2 == 0 else reversed(range(len(sessions)))
        for k in order:
            start = time.perf_counter()
            for _ in range(repeats):
                sessions[k].run(None, feeds[k])
            samples[k].append((time.perf_counter() - start) / repeats)
    return [statistics.median(s) for s in samples]


def timing_feeds(files: ModelFiles) -> dict[str, dict[str, np.ndarray]]:
    data = load_npz(files.eval)
    data.pop("labels", None)
    if files.name == "minilm":
        length = int(data["attention_mask"][0].sum())
        return {
            "batch 1": {k: v[:1, :length] for k, v in data.items()},
            "batch 32": {k: v[:32] for k, v in data.items()},
        }
    return {
        "batch 1": {k: v[:1] for k, v in data.items()},
        "batch 32": {k: v[:32] for k, v in data.items()},
    }


def run_model(
    files: ModelFiles, configs: list[dict[str, Any]], work: Path, samples: int | None
) -> dict[str, Any]:
    evaluator = Evaluator(files)
    feeds = timing_feeds(files)
    dense_params = onnxprune.api.count_weights(onnx.load(files.onnx))[0]
    dense_macs = {k: multiply_adds(files.onnx, f) for k, f in feeds.items()}
    rows = []
    for config in configs:
        stem = f"{files.name}_{config['label']}_{config['ratio']}_{config['score']}"
        out = work / f"{stem.replace(' ', '_')}.onnx"
        started = time.perf_counter()
        report = onnxprune.prune(
            files.onnx,
            files.calib,
            output=out,
            structured=config["ratio"],
            structured_score=config["score"],
            exclude=config.get("exclude", ()),
            num_samples=samples,
        )
        seconds = time.perf_counter() - started
        row: dict[str, Any] = {
            **config,
            "tool_seconds": seconds,
            "params_ratio": report.params_total / dense_params,
            "file_ratio": out.stat().st_size / files.onnx.stat().st_size,
            "units": {g.name: [g.units_before, g.units_after] for g in report.structured},
            "metric": _metric(evaluator.measure(out)),
        }
        for name, feed in feeds.items() if config["score"] not in ABLATIONS else ():
            dense_time, shrunk_time = latencies([files.onnx, out], feed)
            row[name] = {
                "dense_ms": dense_time * 1e3,
                "shrunk_ms": shrunk_time * 1e3,
                "latency_ratio": shrunk_time / dense_time,
                "macs_ratio": multiply_adds(out, feed) / dense_macs[name],
            }
        print(json.dumps(row))
        rows.append(row)
    return {"dense_metric": evaluator.dense_metric(), "rows": rows}


def _metric(measured: dict[str, float]) -> float:
    return measured.get("accuracy", measured.get("cosine_mean", float("nan")))


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        BEGIN,
        "## Structured removal (`--structured`)",
        "",
        f"Generated by `{meta['command']}` on {meta['started']} UTC "
        f"({meta['runtime_seconds']:.0f} s, commit {meta['git'].get('commit', '?')[:10]}). "
        "Ratios are shrunk / dense, measured side by side in this run; latency is the median "
        "of alternating rounds of default onnxruntime CPU "
        "sessions. `variance` is the default scorer; `l1` removes the same share of every layer "
        "by weight L1 norm with no compensation (the usual baseline). Metric: digits test "
        "accuracy; MiniLM mean-pooled embedding cosine to the dense model on 256 held-out "
        "sentences.",
        "",
    ]
    for name, block in results["models"].items():
        dense = block["dense_metric"]
        lines += [
            f"### {name} (dense metric {'1 (reference)' if dense is None else f'{dense:.4f}'})",
            "",
            "| units | ratio | scorer | metric | params | file | MACs b1 | latency b1 | MACs b32 | "
            "latency b32 | tool s |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in block["rows"]:
            if row["score"] in ABLATIONS:
                continue
            b1, b32 = row["batch 1"], row["batch 32"]
            lines.append(
                f"| {row['label']} | {row['ratio']:.2f} | {row['score']} | {row['metric']:.4f} | "
                f"{row['params_ratio']:.3f} | {row['file_ratio']:.3f} | {b1['macs_ratio']:.3f} | "
                f"{b1['latency_ratio']:.3f} | {b32['macs_ratio']:.3f} | "
                f"{b32['latency_ratio']:.3f} | {row['tool_seconds']:.1f} |"
            )
        lines.append("")
        dense_ms = {k: block["rows"][0][k]["dense_ms"] for k in ("batch 1", "batch 32")}
        lines.append(
            f"Dense latency in this run: batch 1 {dense_ms['batch 1']:.2f} ms, batch 32 "
            f"{dense_ms['batch 32']:.2f} ms (first row's measurement)."
        )
        lines += ["", *allocation_table(block["rows"]), ""]
    lines += checks(results)
    lines.append(END)
    return "\n".join(lines) + "\n"


def allocation_table(rows: list[dict[str, Any]]) -> list[str]:
    """Fidelity of the default allocation against the ablations, same score and ratio."""
    scores = ["variance", *ABLATIONS, "l1"]
    keys = sorted({(r["label"], r["ratio"]) for r in rows})
    metric = {(r["label"], r["ratio"], r["score"]): r["metric"] for r in rows}
    lines = [
        "Allocation ablation (metric): `variance` ranks units by their share of their group's "
        "total score; `variance-standardised` by per-group z-scores (the method brief's "
        "section 5 as written, docs/METHOD.md); `variance-uniform` removes the same share of "
        "every group.",
        "",
        "| units | ratio | " + " | ".join(scores) + " |",
        "|---|---|" + "---|" * len(scores),
    ]
    for label, ratio in keys:
        cells = [metric.get((label, ratio, s)) for s in scores]
        shown = ["-" if c is None else f"{c:.4f}" for c in cells]
        lines.append(f"| {label} | {ratio:.2f} | " + " | ".join(shown) + " |")
    return lines


def checks(results: dict[str, Any]) -> list[str]:
    """The issue's targets, evaluated on the numbers above."""
    out = ["### Targets", ""]
    minilm = results["models"].get("minilm")
    if minilm:
        whole = [
            r for r in minilm["rows"] if r["label"] == "whole model" and r["score"] == "variance"
        ]
        for row in whole:
            ok = row["file_ratio"] <= 0.85 and all(
                row[b]["latency_ratio"] <= 0.9 for b in ("batch 1", "batch 32")
            )
            out.append(
                f"- MiniLM `--structured 0.5` (whole model): file {row['file_ratio']:.3f}x (target "
                f"<= 0.85), latency {row['batch 1']['latency_ratio']:.3f}x / "
                f"{row['batch 32']['latency_ratio']:.3f}x at batch 1 / 32 (target <= 0.9): "
                f"{'met' if ok else 'MISSED'}"
            )
        for row in minilm["rows"]:
            if row["label"] != "FFN neurons" or row["score"] != "variance":
                continue
            for batch in ("batch 1", "batch 32"):
                lat, macs = row[batch]["latency_ratio"], row[batch]["macs_ratio"]
                ok = abs(lat / macs - 1) <= 0.10
                out.append(
                    f"- MiniLM FFN {row['ratio']:.2f}, {batch}: latency {lat:.3f}x vs MACs "
                    f"{macs:.3f}x (within 10%: {'met' if ok else 'MISSED'}, "
                    f"{(lat / macs - 1):+.1%})"
                )
    for name, block in results["models"].items():
        by_key = {(r["label"], r["ratio"], r["score"]): r["metric"] for r in block["rows"]}
        for (label, ratio, score), metric in by_key.items():
            if score != "variance":
                continue
            base = by_key.get((label, ratio, "l1"))
            if base is not None:
                out.append(
                    f"- {name} {label} {ratio:.2f}: variance {metric:.4f} vs l1 {base:.4f} "
                    f"({'beats' if metric > base else 'DOES NOT BEAT'} the baseline)"
                )
    out.append("")
    return out


def write_section(markdown: Path, section: str) -> None:
    text = markdown.read_text() if markdown.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    markdown.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("bench_out"))
    parser.add_argument("--quick", action="store_true", help="digits CNN only")
    parser.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--minilm-samples", type=int, default=512)
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the section from --results"
    )
    args = parser.parse_args(argv)
    if args.render_only:
        write_section(args.markdown, render(json.loads(args.results.read_text())))
        print(f"wrote the structured section of {args.markdown}")
        return 0
    started = time.perf_counter()
    out_dir = args.out_dir.resolve()
    names = ["digits_cnn"] if args.quick else ["digits_cnn", "minilm"]
    results: dict[str, Any] = {
        "meta": {
            "command": " ".join(
                ["python", "benchmarks/run_structured.py", *(argv or sys.argv[1:])]
            ),
            "started": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "environment": to_json(environment()),
            "git": to_json(git_state()),
        },
        "models": {},
    }
    ensure_models(out_dir / "models", names)
    work = out_dir / "work_structured"
    work.mkdir(parents=True, exist_ok=True)
    for name in names:
        files = model_files(out_dir / "models", name)
        if name == "minilm":
            configs = [
                {"label": "FFN neurons", "ratio": r, "score": s, "exclude": ["attention"]}
                for r in MINILM_FFN_RATIOS
                for s in (*SCORERS, *ABLATIONS)
            ] + [{"label": "whole model", "ratio": 0.5, "score": s} for s in SCORERS]
            samples = args.minilm_samples
        else:
            configs = [
                {"label": "channels + neurons", "ratio": r, "score": s}
                for r in DIGITS_RATIOS
                for s in (*SCORERS, *ABLATIONS)
            ]
            samples = None
        results["models"][name] = run_model(files, configs, work, samples)
    results["meta"]["runtime_seconds"] = time.perf_counter() - started
    args.results.write_text(json.dumps(results, indent=1) + "\n")
    write_section(args.markdown, render(results))
    print(f"wrote {args.results} and the structured section of {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
