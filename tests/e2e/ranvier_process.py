"""Start a real Ranvier as a subprocess (the way an operator does: generate-config, then run)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.ports import free_port


@dataclass
class RanvierProcess:
    data_dir: Path
    server_name: str
    client_port: int
    federation_port: int
    proc: subprocess.Popen[bytes] | None = None

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
        path = self.data_dir / "ranvier.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def stop(self, timeout: float = 15.0) -> int:
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
