"""Bundled aggregations (CS "Aggregations of child events"): ``unsigned.m.relations`` on the events a
response serves, computed for the whole page at once (a handful of queries per room and page, whatever
the page's size), never one query per event.

- ``m.thread`` (CS "Server-side aggregation of m.thread relationships"): ``latest_event`` (serialized like
  the event itself, with its own aggregations), ``count`` and ``current_user_participated``.
- ``m.reference`` (CS "Server-side aggregation of m.reference"): ``chunk`` of ``{"event_id"}``.
- ``m.replace`` (CS "Server-side aggregation of m.replace relationships", changed in v1.7): the most recent
  valid replacement event by ``origin_server_ts`` then event id; not for a redacted original. The original's
  content is served unchanged (since v1.7 servers no longer apply edits).

State events get none ("State events do not currently receive bundled aggregations"); children sent by
users the reader ignores are left out; redacted children are not held as relations at all.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol

from ..protocol.events import Pdu
from ..protocol.relations import REFERENCE, REPLACE, THREAD, is_valid_replacement
from ..storage.protocols.composite import HasAccountData, HasEvents, HasRelations
from ..storage.sql.relations import ChildRow
from .event_format import format_client_event

IGNORED_USERS = "m.ignored_user_list"
Relations = dict[str, dict[str, Any]]  # event id -> its m.relations


class BundledStorage(HasEvents, HasAccountData, HasRelations, Protocol):
    """What client_api/bundled.py asks of storage."""


def _fields(pdu: Pdu) -> dict[str, Any]:
    out: dict[str, Any] = {"type": pdu.type, "sender": pdu.sender, "content": pdu.content}
    if pdu.state_key is not None:
        out["state_key"] = pdu.state_key
    return out


def _redacted(pdu: Pdu) -> bool:
    return "redacted_because" in pdu.unsigned


class BundledAggregations:
    def __init__(self, storage: BundledStorage, visibility: Any) -> None:
        self._storage = storage
        self._visibility = visibility  # rooms.visibility.HistoryVisibilityFilter

    async def ignored_users(self, user_id: str) -> frozenset[str]:
        """The users ``user_id`` ignores (CS "Ignoring Users"): their children are not aggregated."""
        content = await self._storage.account_data.get_global(user_id, IGNORED_USERS)
        users = content.get("ignored_users") if isinstance(content, dict) else None
        if not isinstance(users, dict):
            return frozenset()
        # A key with U+0000 names no user, and PostgreSQL could not take it as a query parameter.
        return frozenset(u for u in users if isinstance(u, str) and "\x00" not in u)

    async def serialize(
        self,
        room_id: str,
        user_id: str,
        pdus: Sequence[Pdu],
        now: int,
        *,
        include_room_id: bool = True,
        ignored: Collection[str] | None = None,
    ) -> list[dict[str, Any]]:
        """``pdus`` (all of ``room_id``) as client events, each with its bundled aggregations."""
        relations = await self.relations(
            room_id, user_id, pdus, now, include_room_id=include_room_id, ignored=ignored
        )
        return [
            format_client_event(p, now, include_room_id=include_room_id, relations=relations.get(p.event_id))
            for p in pdus
        ]

    async def relations(
        self,
        room_id: str,
        user_id: str,
        pdus: Sequence[Pdu],
        now: int,
        *,
        include_room_id: bool = True,
        ignored: Collection[str] | None = None,
        nested: bool = False,
    ) -> Relations:
        """Per event of ``pdus`` that has any, its ``m.relations``."""
        parents: dict[str, Pdu] = {p.event_id: p for p in pdus if p.state_key is None}
        if not parents:
            return {}
        store = self._storage.relations
        with_children = await store.has_aggregated_children(room_id, list(parents))
        if not with_children:
            return {}
        if ignored is None:
            ignored = await self.ignored_users(user_id)
        ids: list[str] = [e for e in parents if e in with_children]
        out: Relations = {}
        rows: list[ChildRow] = await store.edits_and_references(room_id, ids, ignored)
        for row in rows:
            if row.rel_type == REFERENCE:
                chunk = out.setdefault(row.parent_id, {}).setdefault(REFERENCE, {"chunk": []})["chunk"]
                chunk.append({"event_id": row.event_id})
        await self._add_edits(parents, [r for r in rows if r.rel_type == REPLACE], now, include_room_id, out)
        if not nested:
            await self._add_threads(room_id, user_id, parents, ids, now, include_room_id, ignored, out)
        return out

    async def _add_edits(
        self, parents: dict[str, Pdu], rows: list[ChildRow], now: int, include_room_id: bool, out: Relations
    ) -> None:
        # Cheap checks from the rows first (same sender and type, original not redacted), then the content
        # (m.new_content) of the candidates, newest first.
        candidates: dict[str, list[ChildRow]] = {}
        for row in rows:
            original = parents[row.parent_id]
            if _redacted(original) or original.sender != row.sender or original.type != row.type:
                continue
            candidates.setdefault(row.parent_id, []).append(row)
        if not candidates:
            return
        loaded = await self._storage.events.get_events([r.event_id for rs in candidates.values() for r in rs])
        for parent_id, edits in candidates.items():
            original = parents[parent_id]
            for row in sorted(edits, key=lambda r: (r.origin_server_ts, r.event_id), reverse=True):
                edit = loaded.get(row.event_id)
                if edit is not None and is_valid_replacement(_fields(original), _fields(edit)):
                    out.setdefault(parent_id, {})[REPLACE] = format_client_event(
                        edit, now, include_room_id=include_room_id
                    )
                    break

    async def _add_threads(
        self,
        room_id: str,
        user_id: str,
        parents: dict[str, Pdu],
        ids: list[str],
        now: int,
        include_room_id: bool,
        ignored: Collection[str],
        out: Relations,
    ) -> None:
        summaries = await self._storage.relations.thread_summaries(room_id, ids, user_id, ignored)
        if not summaries:
            return
        loaded = await self._storage.events.get_events([s.latest_event_id for s in summaries.values()])
        # The latest event is shown only if the reader may see it (CS "Room History Visibility").
        latest = await self._visibility.filter_for_user(room_id, user_id, list(loaded.values()))
        latest_by_id = {p.event_id: p for p in latest}
        # The latest events' own aggregations (their edits, references): one more batch, not nested further
        # (an m.thread child cannot be a thread root itself, CS "Threading").
        inner = await self.relations(
            room_id, user_id, latest, now, include_room_id=include_room_id, ignored=ignored, nested=True
        )
        for root_id, summary in summaries.items():
            pdu = latest_by_id.get(summary.latest_event_id)
            if pdu is None:
                continue
            out.setdefault(root_id, {})[THREAD] = {
                "latest_event": format_client_event(
                    pdu, now, include_room_id=include_room_id, relations=inner.get(pdu.event_id)
                ),
                "count": summary.count,
                "current_user_participated": summary.user_participated or parents[root_id].sender == user_id,
            }
