"""Removing everything we hold about a room (the admin API's room deletion with ``purge``).

Which tables hold a room's rows is read from the schema itself rather than listed here, so that a table
added later by another part of the server is purged too: every table with a ``room_id`` column, every
table keyed by ``event_id`` (edges, redactions, relations...) for the room's events, and the state group
entries of the room's state groups; then the events and the room itself. Tables that record decisions
*about* the room outlive it: ``blocked_rooms`` (a blocked room stays blocked) and ``content_reports``.

All of it in one transaction; then the in-memory caches that could still answer for the room (current
state, room version, the room's events) are emptied of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .engine import Database, Txn

if TYPE_CHECKING:
    from ..protocols.composite import HasEvents, HasRooms, HasState

    class PurgeStorage(HasRooms, HasEvents, HasState, Protocol):
        """What sql/purge.py asks of storage."""


# Kept: decisions about the room, not the room's data.
KEPT_TABLES = frozenset({"blocked_rooms", "content_reports", "schema_migrations"})
# Deleted last, in this order (events reference rooms).
LAST_TABLES = ("state_group_entries", "state_groups", "events", "rooms")


async def _columns(txn: Txn, dialect: str) -> dict[str, set[str]]:
    if dialect == "sqlite":
        tables = [r[0] for r in await txn.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")]
        out: dict[str, set[str]] = {}
        for table in tables:
            if table.startswith("sqlite_"):
                continue
            out[table] = {r[1] for r in await txn.fetchall(f'PRAGMA table_info("{table}")')}
        return out
    rows = await txn.fetchall(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema()"
        " AND table_name IN (SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE')"
    )
    result: dict[str, set[str]] = {}
    for table, column in rows:
        result.setdefault(table, set()).add(column)
    return result


async def purge_room(db: Database, storage: PurgeStorage, room_id: str) -> list[str]:
    """Delete the room's rows everywhere; returns the ids of its events that were deleted (with workers,
    the other processes are told to forget them: ranvier.workers.purge_forwarding)."""
    async with db.transaction() as txn:
        columns = await _columns(txn, db.dialect)
        event_ids = [
            r[0] for r in await txn.fetchall("SELECT event_id FROM events WHERE room_id = ?", (room_id,))
        ]
        room_events = "SELECT event_id FROM events WHERE room_id = ?"
        for table, cols in sorted(columns.items()):
            if table in KEPT_TABLES or table in LAST_TABLES:
                continue
            if "room_id" in cols:
                await txn.execute(f'DELETE FROM "{table}" WHERE room_id = ?', (room_id,))
            elif "event_id" in cols:
                await txn.execute(f'DELETE FROM "{table}" WHERE event_id IN ({room_events})', (room_id,))
        if "state_group_entries" in columns:
            await txn.execute(
                "DELETE FROM state_group_entries WHERE group_id IN"
                " (SELECT group_id FROM state_groups WHERE room_id = ?)",
                (room_id,),
            )
        for table in ("state_groups", "events", "rooms"):
            await txn.execute(f"DELETE FROM {table} WHERE room_id = ?", (room_id,))
    _forget_cached(storage, room_id, event_ids)
    return event_ids


def _forget_cached(storage: PurgeStorage, room_id: str, event_ids: list[str]) -> None:
    """The caches of storage.sql (events by id, rooms' current state, room versions) still hold the room."""
    event_cache = getattr(storage.events, "_cache", None)
    if event_cache is not None:
        for event_id in event_ids:
            event_cache.invalidate(event_id)
    current = getattr(storage.state, "_current", None)
    if current is not None:
        current.invalidate(room_id)
    versions = getattr(storage.rooms, "_versions", None)
    if versions is not None:
        versions.pop(room_id, None)
