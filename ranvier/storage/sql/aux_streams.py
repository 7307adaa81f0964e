"""Shared plumbing for the auxiliary table families: stream counters and small helpers.

The counters live in ``aux_stream_positions`` (migration 050). Bumping a counter inside the writing
transaction makes positions unique and commit-ordered on both engines: SQLite has a single writer, and
on PostgreSQL the UPDATE takes a row lock that the next writer waits on until we commit, so a reader
never sees position N+1 committed while N is still in flight.
"""

from __future__ import annotations

import json
from typing import Any

from .engine import Database, Txn


async def next_stream_pos(txn: Txn, stream: str, count: int = 1) -> int:
    """Allocate the next ``count`` positions of ``stream`` and return the last of them; call inside the
    transaction that writes the rows."""
    if count < 1:
        raise ValueError("count must be >= 1")
    pos = await txn.fetchval(
        "UPDATE aux_stream_positions SET pos = pos + ? WHERE name = ? RETURNING pos", (count, stream)
    )
    if pos is None:
        raise LookupError(f"unknown aux stream {stream!r}")
    return int(pos)


async def current_stream_pos(db: Database, stream: str) -> int:
    pos = await db.fetchval("SELECT pos FROM aux_stream_positions WHERE name = ?", (stream,))
    return int(pos or 0)


async def write(db: Database, sql: str, params: tuple[Any, ...]) -> Any:
    """One write statement in its own transaction; returns the first column of the first row, if any
    (for ``RETURNING``). Writes must not go through ``db.fetch*``, which use read-only snapshots."""
    async with db.transaction() as txn:
        return await txn.fetchval(sql, params)


def dump_json(value: Any) -> str:
    # Compact; the stored text is only read back by us, so canonical form is not needed.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def load_json(text: str) -> Any:
    return json.loads(text)
