"""Finding things: room aliases, the public room directory, the user directory and full-text search of
room events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from ranvier.search.terms import SearchQuery

from ..sql.aliases import AliasRecord
from ..sql.directory import Visibility
from ..sql.search import Order, SearchHit, SearchScope
from ..sql.user_directory import DirectoryEntry

__all__ = [
    "AliasRecord",
    "AliasStorage",
    "DirectoryEntry",
    "DirectoryStorage",
    "Order",
    "SearchHit",
    "SearchScope",
    "SearchStorage",
    "UserDirectoryStorage",
    "Visibility",
]


class AliasStorage(Protocol):
    async def create_alias(self, alias: str, room_id: str, creator: str) -> bool: ...
    async def get_alias(self, alias: str) -> AliasRecord | None: ...
    async def aliases_for_room(self, room_id: str) -> list[str]: ...
    async def delete_alias(self, alias: str) -> bool: ...


class DirectoryStorage(Protocol):
    """The public room directory's visibility flags."""

    async def set_visibility(self, room_id: str, visibility: Visibility) -> None: ...
    async def get_visibility(self, room_id: str) -> Visibility: ...
    async def public_room_ids(self) -> list[str]: ...


class UserDirectoryStorage(Protocol):
    async def search(
        self, searcher: str, words: Sequence[str], limit: int, *, all_users: bool
    ) -> list[DirectoryEntry]: ...


class SearchStorage(Protocol):
    """Full-text search of the room events a user may see."""

    async def search(
        self,
        user_id: str,
        query: SearchQuery,
        scope: SearchScope,
        order: Order,
        limit: int,
        *,
        offset: int = 0,
        before_stream: int | None = None,
    ) -> list[SearchHit]: ...
    async def count(self, user_id: str, query: SearchQuery, scope: SearchScope) -> int: ...


if TYPE_CHECKING:
    from ..sql.aliases import AliasStore
    from ..sql.directory import DirectoryStore
    from ..sql.engine import Database
    from ..sql.search import SearchStore
    from ..sql.user_directory import UserDirectoryStore

    def _sql_classes_satisfy_the_protocols(db: Database) -> None:
        # Never called: mypy checks these assignments.
        _a: AliasStorage = AliasStore(db)
        _b: DirectoryStorage = DirectoryStore(db)
        _c: UserDirectoryStorage = UserDirectoryStore(db)
        _d: SearchStorage = SearchStore(db)
