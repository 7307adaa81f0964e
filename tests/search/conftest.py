"""The storage suite's database fixtures (SQLite and PostgreSQL), the in-process server fixtures, and
``database_url``: None (SQLite in the server's data directory) or a fresh PostgreSQL database."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.scenarios.conftest import servers, session
from tests.storage.conftest import PG_DSN, db, db_spec, raw_db, storage

__all__ = ["database_url", "db", "db_spec", "raw_db", "servers", "session", "storage"]


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    try:
        admin = await asyncpg.connect(PG_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as e:
        message = f"PostgreSQL at {PG_DSN} unreachable: {e}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    name = f"ranvier_search_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield f"{PG_DSN.rsplit('/', 1)[0]}/{name}"
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
