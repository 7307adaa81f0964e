"""Smoke tests of ``python3 -m bench fanout`` and ``python3 -m bench growth`` on Ranvier at the smallest
sizes: the simulated peers, the room building and the reports run end to end. No figure is checked
(benchmarks are not tests); what is checked is that every message reached every peer it should have and
that every curve has a point at every x."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("psutil")
pytest.importorskip("PIL")

REPO = Path(__file__).resolve().parents[2]


def _bench(*args: str, timeout: float = 240) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def test_fanout_reaches_every_peer_in_each_scenario(tmp_path: Path) -> None:
    _bench("fanout", "--peers", "4", "--degraded", "1", "--repeats", "1", "--out", str(tmp_path))
    (result,) = tmp_path.glob("fanout-*.json")
    document = json.loads(result.read_text())
    scenarios = document["results"]["ranvier"]
    assert len(scenarios) == 4  # healthy, slow, hung, refused
    for label, runs in scenarios.items():
        (run,) = runs
        # Every healthy peer got the message (the bad ones are left out of the count).
        assert run["healthy_all_s"] is not None, (label, run)
        assert run["healthy_received"] == (4 if label == "all healthy" else 3), (label, run)
        if "slow" in label:
            assert run["slow_all_s"] is not None
    assert document["machine"]["load_after"]


def test_growth_writes_every_curve_at_every_x(tmp_path: Path) -> None:
    _bench(
        "growth", "--sizes", "10,30", "--widths", "1,2", "--width-members", "5", "--repeats", "1",
        "--out", str(tmp_path),
    )  # fmt: skip
    (result,) = tmp_path.glob("growth-*.json")
    points = json.loads(result.read_text())["points"]
    by_curve: dict[tuple[str, str], set[int]] = {}
    for p in points:
        by_curve.setdefault((p["curve"], p["metric"]), set()).add(p["x"])
    for (curve, metric), xs in by_curve.items():
        if metric.startswith("ingest: 50 member joins"):
            continue  # only measured where the room grew by a whole transaction or more
        assert xs == ({10, 30} if curve == "size" else {1, 2}), (curve, metric, xs)
    assert ("size", "state lookup: /state_ids (whole state)") in by_curve
    charts = {p.name for p in tmp_path.glob("*.png")}
    assert charts == {f"growth-{c}-{n}.png" for c in ("size", "width") for n in ("ingest", "sync", "state")}
    assert len(list(tmp_path.glob("growth-*.csv"))) == 1
