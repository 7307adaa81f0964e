"""N Ranvier processes on loopback with a TCP proxy on every federation link.

Server ``i`` is named ``127.0.0.1:<public port>``; a public proxy on that port relays to its real federation
listener (for anything that resolves the name itself). Ranvier peers do not use it: each server's
``federation.host_overrides`` sends its traffic for peer ``j`` to the proxy of link ``i -> j``, which relays
to ``j``'s listener. So a fault on link ``i -> j`` touches only requests that ``i`` makes of ``j``
(including key fetches), and the answers to them.

Processes are started the way an operator starts them (``ranvier generate-config``, then ``ranvier run``),
each in its own session so that SIGKILL reaches exactly it. PostgreSQL servers get a fresh database each,
dropped when the cluster closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import yaml

from bench.servers import POSTGRES, SynapseBenchServer, create_database, drop_database
from tests.interop.synapse import SynapseServer
from tests.ports import free_port

from .proxy import LinkProxy

START_TIMEOUT = 90.0
# Every process the harness has started and not yet seen exit, so that a test can kill what an interrupted
# trial left behind (``kill_leftovers``).
RUNNING: set[subprocess.Popen[bytes]] = set()
DATABASES: set[str] = set()  # likewise the PostgreSQL databases not yet dropped


@dataclass
class ChaosServer:
    """A Ranvier process."""

    index: int
    workdir: Path
    postgres: bool
    public_port: int = field(default_factory=free_port)
    federation_port: int = field(default_factory=free_port)
    client_port: int = field(default_factory=free_port)
    database: str | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    # "stats" or "tracemalloc": run under bench.chaos.traced (memory figures, and with "tracemalloc"
    # snapshots, on SIGUSR2) instead of plain ``ranvier run``.
    memory_probe: str | None = None
    kind: str = "ranvier"

    @property
    def server_name(self) -> str:
        return f"127.0.0.1:{self.public_port}"

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "ranvier.log"

    @property
    def memory_dir(self) -> Path:
        return self.workdir / "memory"

    @property
    def sqlite_path(self) -> Path:
        return self.workdir / "homeserver.db"

    @property
    def pg_dsn(self) -> str:
        assert self.database is not None
        return f"postgresql://{POSTGRES['user']}@{POSTGRES['host']}:{POSTGRES['port']}/{self.database}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def configure(self, overrides: dict[str, str]) -> None:
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
        data["log_level"] = "INFO"
        data["rate_limits"] = {"enabled": False}
        data["federation"]["host_overrides"] = overrides
        # The soak's --cached-events / --sqlite-cache-kib: the servers' cache bounds (config `caches`).
        caches = data.setdefault("caches", {})
        if os.environ.get("CHAOS_CACHED_EVENTS"):
            caches["events"] = int(os.environ["CHAOS_CACHED_EVENTS"])
        if os.environ.get("CHAOS_SQLITE_CACHE_KIB"):
            caches["sqlite_page_cache_kib"] = int(os.environ["CHAOS_SQLITE_CACHE_KIB"])
        if self.postgres:
            self.database = create_database(f"chaos{self.index}")
            DATABASES.add(self.database)
            data["database"]["url"] = self.pg_dsn
        config.write_text(yaml.safe_dump(data))

    def spawn(self) -> None:
        """Start the process; ``wait_ready`` waits for its client API."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps its own copy
        log.write(f"\n===== chaos harness: start #{self.starts + 1} at {time.time():.3f} =====\n".encode())
        log.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.memory_probe:
            cmd = [sys.executable, "-m", "bench.chaos.traced", str(self.workdir / "homeserver.yaml"),
                   str(self.memory_dir)]  # fmt: skip
            if self.memory_probe == "stats":
                env["CHAOS_TRACEMALLOC_FRAMES"] = "0"
        else:
            cmd = [sys.executable, "-m", "ranvier", "run", "-c", str(self.workdir / "homeserver.yaml")]
        self.process = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        RUNNING.add(self.process)
        self.starts += 1

    async def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(f"server {self.index} exited with {code}:\n{self.tail_log()}")
            try:
                await asyncio.to_thread(_get, self.client_url + "/_matrix/client/versions")
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise RuntimeError(f"server {self.index} did not start in {timeout:.0f}s:\n{self.tail_log()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        RUNNING.discard(self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        RUNNING.discard(self.process)

    def rss_mb(self) -> float | None:
        if not self.alive:
            return None
        assert self.process is not None
        try:
            return float(psutil.Process(self.process.pid).memory_info().rss) / 2**20
        except psutil.Error:
            return None

    def tail_log(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def drop_database(self) -> None:
        if self.database:
            drop_database(self.database)
            DATABASES.discard(self.database)
            self.database = None


class ChaosSynapse(ChaosServer):
    """A Synapse process (``bench.servers.SynapseBenchServer``) in the same role: its server name is its
    public proxy's port; it resolves peers' names itself, so it reaches Ranvier server ``j`` through ``j``'s
    public proxy, which is therefore the link ``synapse -> j``."""

    def __init__(self, index: int, workdir: Path, postgres: bool, version: str) -> None:
        super().__init__(index, workdir, postgres)
        self.kind = "synapse"
        self.inner = SynapseBenchServer(workdir, version, name_port=self.public_port, postgres=postgres)
        self.federation_port = self.inner.federation_port
        self.client_port = self.inner.client_port

    @property
    def log_path(self) -> Path:
        return self.workdir / "homeserver.log"

    @property
    def pg_dsn(self) -> str:
        assert self.inner.database is not None
        return f"postgresql://{POSTGRES['user']}@{POSTGRES['host']}:{POSTGRES['port']}/{self.inner.database}"

    def configure(self, overrides: dict[str, str]) -> None:
        self.inner.configure()  # Synapse cannot take overrides: it reaches peers by their names
        if self.inner.database:
            DATABASES.add(self.inner.database)

    def spawn(self) -> None:
        # SynapseServer.start spawns and waits; run it in wait_ready's thread instead.
        self.starts += 1

    async def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        await asyncio.to_thread(SynapseServer.start, self.inner)
        self.process = self.inner.process
        assert self.process is not None
        RUNNING.add(self.process)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        RUNNING.discard(self.process)

    def stop(self) -> None:
        self.inner.stop()
        RUNNING.discard(self.process)

    def drop_database(self) -> None:
        if self.inner.database:
            DATABASES.discard(self.inner.database)
            drop_database(self.inner.database)
            self.inner.database = None

    def register_user(self, localpart: str) -> tuple[str, str]:
        return self.inner.register(localpart)


def kill_leftovers() -> int:
    """SIGKILL every harness process still running (after an interrupted trial) and drop its databases;
    returns how many processes were killed."""
    killed = 0
    for proc in list(RUNNING):
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
            killed += 1
        RUNNING.discard(proc)
    for name in list(DATABASES):
        drop_database(name)
        DATABASES.discard(name)
    return killed


def _get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=2):
        pass


@dataclass
class Cluster:
    servers: list[ChaosServer]
    public: dict[int, LinkProxy] = field(default_factory=dict)
    links: dict[tuple[int, int], LinkProxy] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        workdir: Path,
        n: int,
        *,
        postgres: bool,
        memory_probe: str | None = None,
        synapse_version: str | None = None,
    ) -> Cluster:
        """``n`` Ranvier servers, and a Synapse as the last server if ``synapse_version`` is given."""
        servers = [ChaosServer(i, workdir / f"s{i}", postgres, memory_probe=memory_probe) for i in range(n)]
        if synapse_version is not None:
            servers.append(ChaosSynapse(n, workdir / f"s{n}-synapse", postgres, synapse_version))
        cluster = cls(servers)
        for s in servers:
            cluster.public[s.index] = LinkProxy(f"public{s.index}", s.public_port, s.federation_port)
        for s in servers:
            for t in servers:
                if t is s:
                    continue
                if s.kind == "synapse":
                    cluster.links[(s.index, t.index)] = cluster.public[t.index]
                else:
                    cluster.links[(s.index, t.index)] = LinkProxy(
                        f"{s.index}->{t.index}", free_port(), t.federation_port
                    )
        return cluster

    def proxies(self) -> list[LinkProxy]:
        return list({id(p): p for p in [*self.public.values(), *self.links.values()]}.values())

    async def start(self) -> None:
        for proxy in self.proxies():
            await proxy.start()
        for s in self.servers:
            overrides = {
                t.server_name: f"127.0.0.1:{self.links[(s.index, t.index)].port}"
                for t in self.servers
                if t is not s
            }
            await asyncio.to_thread(s.configure, overrides)
            s.spawn()
        for s in self.servers:
            await s.wait_ready()

    async def close(self) -> None:
        for s in self.servers:
            await asyncio.to_thread(s.stop)
        for proxy in self.proxies():
            await proxy.close()
        for s in self.servers:
            await asyncio.to_thread(s.drop_database)

    def keep_logs(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for s in self.servers:
            # Logs, configs, and SQLite databases (the servers are stopped: the files are consistent).
            for name in ("ranvier.log", "homeserver.yaml", "homeserver.log", "stdout.log", "extra.yaml",
                         "homeserver.db", "homeserver.db-wal"):  # fmt: skip
                with contextlib.suppress(OSError):
                    shutil.copy(s.workdir / name, dest / f"s{s.index}-{name}")

    def links_of(self, index: int) -> list[LinkProxy]:
        """Every link into or out of server ``index``, and its public proxy."""
        found = [p for (a, b), p in self.links.items() if index in (a, b)] + [self.public[index]]
        return list({id(p): p for p in found}.values())
