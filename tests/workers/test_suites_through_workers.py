"""The client and federation suites through a worker deployment, in the default run (issue 22: "CI ... runs
the multi-server federation scenarios and the client tests through it").

The tests below are not copies: each runs a selection of the real suites' tests in a child pytest with
``RANVIER_TARGET=workers``, which makes their server factories (``tests.scenarios.servers.start_server``,
``tests.e2e.ranvier_process.RanvierProcess``) start main + 2 client readers + 2 event persisters + 2
federation senders on PostgreSQL and Redis behind the routing proxy (``tests/workers/target.py``). Every
selected test must pass there (a skip counts as a failure: the selection holds only tests that talk to
their servers over HTTP alone).

The selection is what fits the suite's time budget (a deployment per server, started in 5-15 s); the whole
of these suites runs through deployments with the command in docs/workers.md:

    RANVIER_TARGET=workers python3 -m pytest tests/e2e tests/scenarios tests/interop ...
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .deployment import REPO, services_problem

# Each group is one child run; its tests start their own deployments.
IN_CI: dict[str, list[str]] = {
    # matrix-nio and matrix-js-sdk against one deployment each: chat, long-poll /sync, /messages pages,
    # redaction, login; typing, receipts, read markers, account data, profile changes, /forget; E2EE with
    # nio (to-device, one-time keys, device lists) and the js-sdk round trip. mautrix's media calls through a
    # deployment with a media worker (upload, create + upload, download, thumbnail, config), and mautrix's
    # appservice against a deployment that loads its registration in every process (namespaces,
    # masquerading, event and ephemeral pushes from the background role, ping, user and alias queries).
    "clients": [
        "tests/e2e/test_nio_client.py",
        "tests/e2e/test_operations.py",
        "tests/e2e/test_nio_e2ee.py",
        "tests/e2e/test_js_sdk.py",
        "tests/media/test_mautrix_media.py",
        "tests/appservice/test_mautrix.py::test_namespaces_masquerading_pushes_ping_and_queries",
    ],
    # Multi-server federation scenarios, every server a deployment: remote joins and messages both ways,
    # typing, receipts and profile changes, presence (on join and on change), state and redactions, the
    # first /sync after a remote join under history visibility.
    "federation": [
        "tests/scenarios/test_remote_joins.py::test_remote_join_and_messages_both_ways",
        "tests/scenarios/test_ephemeral_federation.py",
        "tests/scenarios/test_presence_federation.py",
        "tests/scenarios/test_replication.py::test_messages_state_and_redactions_reach_every_server[2]",
        "tests/scenarios/test_sync_visibility.py",
    ],
}


def _outcomes(junit: Path) -> dict[str, str]:
    """test id -> passed / failed / error / skipped, from the child's JUnit XML; "single process" for a test
    that passed without starting a deployment (tests/workers/target_report.py's property)."""
    outcomes: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        deployed = any(p.get("name") == "workers_deployments" for p in case.iter("property"))
        outcome = "passed" if deployed else "single process"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "failed" if child.tag == "failure" else child.tag
                # A failing teardown adds an error next to a pass or a failure: the worst one counts.
                if outcome in ("failed", "error"):
                    break
        outcomes[name] = outcome
    return outcomes


@pytest.mark.timeout(900)
@pytest.mark.parametrize("group", [g for g, tests in IN_CI.items() if tests])
def test_suites_through_the_worker_deployment(group: str, tmp_path: Path) -> None:
    problem = asyncio.run(services_problem())
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    junit = tmp_path / "junit.xml"
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.workers.target_report",
        "-rfEs", f"--junitxml={junit}", "--basetemp", str(tmp_path / "run"), *IN_CI[group],
    ]  # fmt: skip
    child = subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ, "RANVIER_TARGET": "workers"},
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    output = child.stdout[-12000:] + child.stderr[-3000:]
    assert junit.exists(), output
    outcomes = _outcomes(junit)
    not_passed = {name: outcome for name, outcome in outcomes.items() if outcome != "passed"}
    assert outcomes and not not_passed, f"{not_passed}\n{output}"
    assert child.returncode == 0, output
    print(f"{group}: {len(outcomes)} tests passed through the worker deployment")
