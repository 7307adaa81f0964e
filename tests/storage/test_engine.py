"""The engine layer and the migration runner, on both databases."""

from __future__ import annotations

import asyncio

import pytest

from ranvier.storage.sql.engine import Database, in_list, open_database, to_numbered_params
from ranvier.storage.sql.migrate import Migration, SchemaTooNew, load_migrations, migrate, split_statements


def test_placeholders_are_numbered_outside_string_literals() -> None:
    assert to_numbered_params("SELECT ? , '?', 'it''s ?' , ?") == "SELECT $1 , '?', 'it''s ?' , $2"
    assert in_list(3) == "?, ?, ?"


def test_split_statements_skips_comments_and_blank_lines() -> None:
    sql = "-- heading\n\nCREATE TABLE a (x INT);\n-- between\nCREATE TABLE b (\n  y INT\n);\n"
    assert split_statements(sql) == ["CREATE TABLE a (x INT)", "CREATE TABLE b (\n  y INT\n)"]


async def test_transaction_commits_and_rolls_back(raw_db: Database) -> None:
    async with raw_db.transaction() as txn:
        await txn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT NOT NULL)")
        await txn.executemany("INSERT INTO t (k, v) VALUES (?, ?)", [("a", 1), ("b", 2)])
    with pytest.raises(RuntimeError):
        async with raw_db.transaction() as txn:
            await txn.execute("INSERT INTO t (k, v) VALUES (?, ?)", ("c", 3))
            assert await txn.fetchval("SELECT COUNT(*) FROM t") == 3  # the transaction sees its own write
            raise RuntimeError("abort")
    assert await raw_db.fetchall("SELECT k, v FROM t ORDER BY k") == [("a", 1), ("b", 2)]
    assert await raw_db.fetchone("SELECT v FROM t WHERE k = ?", ("zzz",)) is None
    assert await raw_db.fetchval(f"SELECT SUM(v) FROM t WHERE k IN ({in_list(2)})", ("a", "b")) == 3


async def test_reads_do_not_see_an_uncommitted_write(raw_db: Database) -> None:
    async with raw_db.transaction() as txn:
        await txn.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    started, release = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with raw_db.transaction() as txn:
            await txn.execute("INSERT INTO t (k) VALUES (?)", ("x",))
            started.set()
            await release.wait()

    task = asyncio.create_task(writer())
    await started.wait()
    assert await raw_db.fetchall("SELECT k FROM t") == []
    release.set()
    await task
    assert await raw_db.fetchall("SELECT k FROM t") == [("x",)]


async def test_migrate_is_idempotent_and_creates_the_core_tables(raw_db: Database) -> None:
    version = await migrate(raw_db)
    assert version == max(m.version for m in load_migrations(raw_db.dialect))
    assert await migrate(raw_db) == version
    assert await raw_db.fetchval("SELECT COUNT(*) FROM events") == 0
    versions = await raw_db.fetchall("SELECT version FROM schema_migrations ORDER BY version")
    assert [v for (v,) in versions] == sorted({m.version for m in load_migrations(raw_db.dialect)})


async def test_migrate_applies_only_new_files_in_order(raw_db: Database) -> None:
    first = [Migration(1, "001_a.sql", "CREATE TABLE a (x INTEGER);")]
    assert await migrate(raw_db, first) == 1
    second = [
        *first,
        Migration(3, "003_c.sql", "INSERT INTO a (x) VALUES (3);"),
        Migration(2, "002_b.sql", "INSERT INTO a (x) VALUES (2);\nINSERT INTO a (x) VALUES (22);"),
    ]
    assert await migrate(raw_db, sorted(second, key=lambda m: m.version)) == 3
    assert await raw_db.fetchall("SELECT x FROM a ORDER BY x") == [(2,), (3,), (22,)]


async def test_migrate_refuses_a_newer_schema(raw_db: Database) -> None:
    await migrate(raw_db)
    newest = max(m.version for m in load_migrations(raw_db.dialect))
    async with raw_db.transaction() as txn:
        await txn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (newest + 1, "future")
        )
    with pytest.raises(SchemaTooNew) as info:
        await migrate(raw_db)
    assert info.value.db_version == newest + 1


async def test_a_failing_migration_leaves_nothing_behind(raw_db: Database) -> None:
    broken = [Migration(1, "001_a.sql", "CREATE TABLE a (x INTEGER);\nTHIS IS NOT SQL;")]
    with pytest.raises(Exception):  # noqa: B017 - each engine raises its own error type
        await migrate(raw_db, broken)
    assert await migrate(raw_db, [Migration(1, "001_a.sql", "CREATE TABLE a (x INTEGER);")]) == 1


async def test_open_database_understands_sqlite_urls(tmp_path: object) -> None:
    db = await open_database(f"sqlite:///{tmp_path}/x.db")  # tmp_path is absolute: sqlite:////...
    try:
        assert db.dialect == "sqlite"
        await migrate(db)
    finally:
        await db.close()
    with pytest.raises(ValueError):
        await open_database("mysql://x")
