"""Smoke test of ``python3 -m bench send_ingest`` with every shape at the smallest sizes: a linear chain, two
senders in one room, rooms at once and a DAG with forks all end with every PDU acknowledged without an error
and served by ``/messages`` in order (the benchmark raises otherwise). No figure is checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_send_ingest_runs_every_shape() -> None:
    args = ["--pdus", "40", "--per-txn", "10", "--runs", "1", "--senders", "1,2", "--rooms", "2", "--forks"]
    done = subprocess.run(
        [sys.executable, "-m", "bench", "send_ingest", *args, "--threads"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if "CPU us/PDU by thread" in line]
    assert len(rows) == 4, done.stdout
    for label in ("1 sender", "2 senders (one room)", "2 rooms at once", "forks (one room)"):
        assert label in done.stdout, done.stdout
    assert "event loop" in rows[0]
