"""Synapse's own ``register_new_matrix_user`` (from the interop venv) against a real Ranvier process set up
as an operator would (``ranvier generate-config``, then ``ranvier run``): with ``-c homeserver.yaml`` (the
secret read from Ranvier's generated config) and with ``-k SECRET``."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import yaml

from tests.e2e.ranvier_process import RanvierProcess
from tests.interop.synapse import ensure_synapse


def _post(url: str, body: dict[str, object], token: str | None = None) -> dict[str, object]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def _get(url: str, token: str) -> dict[str, object]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def _login(server: RanvierProcess, user: str, password: str) -> str:
    answer = _post(
        server.client_url + "/_matrix/client/v3/login",
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password},
    )
    return str(answer["access_token"])


def test_register_new_matrix_user_with_config_and_with_key(tmp_path: Path) -> None:
    script = ensure_synapse().parent / "register_new_matrix_user"
    server = RanvierProcess.create(tmp_path / "ranvier", enable_registration=False)
    config_path = server.data_dir / "homeserver.yaml"
    secret = yaml.safe_load(config_path.read_text())["registration_shared_secret"]
    server.start()
    try:
        # Both at once (each run imports Synapse, which takes seconds): -c reads the secret from Ranvier's
        # generated homeserver.yaml, -k is given it.
        with_config = [str(script), "-u", "alice", "-p", "alice-password", "--admin", "-c", str(config_path)]
        with_key = [str(script), "-u", "bob", "-p", "bob-password", "--no-admin", "-k", secret]
        runs = [
            subprocess.Popen(
                [*args, server.client_url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            for args in (with_config, with_key)
        ]
        for run in runs:
            output, _ = run.communicate(timeout=90)
            assert run.returncode == 0, output
        token = _login(server, "alice", "alice-password")
        alice = f"@alice:{server.server_name}"
        assert _get(f"{server.client_url}/_synapse/admin/v2/users/{alice}", token)["admin"] is True
        bob_token = _login(server, "bob", "bob-password")
        assert _get(f"{server.client_url}/_matrix/client/v3/account/whoami", bob_token)["user_id"] == (
            f"@bob:{server.server_name}"
        )
        listed = _get(f"{server.client_url}/_synapse/admin/v2/users", token)
        bob = next(u for u in listed["users"] if u["name"] == f"@bob:{server.server_name}")  # type: ignore[union-attr, index]
        assert bob["admin"] is False
    finally:
        server.stop()
