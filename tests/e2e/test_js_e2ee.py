"""Server-side key backup with matrix-js-sdk's Rust crypto (initRustCrypto) against a real Ranvier
subprocess: a new device decrypts an old message with a room key restored from the backup
(tests/e2e/js/key_backup.mjs)."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .ranvier_process import RanvierProcess
from .test_js_sdk import JS_DIR, PASSWORD, _ensure_sdk


@pytest.fixture
def ranvier(tmp_path: Path) -> Iterator[RanvierProcess]:
    server = RanvierProcess.create(tmp_path)
    server.start()
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log_tail()


def _register(url: str, name: str) -> None:
    body = json.dumps({"username": name, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}).encode()
    request = urllib.request.Request(
        url + "/_matrix/client/v3/register", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def test_a_new_device_restores_a_room_key_from_the_backup(ranvier: RanvierProcess) -> None:
    _ensure_sdk()
    _register(ranvier.client_url, "alice")
    _register(ranvier.client_url, "bob")
    proc = subprocess.run(
        ["node", "key_backup.mjs", ranvier.client_url, "alice", "bob", PASSWORD],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + ranvier.log_tail()
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results["backup_count"] >= 1
    assert results["undecryptable_before_restore"] is True
    assert results["imported"] >= 1
    assert results["decrypted_after_restore"] == "a secret worth backing up"
