"""Persistence behind narrow interfaces (see interfaces.py and protocols/), on SQLite (default) or
PostgreSQL.

``open_storage(url)`` opens the database, applies migrations (refusing a schema newer than the code), and
returns one object whose attributes are the table families: ``rooms``, ``events``, ``state``, ``stream``
(room/event storage) and the others (``users``, ``devices``, ``aliases``, ``outbox``, ...); its shape is
``protocols.composite.Storage``.
"""

from __future__ import annotations

from .sql import migrate, open_database
from .sql.storage import SqlStorage


async def open_storage(
    url: str,
    *,
    sqlite_page_cache_kib: int | None = None,
    cached_events: int = 10_000,
    cached_state_entries: int = 1_000_000,
) -> SqlStorage:
    """``cached_*`` bound RoomStorage's caches; ``sqlite_page_cache_kib`` is per SQLite connection."""
    db = await open_database(
        url, **({} if sqlite_page_cache_kib is None else {"cache_kib": sqlite_page_cache_kib})
    )
    try:
        await migrate(db)
        return await SqlStorage.open(
            db, cached_events=cached_events, cached_state_entries=cached_state_entries
        )
    except BaseException:
        await db.close()
        raise
