"""Homeservers for the comparison benchmark: Ranvier and Synapse as subprocesses on loopback with equivalent
settings (INFO logging, no rate limits that a benchmark could hit, SQLite or a fresh PostgreSQL database
each), and a sampler of their memory and CPU.

Both kinds expose the same small surface (``server_name``, ``client_url``, ``pid``, ``start``/``stop``) so
that the workloads never ask which one they drive. ``server_name`` may name a port other than the real
federation listener: the join-gap workload puts a delaying proxy on the named port.

``python3 -m bench servers`` starts one of each and prints start-up time and idle memory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil
import yaml

from tests.interop.synapse import DEFAULT_VERSION, VENVS, SynapseServer, _file_lock, ensure_synapse, free_port

POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
START_TIMEOUT = 90.0


class BenchServer(Protocol):
    kind: str

    @property
    def server_name(self) -> str: ...
    @property
    def client_url(self) -> str: ...
    @property
    def pid(self) -> int: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def tail_log(self, lines: int = 60) -> str: ...


# -- PostgreSQL ------------------------------------------------------------------------------------------


def _psql(sql: str) -> None:
    # psql rather than asyncpg: this module is synchronous, and CREATE DATABASE cannot run in a transaction.
    subprocess.run(
        ["psql", "-h", str(POSTGRES["host"]), "-p", str(POSTGRES["port"]), "-U", str(POSTGRES["user"]),
         "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def create_database(prefix: str) -> str:
    """A fresh, empty database (C collation, which Synapse insists on); returns its name."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    _psql(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'")
    return name


def drop_database(name: str) -> None:
    with contextlib.suppress(subprocess.SubprocessError):
        _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- Ranvier ---------------------------------------------------------------------------------------------


@dataclass
class RanvierServer:
    workdir: Path
    name_port: int | None = None  # the port in the server name, if not the listener's (proxy in front)
    postgres: bool = False
    kind: str = "ranvier"
    federation_port: int = field(default_factory=free_port)
    client_port: int = field(default_factory=free_port)
    database: str | None = None
    process: subprocess.Popen[bytes] | None = None
    presence: bool = True

    @property
    def server_name(self) -> str:
        return f"127.0.0.1:{self.name_port or self.federation_port}"

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def configure(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "homeserver.yaml"
        subprocess.run(
            [sys.executable, "-m", "ranvier", "generate-config", "--server-name", self.server_name,
             "--data-dir", str(self.workdir), "--client-port", str(self.client_port),
             "--federation-port", str(self.federation_port), "--enable-registration", "--no-verify-tls",
             "--allow-loopback", "--force"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        data = yaml.safe_load(config.read_text())
        data["log_level"] = "INFO"  # Synapse's generated log config is INFO as well
        data["rate_limits"] = {"enabled": False}  # as Synapse's rc_* limits are relaxed in its config
        # Presence the same way on both kinds (bench compare --presence; on by default, as on both servers).
        data["presence"] = {"enabled": self.presence}
        if self.postgres:
            self.database = create_database("bench_ranvier")
            data["database"]["url"] = (
                f"postgresql://{POSTGRES['user']}@{POSTGRES['host']}:{POSTGRES['port']}/{self.database}"
            )
        config.write_text(yaml.safe_dump(data))

    def start(self) -> None:
        self.configure()
        log = open(self.workdir / "stdout.log", "ab")  # noqa: SIM115 - the child keeps its own copy
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ranvier", "run", "-c", str(self.workdir / "homeserver.yaml")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        log.close()
        _wait_ready(self, self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.database:
            drop_database(self.database)
            self.database = None

    def tail_log(self, lines: int = 60) -> str:
        path = self.workdir / "stdout.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


# -- Synapse ---------------------------------------------------------------------------------------------


def ensure_synapse_postgres(version: str) -> Path:
    """The Synapse venv, with the PostgreSQL driver Synapse needs (not part of a plain install)."""
    python = ensure_synapse(version)
    marker = python.parent.parent / ".psycopg2"
    if not marker.exists():
        with _file_lock(VENVS / ".install.lock"):
            if not marker.exists():
                subprocess.run(
                    [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                     "psycopg2-binary"],
                    check=True, timeout=600,
                )  # fmt: skip
                marker.write_text("ok\n")
    return python


class SynapseBenchServer(SynapseServer):
    """The interop harness's Synapse, plus: a server name on another port, PostgreSQL, per-room join limits
    off. Configuration is written on ``start`` so that the constructor stays cheap."""

    kind = "synapse"

    def __init__(
        self,
        workdir: Path,
        version: str,
        *,
        name_port: int | None = None,
        postgres: bool = False,
        presence: bool = True,
    ):
        python = ensure_synapse_postgres(version) if postgres else ensure_synapse(version)
        super().__init__(version=version, workdir=workdir, python=python)
        self.name_port = name_port
        self.postgres = postgres
        self.presence = presence
        self.database: str | None = None

    @property
    def server_name(self) -> str:
        return f"127.0.0.1:{self.name_port or self.federation_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def configure(self) -> None:
        super().configure()
        extra_path = self.workdir / "extra.yaml"
        extra = yaml.safe_load(extra_path.read_text())
        relaxed = {"per_second": 1000, "burst_count": 1000}
        # Newer limits than the interop harness relaxes; the benchmark joins one room many times.
        extra["rc_joins_per_room"] = relaxed
        extra["rc_presence"] = {"per_user": relaxed}
        extra["presence"] = {"enabled": self.presence}
        if self.postgres:
            self.database = create_database("bench_synapse")
            extra["database"] = {
                "name": "psycopg2",
                "args": {
                    "user": POSTGRES["user"],
                    "host": POSTGRES["host"],
                    "port": POSTGRES["port"],
                    "database": self.database,
                    "cp_min": 5,
                    "cp_max": 10,
                },
            }
        extra_path.write_text(yaml.safe_dump(extra))

    def start(self) -> None:
        self.configure()
        super().start()

    def stop(self) -> None:
        super().stop()
        if self.database:
            drop_database(self.database)
            self.database = None


def _wait_ready(server: BenchServer, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{server.kind} exited with {process.returncode}:\n{server.tail_log()}")
        try:
            with urllib.request.urlopen(server.client_url + "/_matrix/client/versions", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.kind} did not start in {START_TIMEOUT:.0f}s:\n{server.tail_log()}")


def make_server(
    kind: str,
    workdir: Path,
    *,
    postgres: bool,
    synapse_version: str,
    name_port: int | None = None,
    presence: bool = True,
) -> BenchServer:
    if kind == "ranvier":
        return RanvierServer(workdir, name_port=name_port, postgres=postgres, presence=presence)
    if kind == "synapse":
        return SynapseBenchServer(
            workdir, synapse_version, name_port=name_port, postgres=postgres, presence=presence
        )
    raise ValueError(f"unknown server kind {kind!r}")


# -- resources -------------------------------------------------------------------------------------------


@dataclass
class Usage:
    peak_rss_mb: float = 0.0
    final_rss_mb: float = 0.0
    cpu_s: float = 0.0


class ResourceSampler:
    """Samples the RSS of server processes (and their children) from a thread every ``interval`` seconds;
    CPU is read as the difference of the processes' own counters, which needs no sampling."""

    def __init__(self, pids: dict[str, int], interval: float = 0.1) -> None:
        self.procs = {label: psutil.Process(pid) for label, pid in pids.items()}
        self.interval = interval
        self.usage = {label: Usage() for label in pids}
        self._cpu0 = {label: self._cpu(p) for label, p in self.procs.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _tree(proc: psutil.Process) -> list[psutil.Process]:
        try:
            return [proc, *proc.children(recursive=True)]
        except psutil.Error:
            return []

    def _rss(self, proc: psutil.Process) -> float:
        total = 0
        for p in self._tree(proc):
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total / 2**20

    def _cpu(self, proc: psutil.Process) -> float:
        total = 0.0
        for p in self._tree(proc):
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for label, proc in self.procs.items():
                u = self.usage[label]
                u.peak_rss_mb = max(u.peak_rss_mb, self._rss(proc))

    def __enter__(self) -> ResourceSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for label, proc in self.procs.items():
            u = self.usage[label]
            u.final_rss_mb = self._rss(proc)
            u.peak_rss_mb = max(u.peak_rss_mb, u.final_rss_mb)
            u.cpu_s = self._cpu(proc) - self._cpu0[label]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench servers", description=__doc__)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--synapse-version", default=DEFAULT_VERSION)
    parser.add_argument("--workdir", type=Path, default=Path("bench/results/servers"))
    args = parser.parse_args(argv)
    args.workdir = args.workdir.resolve()  # Synapse runs with its work directory as cwd
    for kind in ("ranvier", "synapse"):
        server = make_server(
            kind, args.workdir / f"{kind}-{int(time.time())}", postgres=args.postgres,
            synapse_version=args.synapse_version,
        )  # fmt: skip
        started = time.monotonic()
        try:
            server.start()
            took = time.monotonic() - started
            time.sleep(2)  # let start-up work settle before reading idle memory
            rss = ResourceSampler({kind: server.pid}).__enter__()
            rss.__exit__()
            print(f"{kind:8} {re.sub(r'^.*:', ':', server.server_name)} ready in {took:.1f}s, "
                  f"idle RSS {rss.usage[kind].final_rss_mb:.0f} MB")  # fmt: skip
        finally:
            server.stop()
