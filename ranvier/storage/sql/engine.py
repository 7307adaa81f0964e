"""One small database API over SQLite (aiosqlite) and PostgreSQL (asyncpg).

Every store writes its SQL once, in the common dialect both engines accept, with ``?`` placeholders; the
PostgreSQL engine rewrites them to ``$1, $2, ...``. Work happens inside a transaction:

    async with db.transaction() as txn:      # a write transaction, committed on exit, rolled back on error
        await txn.execute("INSERT INTO t (a, b) VALUES (?, ?)", (1, "x"))
    rows = await db.fetchall("SELECT a FROM t WHERE b = ?", ("x",))   # a one-statement read

SQLite allows one writer at a time, so write transactions go through one connection behind an asyncio lock,
while reads use their own connections (WAL lets them run beside the writer and see only committed data).
PostgreSQL uses a pool; its transactions run concurrently and callers that need mutual exclusion say so
(the event persister holds its own lock).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlparse

import aiosqlite

if TYPE_CHECKING:
    # Imported when a PostgreSQL database is opened (``PostgresDatabase.open``): asyncpg costs an
    # SQLite-only server about 3 MB of RSS for nothing.
    import asyncpg

from ranvier.protocol.errors import FormatError

Dialect = Literal["sqlite", "postgres"]
Row = tuple[Any, ...]
Params = Sequence[Any]

# SQLite's default limit on bound variables is 32766 since 3.32; PostgreSQL's is 32767. Lists of ids are
# split well below both so that one statement stays cheap to plan.
MAX_IN_LIST = 500


class QueryTimer:
    """Time spent in database statements on behalf of one request (the access log's ``db`` field).

    Set in ``query_timer`` for the duration of a request; every statement run in that context (and in tasks
    created from it, which copy the context) adds its wall time from submission to result. Waiting for the
    SQLite write lock or a pool connection is not counted, only the statements themselves."""

    __slots__ = ("queries", "round_trips", "seconds")

    def __init__(self) -> None:
        self.seconds = 0.0
        self.queries = 0  # statements (BEGIN and COMMIT not counted)
        self.round_trips = 0  # trips to the database: SQLite's thread, PostgreSQL's server


query_timer: ContextVar[QueryTimer | None] = ContextVar("ranvier_query_timer", default=None)


StatementObserver = Callable[[float], None]


def _count(start: float, observe: StatementObserver | None = None, statements: int = 1) -> None:
    elapsed = time.perf_counter() - start
    timer = query_timer.get()
    if timer is not None:
        timer.seconds += elapsed
        timer.queries += statements
        timer.round_trips += 1
    if observe is not None:
        observe(elapsed)  # the metrics' statement latency histogram (metrics_wiring.py)


def chunks(items: Sequence[Any], size: int = MAX_IN_LIST) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def in_list(n: int) -> str:
    """``?, ?, ?`` for an ``IN (...)`` of ``n`` values (``n`` >= 1)."""
    return ", ".join("?" * n)


class Reader(Protocol):
    """What reading code needs: a transaction, or the database itself (one statement at a time)."""

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...
    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...
    async def fetchval(self, sql: str, params: Params = ()) -> Any: ...


class Txn(ABC):
    """A transaction; statements run in order and see each other's effects."""

    @abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> None: ...

    @abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Params]) -> None: ...

    @abstractmethod
    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]


class Database(ABC):
    dialect: Dialect
    # Told each statement's latency (set by the metrics wiring; None: nothing is observed).
    on_statement: StatementObserver | None = None

    @abstractmethod
    def transaction(self) -> Any:
        """``async with db.transaction() as txn``: a write transaction."""

    @abstractmethod
    def snapshot(self) -> Any:
        """``async with db.snapshot() as txn``: a read-only transaction with one consistent view."""

    @abstractmethod
    async def close(self) -> None: ...

    def connections_in_use(self) -> tuple[int, int] | None:
        """(connections in use, connections open) for the metrics; None where not known."""
        return None

    async def execute(self, sql: str, params: Params = ()) -> None:
        """One write statement in a transaction of its own."""
        async with self.transaction() as txn:
            await txn.execute(sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        async with self.snapshot() as txn:
            return await txn.fetchall(sql, params)  # type: ignore[no-any-return]

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]


# -- SQLite -----------------------------------------------------------------------------------------------


# A write deferred by _SqliteTxn: (sql, rows, whether it was an executemany).
_Write = tuple[str, list[tuple[Any, ...]], bool]


def _run_in_thread(
    conn: sqlite3.Connection, writes: list[_Write], query: tuple[str, tuple[Any, ...]] | None
) -> list[Row]:
    """In the connection's thread: the deferred writes in order, then the query (if any), as one hand-off."""
    for sql, rows, many in writes:
        if many:
            conn.executemany(sql, rows)
        else:
            conn.execute(sql, rows[0])
    if query is None:
        return []
    return list(conn.execute(*query).fetchall())


class _SqliteTxn(Txn):
    """A transaction on the writer (or a reader) connection.

    Each trip to the connection's thread costs the event loop a hand-off and a wake-up (on a loaded
    machine, tens of microseconds each: the largest single item of the inbound PDU path's profile). So
    writes, whose results nobody reads, are not sent one by one: they are kept in order and run in the
    connection's thread together with the next read, or with the COMMIT (and BEGIN goes with the first
    trip). The order of statements on the connection is unchanged; a failing write raises at that later
    trip instead, still inside the transaction, which is then rolled back."""

    def __init__(
        self, conn: aiosqlite.Connection, observe: StatementObserver | None = None, begin: str | None = None
    ) -> None:
        self._observe = observe
        self._conn = conn
        self._writes: list[_Write] = []
        if begin is not None:
            self._writes.append((begin, [()], False))
        self._deferred_statements = 0  # writes kept, for the statement count (BEGIN not counted)

    async def execute(self, sql: str, params: Params = ()) -> None:
        self._writes.append((sql, [tuple(params)], False))
        self._deferred_statements += 1

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        batch = [tuple(r) for r in rows]
        if batch:
            self._writes.append((sql, batch, True))
            self._deferred_statements += 1

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return await self._trip((sql, tuple(params)))

    async def flush(self, then: str | None = None) -> None:
        """Run the deferred writes now (and ``then``, e.g. COMMIT, in the same trip)."""
        if then is not None:
            self._writes.append((then, [()], False))
        if self._writes:
            await self._trip(None)

    def discard(self) -> None:
        """Forget the deferred writes (the transaction is being rolled back)."""
        self._writes.clear()
        self._deferred_statements = 0

    async def _trip(self, query: tuple[str, tuple[Any, ...]] | None) -> list[Row]:
        writes, self._writes = self._writes, []
        statements = self._deferred_statements + (query is not None)
        self._deferred_statements = 0
        start = time.perf_counter()
        try:
            if not writes:
                assert query is not None
                return list(await self._conn.execute_fetchall(*query))  # type: ignore[arg-type]
            # aiosqlite's own way of running a function in the connection's thread (``_execute``, what
            # its execute() and executemany() use), with the sqlite3 connection it owns.
            run_in_thread: Callable[..., Awaitable[list[Row]]] = self._conn._execute
            return await run_in_thread(_run_in_thread, self._conn._conn, writes, query)
        finally:
            _count(start, self._observe, statements)


class SqliteDatabase(Database):
    dialect: Dialect = "sqlite"

    def __init__(self, writer: aiosqlite.Connection, readers: list[aiosqlite.Connection]) -> None:
        self._writer = writer
        self._write_lock = asyncio.Lock()
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all = [writer, *readers]
        self._has_readers = bool(readers)
        for r in readers:
            self._readers.put_nowait(r)

    @classmethod
    async def open(
        cls, path: str | Path, *, readers: int = 2, synchronous: str = "FULL", cache_kib: int = 8192
    ) -> SqliteDatabase:
        """Open (creating if needed) the database file at ``path``.

        ``synchronous=FULL`` makes a commit survive power loss, which the rule "committed before it is
        acknowledged" needs; NORMAL survives process crashes only and is for benchmarks and tests.
        """
        if synchronous not in ("FULL", "NORMAL", "OFF"):
            raise ValueError(f"bad synchronous mode {synchronous!r}")

        async def _connect() -> aiosqlite.Connection:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so nothing commits behind our back.
            conn = await aiosqlite.connect(str(path), isolation_level=None)
            await conn.execute("PRAGMA busy_timeout = 10000")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute(f"PRAGMA synchronous = {synchronous}")
            await conn.execute("PRAGMA foreign_keys = ON")
            # The page cache, per connection (caches.sqlite_page_cache_kib); a negative size is in KiB.
            await conn.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
            return conn

        async def _connect_reader() -> aiosqlite.Connection:
            conn = await _connect()
            await conn.execute("PRAGMA query_only = ON")  # a write through a reader is a bug: fail loudly
            return conn

        if str(path) == ":memory:":
            readers = 0  # every connection would get its own empty database
        writer = await _connect()
        return cls(writer, [await _connect_reader() for _ in range(readers)])

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Txn]:
        async with self._write_lock:
            # IMMEDIATE takes the write lock at BEGIN, so a transaction never fails half-way to upgrade it.
            # BEGIN goes to the connection's thread with the transaction's first statement (_SqliteTxn).
            txn = _SqliteTxn(self._writer, self.on_statement, begin="BEGIN IMMEDIATE")
            try:
                yield txn
                # The deferred writes and the commit (an fsync under synchronous=FULL), in one trip.
                await txn.flush(then="COMMIT")
            except BaseException:
                txn.discard()
                if self._writer.in_transaction:
                    await self._writer.execute("ROLLBACK")
                raise

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Txn]:
        if not self._has_readers:
            async with self.transaction() as txn:
                yield txn
            return
        conn = await self._readers.get()
        try:
            txn = _SqliteTxn(conn, self.on_statement, begin="BEGIN")
            try:
                yield txn
            finally:
                txn.discard()  # a read-only transaction: at most the BEGIN is left, if nothing was read
                if conn.in_transaction:
                    await conn.execute("COMMIT")
        finally:
            self._readers.put_nowait(conn)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        if not self._has_readers:
            return await super().fetchall(sql, params)
        # One statement is atomic by itself: no BEGIN/COMMIT round trips to the reader's thread.
        conn = await self._readers.get()
        start = time.perf_counter()
        try:
            return list(await conn.execute_fetchall(sql, tuple(params)))  # type: ignore[arg-type]
        finally:
            _count(start, self.on_statement)
            self._readers.put_nowait(conn)

    async def close(self) -> None:
        for conn in self._all:
            await conn.close()

    def connections_in_use(self) -> tuple[int, int] | None:
        readers = len(self._all) - 1
        busy_readers = readers - self._readers.qsize() if self._has_readers else 0
        return busy_readers + (1 if self._write_lock.locked() else 0), len(self._all)


# -- PostgreSQL -------------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\?")


def to_numbered_params(sql: str) -> str:
    """Rewrite ``?`` placeholders to ``$n``, leaving string literals alone."""
    counter = 0

    def repl(m: re.Match[str]) -> str:
        nonlocal counter
        if m.group(0) != "?":
            return m.group(0)
        counter += 1
        return f"${counter}"

    return _PLACEHOLDER.sub(repl, sql)


class UnstorableText(FormatError):
    """A text value holds U+0000, which PostgreSQL text cannot store (nor may any Matrix identifier, event
    type or key contain it). Refused before the query runs, as a typed error the HTTP edges answer with 400,
    instead of asyncpg's CharacterNotInRepertoireError becoming a 500."""


def _refuse_nul(params: Iterable[Any]) -> None:
    for value in params:
        if isinstance(value, str) and "\x00" in value:
            raise UnstorableText("text with a NUL character (U+0000) cannot be stored")


class _PgTxn(Txn):
    def __init__(
        self, conn: asyncpg.Connection, rewrite: dict[str, str], observe: StatementObserver | None = None
    ) -> None:
        self._observe = observe
        self._conn = conn
        self._rewrite = rewrite

    def _sql(self, sql: str) -> str:
        out = self._rewrite.get(sql)
        if out is None:
            out = self._rewrite[sql] = to_numbered_params(sql)
        return out

    async def execute(self, sql: str, params: Params = ()) -> None:
        _refuse_nul(params)
        start = time.perf_counter()
        try:
            await self._conn.execute(self._sql(sql), *params)
        finally:
            _count(start, self._observe)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        rows = [tuple(r) for r in rows]
        for row in rows:
            _refuse_nul(row)
        if rows:
            start = time.perf_counter()
            try:
                await self._conn.executemany(self._sql(sql), rows)
            finally:
                _count(start, self._observe)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        _refuse_nul(params)
        start = time.perf_counter()
        try:
            return [tuple(r) for r in await self._conn.fetch(self._sql(sql), *params)]
        finally:
            _count(start, self._observe)


class PostgresDatabase(Database):
    dialect: Dialect = "postgres"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._rewrite: dict[str, str] = {}

    @classmethod
    async def open(cls, dsn: str, *, schema: str | None = None, max_size: int = 5) -> PostgresDatabase:
        """Connect to ``dsn``; with ``schema``, every connection works in that schema (tests use one each)."""
        import asyncpg  # only PostgreSQL servers need it (see the imports above)

        settings = {"search_path": schema} if schema else {}
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size, server_settings=settings)
        assert pool is not None
        return cls(pool)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Txn]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield _PgTxn(conn, self._rewrite, self.on_statement)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Txn]:
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            yield _PgTxn(conn, self._rewrite, self.on_statement)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        # A single statement is atomic by itself: skip the BEGIN/COMMIT round trips.
        async with self._pool.acquire() as conn:
            return await _PgTxn(conn, self._rewrite, self.on_statement).fetchall(sql, params)

    async def close(self) -> None:
        await self._pool.close()

    def connections_in_use(self) -> tuple[int, int] | None:
        size = self._pool.get_size()
        return size - self._pool.get_idle_size(), size


async def open_database(url: str, **kwargs: Any) -> Database:
    """Open ``sqlite:///path/to.db`` or ``postgresql://user@host:port/dbname`` (as in homeserver.yaml)."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        # SQLAlchemy's convention, as config.py writes it: sqlite:///relative.db, sqlite:////absolute.db
        if not url.startswith("sqlite:///"):
            raise ValueError("an sqlite url is sqlite:///relative/path or sqlite:////absolute/path")
        return await SqliteDatabase.open(url[len("sqlite:///") :], **kwargs)
    if parsed.scheme in ("postgresql", "postgres"):
        kwargs.pop("cache_kib", None)  # SQLite's page cache; PostgreSQL has its own shared buffers
        return await PostgresDatabase.open(url, **kwargs)
    raise ValueError(f"unsupported database url scheme {parsed.scheme!r}")
