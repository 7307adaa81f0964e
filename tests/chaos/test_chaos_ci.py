"""The CI-sized chaos run: three real Ranvier processes per trial behind per-link TCP proxies, users
sending on all three, five faults per trial from a seeded schedule (the SQLite and the PostgreSQL trial
together inject every kind: kill, refuse, blackhole, oneway, staggered, slow), then the invariants read from
each server's database without any client paging (see bench/chaos/check.py):

- every acknowledged event is a timeline event (not an outlier, not rejected or soft-failed) on every server,
  within ``CONVERGE_TIMEOUT`` of the last heal (the figure reported is how long it took; nothing asserts
  on it);
- ``/state`` is the same on every server;
- no txnId has more than one event on any server (a client retry after a crash creates no duplicate);
- acknowledged events of different depths are in the same order on every server.

The per-trial report is printed (``pytest -s``) and is part of the failure message; a failing trial's server
logs are kept under bench/results/chaos/kept/. PostgreSQL comes from 127.0.0.1:5432 (database ``test``, trust
auth; each server gets a database of its own); when unreachable the PostgreSQL trial is skipped, except under
``CI``, where that fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.chaos.cli import postgres_problem
from bench.chaos.cluster import kill_leftovers
from bench.chaos.trial import TrialConfig, run_trial

REPO = Path(__file__).resolve().parents[2]
CONVERGE_TIMEOUT = 60.0
FAULTS_PER_TRIAL = 5


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    yield
    kill_leftovers()  # a trial interrupted (timeout, KeyboardInterrupt) leaves no process or database


@pytest.mark.timeout(280)
@pytest.mark.parametrize(("index", "backend"), [(0, "sqlite"), (1, "postgres")])
async def test_chaos_ci(index: int, backend: str, tmp_path: Path) -> None:
    if backend == "postgres":
        problem = await postgres_problem()
        if problem is not None:
            if os.environ.get("CI"):
                pytest.fail(problem)
            pytest.skip(problem)
    cfg = TrialConfig(
        servers=3,
        faults=FAULTS_PER_TRIAL,
        seed=int(os.environ.get("CHAOS_SEED", "1")),
        interval=0.25,
        converge_timeout=CONVERGE_TIMEOUT,
        gap=(1.5, 3.0),
        duration=(3.0, 6.0),
        workdir=tmp_path,
        keep_dir=REPO / "bench" / "results" / "chaos" / "kept",
    )
    result = await run_trial(cfg, index, backend)
    report = result.report()
    print(report)
    assert result.error is None, report + "\n" + result.error
    assert result.acknowledged > 0, report
    assert result.missing_at_end == 0, report
    assert result.state_divergent_servers == [], report
    assert result.duplicates == 0, report
    assert result.order_inversions == 0, report
