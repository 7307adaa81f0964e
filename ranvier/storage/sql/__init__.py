"""The SQL implementation of the room/event storage (SQLite and PostgreSQL).

db = await open_database(config.database.url)
await migrate(db)
storage = await RoomStorage.open(db)
await storage.events.persist_events(room_id, batch)
"""

from __future__ import annotations

from dataclasses import dataclass

from .caches import LruCache
from .engine import Database, open_database
from .events import EventCache, SqlEventStore
from .migrate import SchemaTooNew, migrate
from .persist import EventPersister
from .rooms import SqlRoomStore
from .state import SqlStateStore
from .state_groups import StateDict, StateGroups
from .stream import SqlStreamStore, StreamPositions

__all__ = ["Database", "RoomStorage", "SchemaTooNew", "migrate", "open_database"]


class _Events(SqlEventStore):
    """Event reads plus ``persist_events``, as the EventStore interface has them together."""

    def __init__(self, db: Database, cache: EventCache, persister: EventPersister) -> None:
        super().__init__(db, cache)
        self.persist_events = persister.persist_events
        self.rewrite_states = persister.rewrite_states
        self.persister = persister  # for ranvier.workers (positions shared between processes)


@dataclass
class RoomStorage:
    """The room/event stores over one database, sharing their caches and the stream position."""

    db: Database
    rooms: SqlRoomStore
    events: _Events
    state: SqlStateStore
    stream: SqlStreamStore
    state_groups: StateGroups

    @classmethod
    async def open(
        cls, db: Database, *, cached_events: int = 10_000, cached_state_entries: int = 1_000_000
    ) -> RoomStorage:
        """Wire the stores over a migrated database and load the counters kept in memory."""
        groups = StateGroups(cached_state_entries)
        positions = StreamPositions()
        async with db.snapshot() as txn:
            await groups.load_next_id(txn)
            await positions.load(txn)
        event_cache: EventCache = LruCache(cached_events)
        current: LruCache[str, StateDict] = LruCache(cached_state_entries, len)
        persister = EventPersister(db, groups, positions, event_cache, current)
        events = _Events(db, event_cache, persister)
        return cls(
            db=db,
            rooms=SqlRoomStore(db),
            events=events,
            state=SqlStateStore(db, groups, events, current),
            stream=SqlStreamStore(db, events, positions),
            state_groups=groups,
        )
