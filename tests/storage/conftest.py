"""Fixtures that run every storage test on SQLite and on PostgreSQL.

PostgreSQL comes from ``RANVIER_TEST_PG_DSN`` (default: the local server's ``test`` database). Each test gets
its own schema there, so tests and engineers running suites side by side never see each other's rows. When
the server cannot be reached the PostgreSQL half is skipped, except under CI (``CI`` set), where that fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from ranvier.storage.sql.engine import Database, PostgresDatabase, SqliteDatabase
from ranvier.storage.sql.migrate import migrate

PG_DSN = os.environ.get("RANVIER_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class DbSpec:
    """Where a test's database lives; enough to open it again, from this process or another."""

    dialect: str
    sqlite_path: str | None = None
    pg_dsn: str | None = None
    pg_schema: str | None = None

    async def open(self) -> Database:
        if self.dialect == "sqlite":
            assert self.sqlite_path is not None
            return await SqliteDatabase.open(self.sqlite_path, synchronous="NORMAL")
        assert self.pg_dsn is not None
        return await PostgresDatabase.open(self.pg_dsn, schema=self.pg_schema)


async def _pg_available() -> str | None:
    try:
        conn = await asyncpg.connect(PG_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as e:
        return f"PostgreSQL at {PG_DSN} unreachable: {e}"
    await conn.close()
    return None


@pytest.fixture(params=["sqlite", "postgres"])
async def db_spec(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DbSpec]:
    if request.param == "sqlite":
        yield DbSpec("sqlite", sqlite_path=str(tmp_path / "test.db"))
        return
    problem = await _pg_available()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    schema = f"t_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        yield DbSpec("postgres", pg_dsn=PG_DSN, pg_schema=schema)
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


@pytest.fixture
async def raw_db(db_spec: DbSpec) -> AsyncIterator[Database]:
    """An empty database (no migrations applied)."""
    db = await db_spec.open()
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def db(raw_db: Database) -> Database:
    """A database with the current schema."""
    await migrate(raw_db)
    return raw_db
