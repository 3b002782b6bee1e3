"""Where and on what a run happened: machine, versions, git state, load average."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import onnxprune

from .models import REPO_ROOT
from .results import Environment, GitState


def load1() -> float:
    """1-minute load average: above the CPU count, other processes competed for the CPUs."""
    return os.getloadavg()[0]


def read_proc(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def source_digest() -> str:
    """Hash of the onnxprune sources, to notice edits made while the benchmark runs."""
    digest = hashlib.sha256()
    package = Path(onnxprune.__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def git_state() -> GitState:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.rstrip("\n") if done.returncode == 0 else ""

    dirty = [line[3:] for line in git("status", "--porcelain").splitlines() if line.strip()]
    return GitState(
        commit=git("rev-parse", "--short", "HEAD") or "unknown", uncommitted=tuple(dirty)
    )


def environment() -> Environment:
    mem_kib = read_proc("/proc/meminfo", "MemTotal").split()[0]
    return Environment(
        nproc=os.cpu_count(),
        usable_cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        cpu_model=read_proc("/proc/cpuinfo", "model name"),
        ram_gib=round(int(mem_kib) / 1024**2, 1) if mem_kib.isdigit() else None,
        platform=platform.platform(),
        versions={
            "onnxprune": onnxprune.__version__,
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
            "onnx": onnx.__version__,
            "python": platform.python_version(),
        },
    )
