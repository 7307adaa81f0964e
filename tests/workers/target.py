"""Which Ranvier the black-box suites talk to: ``RANVIER_TARGET=workers`` makes their server factories
(``tests.scenarios.servers.start_server``, ``tests.e2e.ranvier_process.RanvierProcess``) start a multi-process
deployment (``tests/workers/deployment.py``: main + 2 client readers + 2 event persisters + 2 federation
senders, subprocesses on a fresh PostgreSQL database and Redis, behind the routing proxy built from
``ranvier/workers/routing.py``) instead of one process; unset (or ``single``), nothing changes. The media
suite's ``start_media_server`` and the appservice harness's ``start_homeserver`` do the same, the media suite
with a media worker and a federation inbound process besides (``MEDIA_LAYOUT``).

The tests see a deployment only through HTTP, as they see a single server through its listeners: its server
name (the proxy's federation address), the proxy's client port, ``stop()``, and the ``config`` it was
started with. A test that reaches into the
process (``hs.storage``, ``hs.persister``, ...) has nothing to reach in a deployment of several processes: it
is skipped with the attribute it asked for, so that the count of such tests shows in the run's summary.

Each deployment runs its proxy on an event loop of its own thread, so that synchronous fixtures can start one
and a deployment does not depend on the loop of the test that started it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from ranvier.config import HomeserverConfig, load_config
from ranvier.workers.layout import WorkerRole

from .deployment import ISSUE_LAYOUT, Deployment, drop_database, services_problem

TARGET_ENV = "RANVIER_TARGET"
T = TypeVar("T")

# The media and appservice suites' deployments: the issue's layout with the media role in a process of its own
# (uploads, downloads and thumbnails routed there; every process shares the data directory's media store) and
# a federation inbound process (other servers' /_matrix/federation/v1/media/ requests).
MEDIA_LAYOUT: dict[WorkerRole, int] = {**ISSUE_LAYOUT, "federation_inbound": 1, "media": 1}

# Deployments started in this process so far (tests/workers/target_report.py counts them per test).
started = 0


def workers_target() -> bool:
    """Whether the suites' servers are worker deployments (``RANVIER_TARGET=workers``)."""
    value = os.environ.get(TARGET_ENV, "single") or "single"
    if value not in ("single", "workers"):
        raise ValueError(f"{TARGET_ENV}={value!r}: expected 'single' or 'workers'")
    return value == "workers"


class DeploymentThread:
    """A ``Deployment`` driven from any thread: its coroutines run on a loop of its own thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="deployment", daemon=True)
        self._thread.start()
        self.deployment: Deployment | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @classmethod
    def start(
        cls,
        workdir: Path,
        extra_config: Mapping[str, Any] | None = None,
        *,
        public_client_port: int | None = None,
        public_federation_port: int | None = None,
        database_url: str | None = None,
        extra_listeners: Mapping[str, Any] | None = None,
        counts: Mapping[WorkerRole, int] = ISSUE_LAYOUT,
    ) -> DeploymentThread:
        global started
        runner = cls()
        try:
            problem = runner.run(services_problem())
            if problem is not None:
                if os.environ.get("CI"):
                    pytest.fail(f"{TARGET_ENV}=workers: {problem}")
                pytest.skip(f"{TARGET_ENV}=workers: {problem}")
            runner.deployment = runner.run(
                Deployment.start(
                    workdir,
                    counts,
                    extra_config,
                    public_client_port=public_client_port,
                    public_federation_port=public_federation_port,
                    database_url=database_url,
                    extra_listeners=extra_listeners,
                )
            )
            started += 1
        except BaseException:
            runner._close()
            raise
        return runner

    @property
    def dep(self) -> Deployment:
        assert self.deployment is not None
        return self.deployment

    def stop(self, *, keep_database: bool = False) -> dict[str, int]:
        try:
            return self.run(self.dep.stop(keep_database=keep_database))
        finally:
            self._close()

    def _close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()


# -- the stand-in for an in-process Homeserver (tests.scenarios.servers.start_server) ------------------------

# Databases of deployments stopped by a test that may start them again (start_server(data_dir, fed_port)):
# data_dir -> (database URL, federation port). Dropped at exit when nobody did.
_STOPPED: dict[Path, tuple[str, int]] = {}


@atexit.register
def _drop_stopped() -> None:
    if not _STOPPED:
        return
    urls = [url for url, _ in _STOPPED.values()]
    _STOPPED.clear()

    async def drop_all() -> None:
        for url in urls:
            with contextlib.suppress(Exception):
                await drop_database(url)

    with contextlib.suppress(Exception):
        asyncio.run(drop_all())


def keep_stopped(data_dir: Path, database_url: str, federation_port: int) -> None:
    """A deployment over ``data_dir`` was stopped with its database kept, for a restart."""
    _STOPPED[data_dir] = (database_url, federation_port)


def take_stopped(data_dir: Path, federation_port: int | None) -> str | None:
    """The database of the deployment stopped over ``data_dir`` under that server name, if any."""
    stopped = _STOPPED.get(data_dir)
    if stopped is None or federation_port != stopped[1]:
        return None
    return _STOPPED.pop(data_dir)[0]


class DeployedHomeserver:
    """What a black-box test uses of ``ranvier.app.Homeserver``: ``server_name``, ``ports`` (the proxy's
    public client and federation ports), ``running``, ``stop()``. Anything else is inside a process."""

    def __init__(self, runner: DeploymentThread, data_dir: Path) -> None:
        self.runner = runner
        self.data_dir = data_dir
        dep = runner.dep
        self.server_name = dep.server_name
        self.ports = {
            "client": dep.layout.public_client_port,
            "federation": dep.layout.public_federation_port,
        }
        self.running = True
        self.exit_codes: dict[str, int] = {}

    @property
    def deployment(self) -> Deployment:
        return self.runner.dep

    @property
    def config(self) -> HomeserverConfig:
        """The configuration every process of the deployment runs with (what the test asked for, as an
        in-process server's ``hs.config``), read from the deployment's homeserver.yaml."""
        return load_config(self.deployment.config_path)

    async def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        # The database is kept: the test may start the server again over the same data.
        keep_stopped(self.data_dir, self.deployment.database_url, self.ports["federation"])
        self.exit_codes = await asyncio.to_thread(self.runner.stop, keep_database=True)

    def log_lines(self, logger: str) -> list[str]:
        """The lines every process of the deployment logged under ``logger`` (e.g. an access log), what a
        test reads from ``caplog`` of an in-process server."""
        lines = []
        for path in sorted(self.deployment.workdir.glob("*.log")):
            lines += [line for line in path.read_text(errors="replace").splitlines() if f" {logger} " in line]
        return lines

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes a DeployedHomeserver does not have: the in-process server's internals.
        if name.startswith("__"):
            raise AttributeError(name)
        pytest.skip(f"{TARGET_ENV}=workers: the test reads hs.{name}, inside the process (not black-box)")


async def start_deployed_server(
    data_dir: Path,
    fed_port: int | None,
    rate_limits: dict[str, Any] | None,
    extra: dict[str, Any] | None,
    rooms: dict[str, Any],
    counts: Mapping[WorkerRole, int] = ISSUE_LAYOUT,
) -> DeployedHomeserver:
    """``start_server``'s arguments, for a deployment: a ``fed_port`` naming a deployment stopped over
    ``data_dir`` starts it again on its database."""
    data_dir.mkdir(parents=True, exist_ok=True)
    database_url = take_stopped(data_dir, fed_port)
    config: dict[str, Any] = {"rooms": rooms, "rate_limits": rate_limits or {}, **(extra or {})}
    runner = await asyncio.to_thread(
        DeploymentThread.start,
        data_dir / "workers",
        config,
        public_federation_port=fed_port,
        database_url=database_url,
        counts=counts,
    )
    return DeployedHomeserver(runner, data_dir)


# Keys of a single server's homeserver.yaml that a deployment sets itself (its database, data directory and
# listeners are its own; the server name comes from the federation port).
_DEPLOYMENT_OWNS = ("server_name", "data_dir", "signing_key_path", "database", "listeners", "log_config")


async def start_deployed_from_config_file(
    config_path: Path, counts: Mapping[WorkerRole, int] = ISSUE_LAYOUT
) -> DeployedHomeserver:
    """A deployment with the settings of a single server's homeserver.yaml (registration, rate limits,
    ``app_service_config_files``, media, ...) under the same server name (its federation port): every process
    loads the same registration files, given to them as absolute paths, since a relative path in the file is
    relative to the file and the deployment's config lives elsewhere. Started again over the same directory
    and name after a ``stop()``, it keeps its database."""
    raw = yaml.safe_load(config_path.read_text()) or {}
    base = config_path.parent
    fed_port = int(raw["listeners"]["federation"]["port"])
    extra = {k: v for k, v in raw.items() if k not in _DEPLOYMENT_OWNS}
    extra["app_service_config_files"] = [
        str(p if Path(p).is_absolute() else base / p) for p in raw.get("app_service_config_files", [])
    ]
    return await start_deployed_server(
        base, fed_port, extra.pop("rate_limits", None), extra, extra.pop("rooms", {}), counts
    )
