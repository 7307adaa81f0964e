"""Persistence behind narrow interfaces (see interfaces.py), on SQLite (default) or PostgreSQL.

``open_storage(url)`` opens the database, applies migrations (refusing a schema newer than the code), and
returns one object whose attributes are the table families: ``rooms``, ``events``, ``state``, ``stream``
(room/event storage) and the auxiliary ones (``users``, ``devices``, ``aliases``, ``outbox``, ...).
"""

from __future__ import annotations

from typing import Any

from .aux import attach_aux
from .sql import RoomStorage, migrate, open_database


async def open_storage(url: str, *, sqlite_page_cache_kib: int | None = None, **kwargs: Any) -> Any:
    """``kwargs`` are RoomStorage.open's cache bounds; ``sqlite_page_cache_kib`` is per SQLite connection."""
    db = await open_database(
        url, **({} if sqlite_page_cache_kib is None else {"cache_kib": sqlite_page_cache_kib})
    )
    try:
        await migrate(db)
        storage = await RoomStorage.open(db, **kwargs)
    except BaseException:
        await db.close()
        raise
    attach_aux(storage)
    return storage
