"""Cost of a run against plain onnxruntime inference, side by side in one run (issue: fast default).

For every benchmark model, on the calibration samples a user would have, this measures in fresh
processes, one after the other:

* plain onnxruntime inference (default session options, batch 32) over those samples: wall
  time of the inference loop (median of 3) and the process's peak RSS;
* a whole ``onnxprune`` CLI run with the default pipeline, and one with ``--method wanda``, at
  sparsity 0.5 (``--quiet``): wall time, peak RSS, and the report's phase split;
* on the named models (not the growth cases), one with ``--thorough``: what the opt-in costs
  against the default beside it, and its output cosine.

The onnxprune package under test is byte-compiled first (``byte_compile``), as ``pip install``
does: with ``PYTHONDONTWRITEBYTECODE=1`` (set on these machines) an editable install would
otherwise compile its modules again at every start, about 0.3 s a run no installed copy pays.

The budget the issue sets: default <= 10x plain inference + 5 s, Wanda-type <= 2x + 5 s (the fixed
allowance covers start-up, loading and the final check); peak RSS <= 2x plain inference's plus
the statistics themselves (a float64 K x K input correlation per layer and conv group). Growth:
the synthetic detector (``build_detector.py``) with twice the blocks, and with twice the images,
at 320 px.

Writes ``benchmarks/cost_results.json`` and the section between ``<!-- cost:begin -->`` and
``<!-- cost:end -->`` of ``BENCHMARKS.md`` (the rest of the file is left as it is).

Usage::

    python benchmarks/run_cost.py [--models-dir DIR] [--only NAME ...] [--render-only]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from markdown_section import write_section

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "cost_results.json"
MARKDOWN = REPO / "BENCHMARKS.md"
BEGIN, END = "<!-- cost:begin -->", "<!-- cost:end -->"
BATCH = 32
SPARSITY = 0.5
DEFAULT_BUDGET = (10.0, 5.0)  # (x plain inference, + seconds)
WANDA_BUDGET = (2.0, 5.0)

# A child process's peak RSS (KiB): run the command, report RUSAGE_CHILDREN.
_MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


@dataclass(frozen=True)
class Case:
    name: str
    model: Path
    calib: Path
    samples: int
    note: str
    # False: a model beyond the fast-default issue's list, measured to show what other layouts
    # cost (marked in the table; its budget is reported, not a target).
    target: bool = True


def _subset(source: Path, samples: int, out_dir: Path) -> Path:
    """The first ``samples`` samples of an ``.npz`` (every array cut along axis 0)."""
    target = out_dir / f"{source.stem}_{samples}.npz"
    if not target.exists():
        with np.load(source) as data:
            np.savez(target, **{k: data[k][:samples] for k in data.files if k != "labels"})
    return target


def cases(models_dir: Path) -> list[Case]:
    sys.path.insert(0, str(HERE))
    import build_detector
    import build_resnet

    found = []
    for name in ("cnn", "mlp"):
        model = REPO / "examples" / f"digits_{name}.onnx"
        calib = REPO / "calibration_data" / ("digits" if name == "cnn" else "digits_mlp")
        found.append(Case(f"digits_{name}", model, calib, 0, "bundled example"))
    if (models_dir / "minilm.onnx").exists():
        calib = _subset(models_dir / "minilm_calib.npz", 128, models_dir)
        found.append(Case("minilm", models_dir / "minilm.onnx", calib, 128, "all-MiniLM-L6-v2"))
    if (models_dir / "mobile.onnx").exists():
        calib = _subset(models_dir / "mobile_calib.npz", 64, models_dir)
        found.append(Case("mobile", models_dir / "mobile.onnx", calib, 64, "EfficientNet-Lite0"))
    model, calib = build_detector.build(models_dir, 20, 640, 32)
    found.append(Case("detector_640", model, calib, 32, "synthetic, 61 layers, 640 px"))
    # Growth: twice the blocks, twice the images (320 px).
    model, calib = build_detector.build(models_dir, 20, 320, 32)
    found.append(Case("growth_base", model, calib, 32, "detector 320 px, 20 blocks, 32 images"))
    deep, _ = build_detector.build(models_dir, 40, 320, 32)
    found.append(Case("growth_layers", deep, calib, 32, "40 blocks (2x layers), 32 images"))
    _, more = build_detector.build(models_dir, 20, 320, 64)
    found.append(Case("growth_samples", model, more, 64, "20 blocks, 64 images (2x samples)"))
    model, calib = build_resnet.build(models_dir, 32)
    note = "synthetic ResNet-18, dense 3x3 convs up to K = 4608"
    found.append(Case("resnet18", model, calib, 32, note, target=False))
    return found


def plain_main(model: str, calib: str) -> None:
    """Child process: median wall time of inference over the calibration samples."""
    import onnxruntime as ort

    sys.path.insert(0, str(REPO))
    from onnxprune.calibrate.sources import model_input_specs, open_data
    from onnxprune.io import load_model

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    data = open_data(Path(calib), model_input_specs(load_model(Path(model))))
    selected = np.ones(data.total, dtype=bool)
    batches = [b.feed for b in data.batches(selected, BATCH)]
    walls = []
    for _ in range(3):
        clock = time.perf_counter()
        for feed in batches:
            session.run(None, feed)
        walls.append(time.perf_counter() - clock)
    print(json.dumps({"inference": statistics.median(walls), "samples": data.total}))


def statistics_mib(model: Path) -> float:
    """The K x K statistics the RSS budget allows on top of 2x plain inference: one float64
    input correlation per layer and conv group, for the layers onnxprune prunes."""
    # Imported here: this file also runs as the plain-inference process (``--plain``), whose
    # peak RSS is the baseline and must not include onnxprune's modules.
    import onnx

    from onnxprune.config import PruneConfig
    from onnxprune.graph import GraphView
    from onnxprune.layers import find_layers

    layers = find_layers(GraphView(onnx.load(str(model))), PruneConfig(sparsity=SPARSITY)).layers
    return sum(x.groups * x.matrix_shape[1] ** 2 * 8 for x in layers) / 2**20


def byte_compile(tree: Path) -> None:
    """Byte-compile the ``onnxprune`` package in ``tree`` (a source tree or site-packages), as
    ``pip install`` does for an installed copy."""
    if not compileall.compile_dir(tree / "onnxprune", quiet=1):
        sys.exit(f"could not byte-compile {tree / 'onnxprune'}")


def _measured(command: list[str]) -> tuple[float, int, subprocess.CompletedProcess[str]]:
    clock = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - clock
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    return wall, int(last) if last.isdigit() else -1, done


def measure(case: Case, work: Path) -> dict[str, Any]:
    row: dict[str, Any] = {**asdict(case), "model": str(case.model), "calib": str(case.calib)}
    out = subprocess.run(
        [sys.executable, __file__, "--plain", str(case.model), str(case.calib)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    row["plain"] = json.loads(out.stdout.strip().splitlines()[-1])
    row["statistics_mib"] = statistics_mib(case.model)
    _, row["plain_rss_kib"], _ = _measured(
        [sys.executable, __file__, "--plain", str(case.model), str(case.calib)]
    )
    runs: list[tuple[str, list[str]]] = [("default", []), ("wanda", ["--method", "wanda"])]
    if case.target and not case.name.startswith("growth"):
        runs.append(("thorough", ["--thorough"]))
    for label, extra in runs:
        report = work / f"{case.name}.{label}.json"
        command = [
            sys.executable, "-m", "onnxprune.cli", str(case.model), "--calib", str(case.calib),
            "--sparsity", str(SPARSITY), "-o", str(work / f"{case.name}.{label}.onnx"),
            "--report", str(report), "-q", *extra,
        ]  # fmt: skip
        load = os.getloadavg()[0]
        wall, rss, done = _measured(command)
        entry: dict[str, Any] = {"wall": wall, "peak_rss_kib": rss, "load1": load}
        if done.returncode != 0:
            entry["error"] = done.stderr[-2000:]
        else:
            data = json.loads(report.read_text())
            entry["timings"] = data["timings"]
            entry["calibration_samples"] = data["calibration_samples"]
            entry["cosine"] = data["fidelity"]["outputs"][0]["cosine"]
            entry["group"] = data.get("group")
        row[label] = entry
        print(f"  {case.name} {label}: {wall:.1f}s (plain {row['plain']['inference']:.2f}s)")
    return row


def _budget(plain: float, budget: tuple[float, float]) -> float:
    return budget[0] * plain + budget[1]


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        BEGIN,
        "## Cost against plain inference (fast default)",
        "",
        f"One run of `python benchmarks/run_cost.py` on {meta['date']} (source {meta['source']}, "
        f"{meta['cpus']} CPUs, 1-minute load {meta['load_start']:.1f} at start). Each onnxprune "
        "run is one fresh CLI process at sparsity 0.5; plain inference is the median of 3 "
        "loops over the same samples (batch 32, default session options), timed in its own "
        "process right before. Budget: default <= 10x plain + 5 s, wanda <= 2x plain + 5 s. "
        "Peak RSS of a fresh process (getrusage); RSS budget: 2x plain inference's peak plus "
        "the K x K statistics (float64, one per layer and conv group).",
        "",
        "| model | samples | plain inference | default run | x plain | budget | within | "
        "wanda run | x plain | within | peak RSS default / wanda / plain | RSS budget | "
        "RSS within (default / wanda) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        plain = row["plain"]["inference"]
        name = row["name"] if row.get("target", True) else f"{row['name']} (not a target)"
        cells = [name, str(row["plain"]["samples"]), f"{plain:.2f} s"]
        for label, budget in (("default", DEFAULT_BUDGET), ("wanda", WANDA_BUDGET)):
            run = row[label]
            if "error" in run:
                cells += ["failed", "", "", ""] if label == "default" else ["failed", "", ""]
                continue
            limit = _budget(plain, budget)
            cells += [f"{run['wall']:.1f} s", f"{run['wall'] / plain:.1f}x"]
            if label == "default":
                cells.append(f"{limit:.1f} s")
            cells.append("yes" if run["wall"] <= limit else "**no**")
        rss = [row[k].get("peak_rss_kib", -1) / 1024 for k in ("default", "wanda")]
        cells.append(f"{rss[0]:.0f} / {rss[1]:.0f} / {row['plain_rss_kib'] / 1024:.0f} MB")
        if "statistics_mib" in row:
            allowed = 2 * row["plain_rss_kib"] / 1024 + row["statistics_mib"]
            within = ["yes" if 0 < r <= allowed else "**no**" for r in rss]
            cells += [f"{allowed:.0f} MB", " / ".join(within)]
        else:
            cells += ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    extra = [row for row in results["rows"] if not row.get("target", True)]
    if extra:
        lines += [
            "",
            "Not a target: "
            + "; ".join(f"{row['name']}, {row['note']}" for row in extra)
            + ". Not one of the models the fast-default issue sets its budgets for, measured "
            "to show what a layout beyond them costs.",
        ]
    lines += [
        "",
        "Phase split of the default runs (seconds, from the report's `timings`; `prune.judge` "
        "is candidates judged in onnxruntime, `prune.update` the per-layer pruning and OBS "
        "updates, both inside `prune`):",
        "",
    ]
    phases = ["load", "calibrate", "prune", "prune.judge", "prune.update", "save", "verify"]
    lines.append("| model | " + " | ".join(phases) + " | total | output cosine |")
    lines.append("|---" * (len(phases) + 3) + "|")
    for row in results["rows"]:
        run = row["default"]
        if "timings" not in run:
            continue
        t = run["timings"]
        cells = [f"{t.get(p, 0.0):.1f}" for p in phases]
        lines.append(
            f"| {row['name']} | "
            + " | ".join(cells)
            + f" | {t['total']:.1f} | {run['cosine']:.4f} |"
        )
    thorough = [row for row in results["rows"] if "timings" in row.get("thorough", {})]
    if thorough:
        lines += [
            "",
            "`--thorough` (opt-in: --group auto also tries contrib without mean compensation, "
            "and every layer's sensitivity is judged), run right after the default:",
            "",
            "| model | default run | --thorough run | x default | output cosine default / "
            "--thorough |",
            "|---|---|---|---|---|",
        ]
        for row in thorough:
            default, opt_in = row["default"], row["thorough"]
            lines.append(
                f"| {row['name']} | {default['wall']:.1f} s | {opt_in['wall']:.1f} s | "
                f"{opt_in['wall'] / default['wall']:.2f}x | {default['cosine']:.4f} / "
                f"{opt_in['cosine']:.4f} |"
            )
    growth = {row["name"]: row for row in results["rows"] if row["name"].startswith("growth")}
    if len(growth) == 3:
        base = growth["growth_base"]["default"]["wall"]
        lines += [
            "",
            "Growth (synthetic detector at 320 px, default run): "
            f"2x layers {growth['growth_layers']['default']['wall'] / base:.2f}x the time, "
            f"2x samples {growth['growth_samples']['default']['wall'] / base:.2f}x the time "
            "(linear growth is <= 2x).",
        ]
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_markdown(section: str) -> None:
    write_section(MARKDOWN, BEGIN, END, section)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--plain":
        plain_main(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=REPO / "bench_out" / "models")
    parser.add_argument("--only", nargs="+", help="only these case names")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    if args.render_only:
        write_markdown(render(json.loads(RESULTS.read_text())))
        return
    import onnxprune  # the copy the measured processes run (``python -m onnxprune.cli``)

    byte_compile(Path(onnxprune.__file__).resolve().parents[1])
    source = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    results: dict[str, Any] = {
        "meta": {
            "date": time.strftime("%Y-%m-%d"),
            "source": source,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_start": os.getloadavg()[0],
        },
        "rows": [],
    }
    args.models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="onnxprune-cost-") as tmp:
        for case in cases(args.models_dir):
            if args.only and case.name not in args.only:
                continue
            print(f"== {case.name} ({case.note})", flush=True)
            results["rows"].append(measure(case, Path(tmp)))
            RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    results["meta"]["load_end"] = os.getloadavg()[0]
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(render(results))


if __name__ == "__main__":
    main()
