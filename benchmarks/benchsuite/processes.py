"""Fresh processes for sections 2 and 3: the onnxprune CLI, plain onnxruntime inference,
wall time and peak RSS."""

from __future__ import annotations

import json
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .models import BATCH_SIZE, BENCH_DIR, REPO_ROOT, ModelFiles, load_npz, new_session, run_batches
from .plan import SPEED_SPARSITY
from .records import Failure


def cli_command(
    files: ModelFiles, method: str, samples: int, output: Path, report: Path
) -> list[str]:
    return [
        sys.executable, "-m", "onnxprune.cli", str(files.onnx),
        "--calib", str(files.calib),
        "--sparsity", str(SPEED_SPARSITY),
        "--method", method,
        "--num-samples", str(samples),
        "--batch-size", str(BATCH_SIZE),
        "-o", str(output),
        "--report", str(report),
        "--quiet",
    ]  # fmt: skip


def plain_inference_command(files: ModelFiles, samples: int) -> list[str]:
    spec = json.dumps({"model": str(files.onnx), "data": str(files.calib), "samples": samples})
    return [sys.executable, str(BENCH_DIR / "run_benchmarks.py"), "--plain-inference", spec]


def plain_inference_main(spec_text: str) -> int:
    """Child process: time default-options onnxruntime inference over the first N samples."""
    spec = json.loads(spec_text)
    clock = time.perf_counter()
    session = new_session(Path(spec["model"]))
    data = load_npz(Path(spec["data"]))
    count = min(int(spec["samples"]), len(next(iter(data.values()))))
    setup = time.perf_counter() - clock
    clock = time.perf_counter()
    run_batches(session, data, count, BATCH_SIZE)
    inference = time.perf_counter() - clock
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    measured = {"samples": count, "setup": setup, "inference": inference, "peak_rss_kib": peak_kib}
    print(json.dumps(measured))
    return 0


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run from the repository root, so ``-m onnxprune.cli`` is this checkout's onnxprune."""
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO_ROOT)


def timed_run(command: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    clock = time.perf_counter()
    done = run(command)
    return time.perf_counter() - clock, done


def failure(command: list[str], done: subprocess.CompletedProcess[str]) -> Failure:
    return Failure(
        error=f"exit code {done.returncode}",
        command=shlex.join(command),
        stderr=done.stderr[-4000:],
    )


_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def peak_rss_kib(command: list[str]) -> tuple[int | None, str, subprocess.CompletedProcess[str]]:
    """Peak RSS (KiB) of a fresh process running ``command``, and how it was measured."""
    gnu_time = Path("/usr/bin/time")
    if gnu_time.is_file():
        with tempfile.NamedTemporaryFile("r", suffix=".txt") as out:
            done = run([str(gnu_time), "-v", "-o", out.name, *command])
            match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.read())
        return (int(match.group(1)) if match else None), "/usr/bin/time -v", done
    done = run([sys.executable, "-c", _WRAPPER, *command])
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    value = int(last) if last.isdigit() else None
    return value, "getrusage(RUSAGE_CHILDREN)", done
