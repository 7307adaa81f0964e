"""matrix-js-sdk (the SDK behind Element Web) against a real Ranvier subprocess: two clients log in, start
syncing, and exchange an invite, a join, a message, a read receipt, a typing notification and account
data, each seen by the other client through its own /sync. The script is tests/e2e/js/round_trip.mjs."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from .ranvier_process import RanvierProcess

JS_DIR = Path(__file__).parent / "js"
PASSWORD = "correct horse battery staple"


def _ensure_sdk() -> None:
    """Install matrix-js-sdk into tests/e2e/js/node_modules on first use (the lock file pins it)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm are not installed")
    if (JS_DIR / "node_modules" / "matrix-js-sdk" / "package.json").exists():
        return
    proc = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        reason = f"npm could not install matrix-js-sdk (registry unreachable?): {proc.stderr.strip()[-500:]}"
        print(reason)
        pytest.skip(reason)


@pytest.fixture
def ranvier(tmp_path: Path) -> Iterator[RanvierProcess]:
    server = RanvierProcess.create(tmp_path)
    server.start()
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log_tail()


async def _register(session: aiohttp.ClientSession, url: str, name: str) -> str:
    body = {"username": name, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
    async with session.post(url + "/_matrix/client/v3/register", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["access_token"])


async def test_js_sdk_round_trip(ranvier: RanvierProcess) -> None:
    _ensure_sdk()
    async with aiohttp.ClientSession() as session:
        await _register(session, ranvier.client_url, "alice")
        bob_token = await _register(session, ranvier.client_url, "bob")

        proc = subprocess.run(
            ["node", str(JS_DIR / "round_trip.mjs"), ranvier.client_url, "alice", "bob", PASSWORD],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, f"{proc.stderr[-4000:]}\n--- server log ---\n{ranvier.log_tail()}"
        # The SDK logs to stdout too; the results are the last line.
        results = json.loads(proc.stdout.strip().splitlines()[-1])

        assert results["alice"].startswith("@alice:") and results["bob"].startswith("@bob:")
        assert results["default_room_version"] == "12"
        assert results["invite_seen"] is True
        assert results["received_body"] == "hello from matrix-js-sdk"
        assert results["received_event_id"] == results["event_id"]
        assert results["receipt_seen"] is True
        assert results["typing_seen"] is True
        assert results["account_data"] == {"colour": "teal"}

        # And the server agrees: the message is in the room's history, and Bob's receipt is stored.
        room_id, event_id = results["room_id"], results["event_id"]
        headers = {"Authorization": f"Bearer {bob_token}"}
        url = f"{ranvier.client_url}/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=5"
        async with session.get(url, headers=headers) as resp:
            chunk = (await resp.json())["chunk"]
        bodies = {e["event_id"]: e["content"].get("body") for e in chunk}
        assert bodies.get(event_id) == "hello from matrix-js-sdk"
        async with session.get(f"{ranvier.client_url}/_matrix/client/v3/sync", headers=headers) as resp:
            sync = await resp.json()
        ephemeral = sync["rooms"]["join"][room_id]["ephemeral"]["events"]
        receipts = [e["content"] for e in ephemeral if e["type"] == "m.receipt"]
        assert any(results["bob"] in c.get(event_id, {}).get("m.read", {}) for c in receipts)
