"""A pytest plugin for runs with ``RANVIER_TARGET=workers`` (``-p tests.workers.target_report``): which tests
started worker deployments (``tests/workers/target.py``), as a ``workers_deployments`` property of each test
(in the JUnit XML) and a line of the summary. Tests whose servers do not come from a re-targeted factory run
as they always do, against one process; this tells them apart."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from tests.workers import target

_BEFORE = pytest.StashKey[int]()
_through: dict[str, int] = {}
_outcome: dict[str, str] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_BEFORE] = target.started


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    count = target.started - item.stash.get(_BEFORE, target.started)
    if report.when == "teardown" and count:
        item.user_properties.append(("workers_deployments", count))
        report.user_properties = list(item.user_properties)
        _through[item.nodeid] = count
    if count and (report.failed or (report.when == "call" and report.outcome != "passed")):
        _outcome.setdefault(item.nodeid, "failed" if report.failed else report.outcome)
    elif count and report.when == "call":
        _outcome.setdefault(item.nodeid, "passed")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _through:
        return
    counts: dict[str, int] = {}
    for nodeid in _through:
        outcome = _outcome.get(nodeid, "skipped")
        counts[outcome] = counts.get(outcome, 0) + 1
    terminalreporter.write_sep(
        "-",
        f"{len(_through)} tests started {sum(_through.values())} worker deployments: "
        + ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())),
    )
    for nodeid, outcome in sorted(_outcome.items()):
        if outcome != "passed":
            terminalreporter.write_line(f"  {outcome}: {nodeid}")
