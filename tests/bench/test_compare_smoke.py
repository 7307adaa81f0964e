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
    args = ["--kinds", "ranvier", "--workloads", "ingest,client_load", *small, "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "bench", "compare", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = tmp_path.glob("compare-*.json")
    results = json.loads(result.read_text())["results"]
    for name in ("ingest", "client_load"):
        ranvier = results[name]["ranvier"]
        assert ranvier["error"] is None
        assert all(not s["failures"] for s in ranvier["series"]), ranvier["series"]
    assert len(list(tmp_path.glob("*.png"))) == 2
