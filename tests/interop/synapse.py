"""Run a real Synapse from PyPI as a federation peer on loopback.

The harness installs ``matrix-synapse`` into ``<repo>/.venvs/synapse-<version>`` once (serialised with a file
lock: parallel pip runs into fresh venvs break each other), writes a configuration that makes loopback
federation work (see shared/interop/SYNAPSE.md), starts Synapse as a subprocess and stops it.

Everything here is synchronous (subprocess + urllib) so that it can back a session-scoped fixture without
depending on an event loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ranvier.federation.tls import generate_self_signed_cert
from ranvier.protocol.signing import SigningKey
from tests.ports import free_port

DEFAULT_VERSION = "1.163.2"
REPO_ROOT = Path(__file__).resolve().parents[2]
VENVS = REPO_ROOT / ".venvs"
INSTALL_TIMEOUT = 900
START_TIMEOUT = 90


@contextlib.contextmanager
def _file_lock(path: Path):  # type: ignore[no-untyped-def]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_synapse(version: str = DEFAULT_VERSION) -> Path:
    """Return the python of a venv with ``matrix-synapse==version``, installing it if missing."""
    venv = VENVS / f"synapse-{version}"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.exists():
        return python
    # One install at a time, across processes (pytest-xdist workers, other test runs).
    with _file_lock(VENVS / ".install.lock"):
        if marker.exists():
            return python
        # Keep the venvs out of git without touching the shared .gitignore.
        (VENVS / ".gitignore").write_text("*\n")
        if venv.exists():
            shutil.rmtree(venv)  # a half-finished install from an interrupted run
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"matrix-synapse=={version}",
            ],
            check=True,
            timeout=INSTALL_TIMEOUT,
        )
        marker.write_text(version + "\n")
    return python


@dataclass
class SynapseServer:
    """A running Synapse. ``server_name`` is ``127.0.0.1:<federation port>``."""

    version: str
    workdir: Path
    python: Path
    federation_port: int = field(default_factory=free_port)
    client_port: int = field(default_factory=free_port)
    shared_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    process: subprocess.Popen[bytes] | None = None

    @property
    def server_name(self) -> str:
        return f"127.0.0.1:{self.federation_port}"

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def federation_url(self) -> str:
        return f"https://127.0.0.1:{self.federation_port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "homeserver.yaml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "homeserver.log"

    def signing_key(self) -> SigningKey:
        """Synapse's own signing key, read from the file it generated."""
        (key_file,) = self.workdir.glob("*.signing.key")
        return SigningKey.from_file_line(key_file.read_text().strip())

    # -- lifecycle -------------------------------------------------------------------------------------

    def configure(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                str(self.python),
                "-m",
                "synapse.app.homeserver",
                "--server-name",
                self.server_name,
                "--config-path",
                str(self.config_path),
                "--generate-config",
                "--report-stats=no",
                "--data-directory",
                str(self.workdir),
            ],
            cwd=self.workdir,
            check=True,
            timeout=120,
            stdout=subprocess.DEVNULL,
        )
        cert, key = self.workdir / "tls.crt", self.workdir / "tls.key"
        generate_self_signed_cert(cert, key, dns_names=(), ip_addresses=("127.0.0.1",))
        relaxed = {"per_second": 1000, "burst_count": 1000}
        extra: dict[str, Any] = {
            "server_name": self.server_name,
            "listeners": [
                {
                    "port": self.federation_port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": True,
                    "resources": [{"names": ["federation"], "compress": False}],
                },
                {
                    "port": self.client_port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                },
            ],
            "tls_certificate_path": str(cert),
            "tls_private_key_path": str(key),
            "database": {"name": "sqlite3", "args": {"database": str(self.workdir / "homeserver.db")}},
            "media_store_path": str(self.workdir / "media_store"),
            # Loopback is on Synapse's default blacklist; without this it answers "403: IP address blocked".
            "federation_ip_range_blacklist": [],
            "ip_range_blacklist": [],
            "federation_verify_certificates": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "report_stats": False,
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "registration_shared_secret": self.shared_secret,
            "rc_message": relaxed,
            "rc_registration": relaxed,
            "rc_login": {"address": relaxed, "account": relaxed, "failed_attempts": relaxed},
            "rc_joins": {"local": relaxed, "remote": relaxed},
            "rc_invites": {"per_room": relaxed, "per_user": relaxed, "per_issuer": relaxed},
            # Partial-join tests fill a room with dozens of members (thousands with RANVIER_LONG=1).
            "rc_joins_per_room": relaxed,
            "rc_federation": {
                "window_size": 1000,
                "sleep_limit": 1000,
                "sleep_delay": 1,
                "reject_limit": 1000,
                "concurrent": 100,
            },
            "federation_rr_transactions_per_room_per_second": 1000,
            # Synapse's default, spelled out: tests/interop/test_synapse_presence.py depends on it.
            "presence": {"enabled": True},
        }
        # Later config files win (SYNAPSE.md), so the generated file stays untouched.
        (self.workdir / "extra.yaml").write_text(yaml.safe_dump(extra))

    def start(self) -> None:
        log = open(self.workdir / "stdout.log", "ab")  # noqa: SIM115 - closed when the process is stopped
        self.process = subprocess.Popen(
            [
                str(self.python),
                "-m",
                "synapse.app.homeserver",
                "-c",
                str(self.config_path),
                "-c",
                str(self.workdir / "extra.yaml"),
            ],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() signals exactly this tree
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Synapse exited with {self.process.returncode}:\n{self.tail_log()}")
            try:
                with urllib.request.urlopen(f"{self.client_url}/_matrix/client/versions", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Synapse did not become ready in {START_TIMEOUT}s:\n{self.tail_log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def tail_log(self, lines: int = 60) -> str:
        text = ""
        for path in (self.workdir / "stdout.log", self.log_path):
            if path.exists():
                text += f"--- {path.name}\n" + "\n".join(
                    path.read_text(errors="replace").splitlines()[-lines:]
                )
        return text

    # -- client-side helpers ---------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any | None = None, token: str | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.client_url}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def register(
        self, localpart: str, *, admin: bool = False, password: str | None = None
    ) -> tuple[str, str]:
        """Register a user with the shared-secret admin API; return (user_id, access_token)."""
        password = password or secrets.token_hex(12)
        nonce = self._request("GET", "/_synapse/admin/v1/register")["nonce"]
        mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(
            b"\x00".join(
                [nonce.encode(), localpart.encode(), password.encode(), b"admin" if admin else b"notadmin"]
            )
        )
        body = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": mac.hexdigest(),
        }
        answer = self._request("POST", "/_synapse/admin/v1/register", body)
        return answer["user_id"], answer["access_token"]

    def client_api(self, method: str, path: str, body: Any | None = None, token: str | None = None) -> Any:
        """A client-server API call; raises urllib.error.HTTPError on non-2xx."""
        return self._request(method, path, body, token)


@contextlib.contextmanager
def running_synapse(workdir: Path, version: str = DEFAULT_VERSION):  # type: ignore[no-untyped-def]
    server = SynapseServer(version=version, workdir=workdir, python=ensure_synapse(version))
    server.configure()
    server.start()
    try:
        yield server
    finally:
        server.stop()
