"""A real multi-process Ranvier deployment for tests and the workers benchmark: every instance of a layout
(``ranvier.workers.layout``) a ``python -m ranvier run --worker NAME`` subprocess on a fresh PostgreSQL
database and Redis, behind a routing proxy (aiohttp, in the calling process) that sends each request where
``ranvier.workers.routing`` says, as the nginx example does. The proxy plays nginx; the test plays the
supervisor (``kill`` is SIGKILL, ``restart`` starts the same instance again).

PostgreSQL (``RANVIER_TEST_PG_DSN``, default postgresql://postgres@127.0.0.1:5432/test) and Redis
(``RANVIER_TEST_REDIS_URL``, default redis://127.0.0.1:6379/0) must be reachable: ``services_problem()`` says
why not, and the tests skip on it, except under ``CI``, where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import ssl
import subprocess
import sys
import uuid
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml
from aiohttp import web
from yarl import URL

from ranvier.app import Homeserver
from ranvier.workers.layout import Layout, WorkerRole, plan_layout
from ranvier.workers.routing import HttpRole, Listener, instance_role, role_for
from tests.ports import free_port

PG_ADMIN_DSN = os.environ.get("RANVIER_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("RANVIER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 90.0

# The deployment the issue asks for: main + 2 client readers + 2 event persisters + 2 federation senders.
ISSUE_LAYOUT: dict[WorkerRole, int] = {"client_reader": 2, "event_persister": 2, "federation_sender": 2}

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones aiohttp recomputes: not copied by the proxy.
_HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
        "Transfer-Encoding", "Upgrade", "Content-Length", "Content-Encoding",
    )
)  # fmt: skip


async def services_problem() -> str | None:
    """Why a deployment cannot run here (PostgreSQL or Redis unreachable), or None."""
    try:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        await conn.close()
    except (OSError, asyncpg.PostgresError) as e:
        return f"PostgreSQL at {PG_ADMIN_DSN} unreachable: {e}"
    match = re.match(r"redis://([^:/]+):(\d+)", REDIS_URL)
    host, port = (match.group(1), int(match.group(2))) if match else ("127.0.0.1", 6379)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        writer.write(b"PING\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        if not answer.startswith(b"+PONG"):
            return f"Redis at {REDIS_URL} answered {answer!r} to PING"
    except (OSError, TimeoutError) as e:
        return f"Redis at {REDIS_URL} unreachable: {e}"
    return None


async def create_database() -> str:
    """A fresh PostgreSQL database; returns its URL."""
    name = f"ranvier_workers_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"


async def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


# -- the routing proxy -------------------------------------------------------------------------------------


@dataclass
class RoutingProxy:
    """One public listener (client or federation) routing by ``role_for``; several instances of a role are
    chosen by a hash of the access token (nginx's ``hash ... consistent``), so a user stays on one process."""

    listener: Listener
    upstreams: Mapping[HttpRole, Sequence[str]]
    port: int
    tls: ssl.SSLContext | None = None
    routed: Counter[tuple[HttpRole, str]] = field(default_factory=Counter)
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    def target(self, method: str, path: str, key: str) -> tuple[HttpRole, str]:
        role = instance_role(role_for(method, path), self.upstreams)
        targets = self.upstreams[role]
        return role, targets[zlib.crc32(key.encode()) % len(targets)]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        key = request.headers.get("Authorization") or request.query.get("access_token", "")
        role, address = self.target(request.method, request.path, key)
        self.routed[(role, address)] += 1
        scheme = "https" if self.tls is not None else "http"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        headers["X-Forwarded-For"] = request.remote or "127.0.0.1"
        body = await request.read()
        try:
            async with self._session.request(
                request.method,
                # encoded=True: the path goes on byte for byte (X-Matrix signatures cover the request URI).
                URL(f"{scheme}://{address}{request.raw_path}", encoded=True),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                ssl=False,
            ) as upstream:
                payload = await upstream.read()
                out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
                return web.Response(status=upstream.status, body=payload, headers=out)
        except (aiohttp.ClientError, OSError) as e:
            # What nginx answers when the upstream is down (a killed process before its restart).
            return web.json_response(
                {"errcode": "M_UNKNOWN", "error": f"upstream {address} unavailable: {e}"}, status=502
            )

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=180), auto_decompress=False)
        app = web.Application(client_max_size=200 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.tls).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


# -- the deployment ------------------------------------------------------------------------------------------


@dataclass
class Deployment:
    """Start with ``await Deployment.start(workdir)``; ``client_url``/``server_name`` are the proxy's."""

    workdir: Path
    layout: Layout
    database_url: str
    config_path: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    proxies: list[RoutingProxy] = field(default_factory=list)

    @classmethod
    async def start(
        cls,
        workdir: Path,
        counts: Mapping[WorkerRole, int] = ISSUE_LAYOUT,
        extra_config: Mapping[str, Any] | None = None,
        *,
        single_process: bool = False,
        public_client_port: int | None = None,
        public_federation_port: int | None = None,
        database_url: str | None = None,
        extra_listeners: Mapping[str, Any] | None = None,
    ) -> Deployment:
        """``single_process``: no ``workers:`` and no Redis, one process behind the same proxy (the baseline
        the benchmark compares with). The public ports (the server name is ``127.0.0.1:<federation port>``)
        are free ones unless given; ``database_url``: an existing database (a deployment started again over
        the data of a stopped one, see ``stop(keep_database=True)``), else a fresh one;
        ``extra_listeners``: main's listeners besides client and federation (e.g. ``metrics``)."""
        workdir.mkdir(parents=True, exist_ok=True)
        public_client = public_client_port or free_port()
        public_federation = public_federation_port or free_port()
        layout = plan_layout(
            {} if single_process else dict(counts),
            server_name=f"127.0.0.1:{public_federation}",
            next_port=free_port,
            public_client_port=public_client,
            public_federation_port=public_federation,
        )
        database_url = database_url or await create_database()
        config_path = workdir / "homeserver.yaml"
        config = _config(workdir, layout, database_url, extra_config or {})
        config["listeners"].update(extra_listeners or {})
        if single_process:
            del config["workers"], config["redis"]
        config_path.write_text(yaml.safe_dump(config))
        deployment = cls(workdir, layout, database_url, config_path)
        try:
            # Main first: it runs the migrations the others then find done.
            await deployment.start_instance("main")
            await asyncio.gather(*(deployment.start_instance(n) for n in layout.names if n != "main"))
            await deployment._start_proxies()
        except BaseException:
            await deployment.stop()
            raise
        return deployment

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.layout.public_client_port}"

    @property
    def server_name(self) -> str:
        return self.layout.server_name

    def instance_url(self, name: str) -> str:
        """The client listener of an instance (main's or a reader's/media worker's own)."""
        inst = next(i for i in self.layout.instances if i.name == name)
        port = self.layout.main_client_port if name == "main" else inst.client_port
        if port is None:
            raise ValueError(f"{name} has no client listener")
        return f"http://127.0.0.1:{port}"

    def names_of(self, role: str) -> list[str]:
        return [i.name for i in self.layout.of_role(role)]

    async def _start_proxies(self) -> None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        # The deployment's own (self-signed) federation certificate, created by main on its first start.
        tls.load_cert_chain(self.workdir / "tls.crt", self.workdir / "tls.key")
        self.proxies = [
            RoutingProxy("client", self.layout.client_upstreams(), self.layout.public_client_port),
            RoutingProxy(
                "federation", self.layout.federation_upstreams(), self.layout.public_federation_port, tls
            ),
        ]
        for proxy in self.proxies:
            await proxy.start()

    def routed(self) -> Counter[tuple[HttpRole, str]]:
        total: Counter[tuple[HttpRole, str]] = Counter()
        for proxy in self.proxies:
            total.update(proxy.routed)
        return total

    async def start_instance(self, name: str) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps its own copy
        command = [sys.executable, "-m", "ranvier", "run", "-c", str(self.config_path)]
        if len(self.layout.instances) > 1:
            command += ["--worker", name]
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        log.close()
        self.processes[name] = process
        await self.wait_ready(name)

    async def wait_ready(self, name: str) -> None:
        """Until the instance answers /health on its first listener (client, federation, replication)."""
        url = self._health_url(name)
        process = self.processes[name]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while loop.time() < deadline:
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.tail_log(name)}")
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with session.get(url, ssl=False) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{name} not ready after {START_TIMEOUT}s:\n{self.tail_log(name)}")

    def _health_url(self, name: str) -> str:
        inst = next(i for i in self.layout.instances if i.name == name)
        if name == "main":
            return f"http://127.0.0.1:{self.layout.main_client_port}/health"
        if inst.client_port is not None:
            return f"http://127.0.0.1:{inst.client_port}/health"
        if inst.federation_port is not None:
            return f"https://127.0.0.1:{inst.federation_port}/health"
        return f"http://127.0.0.1:{inst.replication_port}/health"

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown of any kind, as a crash or the OOM killer would."""
        process = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(30)

    async def restart(self, name: str) -> None:
        """What the supervisor does after a death: start the same instance again."""
        await self.start_instance(name)

    def tail_log(self, name: str, lines: int = 40) -> str:
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{self.tail_log(name)}" for name in self.layout.names)

    async def stop(self, *, keep_database: bool = False) -> dict[str, int]:
        """SIGTERM to every process (SIGKILL 12 s later); returns each process's exit status (0: a clean
        shutdown). The database is dropped unless ``keep_database``."""
        for proxy in self.proxies:
            await proxy.stop()
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        codes: dict[str, int] = {}
        for name, process in self.processes.items():
            try:
                # A process still answering a parked /sync waits for it (aiohttp's shutdown_timeout, 10 s).
                codes[name] = await asyncio.to_thread(process.wait, 12)
            except subprocess.TimeoutExpired:
                print(f"{name} had not exited 12 s after SIGTERM: killed", file=sys.stderr)
                process.kill()
                codes[name] = await asyncio.to_thread(process.wait, 10)
        if not keep_database:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                await drop_database(self.database_url)
        return codes


def _config(workdir: Path, layout: Layout, database_url: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    secret = uuid.uuid4().hex
    return {
        "server_name": layout.server_name,
        "data_dir": str(workdir),
        "signing_key_path": str(workdir / "signing.key"),
        "database": {"url": database_url},
        "listeners": {
            "client": {"bind": layout.bind, "port": layout.main_client_port, "x_forwarded": True},
            "federation": {
                "bind": layout.bind,
                "port": layout.main_federation_port,
                "tls": True,
                "tls_certificate_path": str(workdir / "tls.crt"),
                "tls_private_key_path": str(workdir / "tls.key"),
            },
        },
        "registration": {"enabled": True},
        "federation": {"verify_tls": False, "allow_loopback": True},
        "rate_limits": {"enabled": False},
        # A channel prefix of its own: deployments of parallel test runs share one Redis.
        "redis": {"url": REDIS_URL, "channel_prefix": f"ranvier-test-{secret[:8]}"},
        "workers": layout.workers_section(secret),
        **extra,
    }


# -- the routes a Ranvier process registers ----------------------------------------------------------------

_PARAM = re.compile(r"\{[^}]+\}")


@dataclass(frozen=True)
class RegisteredRoute:
    method: str
    template: str  # as registered, e.g. /_matrix/client/v3/rooms/{room}/send/{type}/{txn}
    listener: Listener

    @property
    def sample_path(self) -> str:
        """A concrete path the route matches (every variable a plain token)."""
        return _PARAM.sub("x1", self.template)


@contextlib.asynccontextmanager
async def single_process(workdir: Path) -> AsyncIterator[tuple[Homeserver, list[RegisteredRoute]]]:
    """A single-process server (in this process, SQLite) and every (method, path) its client and federation
    listeners register: the union of all roles, since one process serves everything."""
    from tests.scenarios.servers import start_single_server

    hs = await start_single_server(workdir)
    try:
        routes: set[RegisteredRoute] = set()
        # _start_site appends a runner per listener, in the order of hs.ports.
        for listener, runner in zip(hs.ports, hs._runners, strict=True):
            if listener not in ("client", "federation"):
                continue
            for route in runner.app.router.routes():
                info = route.resource.get_info() if route.resource is not None else {}
                template = info.get("formatter") or info.get("path")
                if template is None and "prefix" in info:
                    template = str(info["prefix"]).rstrip("/") + "/{name}"  # static files
                if template is None or route.method == "*":
                    continue
                routes.add(RegisteredRoute(route.method, str(template), listener))  # type: ignore[arg-type]
        yield hs, sorted(routes, key=lambda r: (r.listener, r.template, r.method))
    finally:
        await hs.stop()


async def registered_routes(workdir: Path) -> list[RegisteredRoute]:
    async with single_process(workdir) as (_, routes):
        return routes


async def unrecognized(session: aiohttp.ClientSession, method: str, url: str) -> bool:
    """Whether a request (without credentials) gets the router's 404/405 "Unrecognized request": no route
    for it. Handlers answer anything else (401 without a token, 400 for the empty body, ...)."""
    data = None if method in ("GET", "DELETE") else b"{}"
    async with session.request(method, url, data=data, ssl=False) as resp:
        body = await resp.json(content_type=None) if resp.content_type == "application/json" else {}
    error = body.get("error", "") if isinstance(body, dict) else ""
    return resp.status in (404, 405) and str(error).startswith("Unrecognized request")
