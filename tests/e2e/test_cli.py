"""The ``ranvier`` command as an operator uses it: generate-config, refusing bad configs, register-user
(shared secret against a running server, and straight into the database), graceful shutdown on SIGTERM
with nothing lost across a restart, and the opt-in Prometheus listener."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ranvier.config import load_config
from tests.workers.target import workers_target

from .ranvier_process import RanvierProcess, free_port

V3 = "/_matrix/client/v3"


def ranvier_cmd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ranvier", *args], capture_output=True, text=True, timeout=timeout
    )


def http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def login(server: RanvierProcess, user: str, password: str) -> str:
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    }
    status, answer = http("POST", server.client_url + V3 + "/login", body)
    assert status == 200, answer
    return str(answer["access_token"])


def test_generate_config_writes_a_valid_config(tmp_path: Path) -> None:
    result = ranvier_cmd(
        "generate-config",
        "--server-name",
        "example.org",
        "--data-dir",
        str(tmp_path),
        "--client-port",
        "18008",
    )
    assert result.returncode == 0, result.stderr
    path = tmp_path / "homeserver.yaml"
    config = load_config(path)
    assert config.server_name == "example.org"
    assert config.listeners.client.port == 18008
    assert config.registration.enabled is False and config.registration.shared_secret
    assert config.listeners.metrics.enabled is False
    assert Path(config.data_dir) == tmp_path.resolve()
    # Refuses to overwrite an existing config without --force.
    again = ranvier_cmd("generate-config", "--server-name", "other.org", "--data-dir", str(tmp_path))
    assert again.returncode == 2 and "--force" in again.stderr
    assert load_config(path).server_name == "example.org"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda c: c["listeners"]["client"].update(port=70000), "listeners.client.port"),
        (lambda c: c.update(listners={}), "listners"),
        (lambda c: c.update(server_name="not a server name!"), "server_name"),
    ],
    ids=["bad-port", "unknown-key", "bad-server-name"],
)
def test_invalid_config_exits_2_naming_the_key(tmp_path: Path, change: Any, named: str) -> None:
    server = RanvierProcess.create(tmp_path)
    path = tmp_path / "homeserver.yaml"
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config))
    before = sorted(p.name for p in tmp_path.iterdir())

    result = ranvier_cmd("run", "-c", str(path))
    assert result.returncode == 2, result
    assert named in result.stderr, result.stderr
    # Nothing started: no key, database or certificate was created, and nobody listens on the port.
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    with pytest.raises(OSError):
        urllib.request.urlopen(server.client_url + "/_matrix/client/versions", timeout=1)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RanvierProcess]:
    srv = RanvierProcess.create(tmp_path)
    # Opt in to the metrics listener.
    path = tmp_path / "homeserver.yaml"
    config = yaml.safe_load(path.read_text())
    config["listeners"]["metrics"].update(enabled=True, port=free_port())
    path.write_text(yaml.safe_dump(config))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.skipif(
    workers_target(), reason="register-user --database writes the config's own database, not a deployment's"
)
def test_register_user_shutdown_restart_and_metrics(server: RanvierProcess) -> None:
    config_path = str(server.data_dir / "homeserver.yaml")
    metrics_port = load_config(config_path).listeners.metrics.port
    server.start()

    # register-user against the running server, with the shared secret from the config.
    result = ranvier_cmd("register-user", "-c", config_path, "--user", "carol", "--password", "carol's pw")
    assert result.returncode == 0, result.stderr
    assert f"@carol:{server.server_name}" in result.stdout
    token = login(server, "carol", "carol's pw")

    status, created = http("POST", server.client_url + V3 + "/createRoom", {"name": "kept"}, token)
    assert status == 200, created
    room_id = created["room_id"]
    message = {"msgtype": "m.text", "body": "sent before SIGTERM"}
    status, sent = http(
        "PUT", f"{server.client_url}{V3}/rooms/{room_id}/send/m.room.message/t1", message, token
    )
    assert status == 200, sent

    # The opt-in metrics listener answers Prometheus text, counting the requests just made.
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    counts = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ranvier_http_requests_total{") and 'listener="client"' in line
    ]
    assert counts and sum(counts) >= 4, text[:2000]
    assert "# TYPE ranvier_http_requests_total counter" in text

    # SIGTERM: a graceful stop, exit code 0.
    assert server.stop() == 0, server.log_tail()
    assert "shutting down" in server.log_tail()

    # register-user straight into the database while the server is down.
    result = ranvier_cmd(
        "register-user", "-c", config_path, "--user", "dave", "--password", "dave's pw", "--database"
    )
    assert result.returncode == 0, result.stderr

    # After a restart the message is there and both users can log in.
    server.start()
    token = login(server, "carol", "carol's pw")
    status, history = http(
        "GET", f"{server.client_url}{V3}/rooms/{room_id}/messages?dir=b&limit=20", None, token
    )
    assert status == 200, history
    assert [e["event_id"] for e in history["chunk"] if e["type"] == "m.room.message"] == [sent["event_id"]]
    login(server, "dave", "dave's pw")
