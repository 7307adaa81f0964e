"""matrix-js-sdk (thread support on) against a real Ranvier process: a thread reply sent by the SDK, an edit,
``relations()``, the thread list (all and participated), the root's bundled aggregations and a threaded
read receipt seen by the other client. The script is tests/e2e/js/threads.mjs (beside round_trip.mjs,
sharing its pinned SDK)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.ranvier_process import RanvierProcess
from tests.e2e.test_js_sdk import JS_DIR, PASSWORD, _ensure_sdk, _register


@pytest.fixture
def ranvier(tmp_path: Path) -> Iterator[RanvierProcess]:
    server = RanvierProcess.create(tmp_path)
    server.start()
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log_tail()


async def test_js_sdk_threads(ranvier: RanvierProcess) -> None:
    _ensure_sdk()
    async with aiohttp.ClientSession() as session:
        await _register(session, ranvier.client_url, "alice")
        await _register(session, ranvier.client_url, "bob")
    proc = subprocess.run(
        ["node", str(JS_DIR / "threads.mjs"), ranvier.client_url, "alice", "bob", PASSWORD],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, f"{proc.stderr[-4000:]}\n--- server log ---\n{ranvier.log_tail()}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    root, reply = results["root"], results["reply"]
    assert results["relations"] == [reply]
    assert results["threads"] == [root]
    assert results["bob_participated"] == [root]
    assert results["thread_count"] == 1 and results["thread_latest"] == reply
    assert results["replace"] == results["edit"]
    assert results["receipt"]["thread_id"] == root
