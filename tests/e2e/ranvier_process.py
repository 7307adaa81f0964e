"""Start a real Ranvier as a subprocess (the way an operator does: generate-config, then run)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.ports import free_port
from tests.workers.target import DeploymentThread, keep_stopped, take_stopped, workers_target


@dataclass
class RanvierProcess:
    data_dir: Path
    server_name: str
    client_port: int
    federation_port: int
    proc: subprocess.Popen[bytes] | None = None
    # RANVIER_TARGET=workers: a multi-process deployment behind a routing proxy on the same ports instead.
    deployment: DeploymentThread | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @classmethod
    def create(cls, data_dir: Path, *, enable_registration: bool = True) -> RanvierProcess:
        client_port, federation_port = free_port(), free_port()
        server_name = f"127.0.0.1:{federation_port}"
        args = [
            sys.executable,
            "-m",
            "ranvier",
            "generate-config",
            "--server-name",
            server_name,
            "--data-dir",
            str(data_dir),
            "--client-port",
            str(client_port),
            "--federation-port",
            str(federation_port),
            "--no-verify-tls",
            "--allow-loopback",
        ]
        if enable_registration:
            args.append("--enable-registration")
        subprocess.run(args, check=True, capture_output=True)
        return cls(data_dir, server_name, client_port, federation_port)

    def start(self, timeout: float = 30.0) -> None:
        if workers_target():
            # The generated config's settings (registration, shared secret, metrics listener, ...) on the
            # deployment's own database, listeners and workers sections.
            generated = yaml.safe_load((self.data_dir / "homeserver.yaml").read_text())
            listeners = generated.pop("listeners", {})
            for key in ("server_name", "data_dir", "signing_key_path", "database", "media", "log_config"):
                generated.pop(key, None)
            self.deployment = DeploymentThread.start(
                self.data_dir / "workers",
                generated,
                public_client_port=self.client_port,
                public_federation_port=self.federation_port,
                extra_listeners={k: v for k, v in listeners.items() if k not in ("client", "federation")},
                # Started again after a stop: on the same database.
                database_url=take_stopped(self.data_dir, self.federation_port),
            )
            return
        log = open(self.data_dir / "ranvier.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ranvier", "run", "-c", str(self.data_dir / "homeserver.yaml")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ranvier exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.client_url + "/_matrix/client/versions", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"ranvier did not start in {timeout}s: {self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        if workers_target():
            logs = sorted((self.data_dir / "workers").glob("*.log"))
            return "\n".join(f"--- {p.stem}\n{p.read_text(errors='replace')[-n:]}" for p in logs)
        path = self.data_dir / "ranvier.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def stop(self, timeout: float = 15.0) -> int:
        if self.deployment is not None:
            keep_stopped(self.data_dir, self.deployment.dep.database_url, self.federation_port)
            codes = self.deployment.stop(keep_database=True)
            self.deployment = None
            return next((code for code in codes.values() if code != 0), 0)
        if self.proc is None:
            return 0
        self.proc.terminate()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code
