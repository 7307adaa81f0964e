"""Fixtures that run every storage test on SQLite and on PostgreSQL.

PostgreSQL comes from ``RANVIER_TEST_PG_DSN`` (default: the local server's ``test`` database). Each test gets
its own schema there, so tests and engineers running suites side by side never see each other's rows. When
the server cannot be reached the PostgreSQL half is skipped, except under CI (``CI`` set), where that fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ranvier.protocol.events import Pdu, StateKey, build_event
from ranvier.protocol.room_versions import get_room_version
from ranvier.protocol.signing import SigningKey
from ranvier.storage.interfaces import EventToPersist
from ranvier.storage.sql import RoomStorage
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


@pytest.fixture
async def storage(db: Database) -> RoomStorage:
    return await RoomStorage.open(db)


# -- building events -------------------------------------------------------------------------------------

_KEY = SigningKey.generate("t1")
SERVER = "example.org"
ALICE = "@alice:example.org"


class Dag:
    """Builds signed PDUs of one room with readable names: ``dag.add("B", prev=["A"])``.

    Events are real (hashed and signed) so storage sees exactly what the server will give it; the DAG need
    not pass the authorization rules, which storage does not check.
    """

    def __init__(self, room_id: str | None = None, version: str = "11") -> None:
        self.room_id = room_id or f"!{uuid.uuid4().hex[:12]}:{SERVER}"
        self.version = get_room_version(version)
        self.by_name: dict[str, Pdu] = {}
        self._ts = 1_700_000_000_000

    def id(self, name: str) -> str:
        return self.by_name[name].event_id

    def add(
        self,
        name: str,
        prev: Sequence[str] = (),
        *,
        etype: str = "m.room.message",
        state_key: str | None = None,
        content: dict[str, Any] | None = None,
        auth: Sequence[str] = (),
        sender: str = ALICE,
        depth: int | None = None,
        redacts: str | None = None,
    ) -> Pdu:
        """An event named ``name`` whose prev/auth events are earlier names (or raw event ids)."""
        prev_ids = [self.by_name[p].event_id if p in self.by_name else p for p in prev]
        auth_ids = [self.by_name[a].event_id if a in self.by_name else a for a in auth]
        if depth is None:
            depth = 1 + max((self.by_name[p].depth for p in prev if p in self.by_name), default=0)
        self._ts += 1
        pdu = build_event(
            room_version=self.version,
            room_id=self.room_id,
            sender=sender,
            event_type=etype,
            content={"body": name} if content is None else content,
            prev_events=prev_ids,
            auth_events=auth_ids,
            depth=depth,
            origin_server_ts=self._ts,
            server_name=sender.partition(":")[2],
            signing_key=_KEY,
            state_key=state_key,
            redacts=redacts,
        )
        self.by_name[name] = pdu
        return pdu

    def member(self, name: str, user: str, membership: str, prev: Sequence[str], **kw: Any) -> Pdu:
        return self.add(
            name, prev, etype="m.room.member", state_key=user, content={"membership": membership}, **kw
        )


def message_batch(dag: Dag, names: list[str], state: dict[StateKey, str]) -> list[EventToPersist]:
    return [EventToPersist(dag.by_name[n], state_before=state) for n in names]
