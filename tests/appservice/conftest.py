"""The appservice tests' environment: a Ranvier with one registration, mautrix's appservice as the bridge,
and a plain HTTP client."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from ranvier.app import Homeserver
from tests.appservice.harness import Bridge, Client, start_homeserver, write_config
from tests.storage.conftest import PG_DSN


class Env:
    def __init__(self, tmp_path: Path, hs: Homeserver, bridge: Bridge, client: Client, config: Path) -> None:
        self.tmp_path, self.hs, self.bridge, self.anon, self.config = tmp_path, hs, bridge, client, config

    @property
    def server_name(self) -> str:
        return self.hs.server_name


@pytest.fixture(params=["sqlite", "postgres"])
async def engine_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The server's database: SQLite in the test directory, or a fresh PostgreSQL database dropped
    afterwards (skipped without PostgreSQL, failed under CI)."""
    if request.param == "sqlite":
        yield "sqlite:///homeserver.db"
        return
    try:
        admin = await asyncpg.connect(PG_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as e:
        message = f"PostgreSQL at {PG_DSN} unreachable: {e}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    name = f"ranvier_as_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield f"{PG_DSN.rsplit('/', 1)[0]}/{name}"
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async for e in _env(tmp_path, "sqlite:///homeserver.db"):
        yield e


@pytest.fixture
async def env_any_engine(tmp_path: Path, engine_url: str) -> AsyncIterator[Env]:
    """``env`` on SQLite and on PostgreSQL."""
    async for e in _env(tmp_path, engine_url):
        yield e


async def _env(tmp_path: Path, database_url: str) -> AsyncIterator[Env]:
    config, as_port = write_config(tmp_path, database_url=database_url)
    hs = await start_homeserver(config)
    base = f"http://127.0.0.1:{hs.ports['client']}"
    bridge = Bridge(base, hs.server_name, as_port, tmp_path / "mx-state.json")
    await bridge.start()
    async with aiohttp.ClientSession() as session:
        e = Env(tmp_path, hs, bridge, Client(session, base), config)
        try:
            yield e
        finally:
            await e.bridge.stop()
            await e.hs.stop()
