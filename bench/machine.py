"""What a benchmark result needs beside its figures: the machine, the versions, and how noisy the machine
was while it ran (issue 21: "record machine, versions and noise with every result").

Noise is measured, not guessed: a fixed CPU-bound calibration (SHA-256 over 64 MiB, single thread) timed
before and after the run, and the load average at both ends. A calibration that differs a lot, or a load
average well above zero before the run, says the figures were taken on a busy machine.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _git_commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}{' (with uncommitted changes)' if dirty else ''}" if commit else "unknown"


def calibrate() -> float:
    """Seconds for a fixed single-threaded CPU job (lower on a faster or quieter machine)."""
    block = b"\x5a" * 2**20
    start = time.perf_counter()
    digest = hashlib.sha256()
    for _ in range(64):
        digest.update(block)
    digest.hexdigest()
    return time.perf_counter() - start


def describe_machine(synapse_version: str | None = None) -> dict[str, Any]:
    memory = _memory_gib()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1) if memory is not None else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "ranvier": _git_commit(),
        "synapse": synapse_version,
        "load_before": os.getloadavg(),
        "calibration_before_s": round(calibrate(), 4),
    }


def finish(machine: dict[str, Any]) -> dict[str, Any]:
    """Adds the after-run load and calibration, and the calibration's change in percent."""
    after = calibrate()
    before = machine["calibration_before_s"]
    return {
        **machine,
        "load_after": os.getloadavg(),
        "calibration_after_s": round(after, 4),
        "calibration_change_pct": round(100 * (after - before) / before, 1) if before else None,
    }


def summary(machine: dict[str, Any]) -> str:
    """One paragraph for a report header."""
    load = "/".join(f"{x:.1f}" for x in machine["load_before"])
    parts = [
        f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, Linux {machine['kernel']}",
        f"Python {machine['python']}, Ranvier {machine['ranvier']}"
        + (f", Synapse {machine['synapse']}" if machine.get("synapse") else ""),
        f"load average before {load}",
    ]
    if "load_after" in machine:
        parts.append("after " + "/".join(f"{x:.1f}" for x in machine["load_after"]))
        parts.append(
            f"CPU calibration {machine['calibration_before_s']:.3f} s before, "
            f"{machine['calibration_after_s']:.3f} s after ({machine['calibration_change_pct']:+.1f}%)"
        )
    return "; ".join(parts)
