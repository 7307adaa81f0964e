"""Smoke test of ``python3 -m bench compare`` on Ranvier only, smallest sizes: the harness, the driver and
the report run end to end. No figure is checked (benchmarks are not tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("psutil")
pytest.importorskip("rich")

REPO = Path(__file__).resolve().parents[2]


def test_compare_runs_on_ranvier_with_the_smallest_sizes(tmp_path: Path) -> None:
    small = ["--repeats", "1", "--ingest-pdus", "50", "--load-clients", "2", "--load-messages", "2"]
    small += ["--sizes", "10"]
    workloads = "ingest,client_load,join,join_gap"
    args = ["--kinds", "ranvier", "--workloads", workloads, *small, "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "bench", "compare", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = tmp_path.glob("compare-*.json")
    document = json.loads(result.read_text())
    results = document["results"]
    for name in workloads.split(","):
        ranvier = results[name]["ranvier"]
        assert ranvier["error"] is None
        assert all(not s["failures"] for s in ranvier["series"]), ranvier["series"]
    assert len(list(tmp_path.glob("*.png"))) == 4

    def values(name: str, metric: str) -> list[float]:
        (series,) = [s for s in results[name]["ranvier"]["series"] if s["metric"] == metric]
        return list(series["values"])

    # Issue 21's honest figures: kept (paged) and first read apart; the joiner's own CPU; the gap as an
    # outcome; the machine, versions and noise recorded with the result.
    assert values("ingest", "kept (paged to the start)") == [50]
    assert values("ingest", "readable in the first /messages read") == [50]
    assert values("join", "joining server CPU")[0] > 0
    assert values("join_gap", "gap event found within 60 s") == [1]
    machine = document["machine"]
    assert machine["cores"] and machine["ranvier"] and "calibration_change_pct" in machine
    assert document["args"]["presence"] == "on"
