"""Answering other servers' reads: events, state at an event, auth chains, backfill, missing events, and
the profile and directory queries (S2S "Retrieving events", "Backfilling and retrieving missing events",
"Retrieving event authorisation information", "Querying for information").

Only a server with a user joined to the room now may read it (the spec's 403 of /state_ids: "The requesting
host is not in the room"; Synapse asks the same of every room read), and never when the room's
``m.room.server_acl`` denies it (S2S "Server Access Control Lists": 403 ``M_FORBIDDEN``). A server whose
users left, were banned, or are only invited reads nothing: not the state, not an event, not even one of the
time it was joined. Rejected events are never served; soft-failed ones are (S2S "Soft failure").

Events of /event, /backfill and /get_missing_events that history visibility hides from every user of the
asking server, judged at each event's state, are served redacted (``rooms.visibility``); state and auth
chains are served whole, as the asking server needs them to authorise events. A server that has just joined
is joined now, so it reads the state and the events around its own join that the join-gap check asks for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from ..clock import now_ms
from ..federation.errors import Forbidden, InvalidParam, NotFound
from ..protocol.errors import InvalidIdentifier
from ..protocol.events import Pdu
from ..protocol.identifiers import parse_room_alias, parse_user_id, server_of
from ..storage.interfaces import UnknownEvent
from ..storage.protocols.composite import HasAliases, HasEvents, HasPartialState, HasRooms, HasState, HasUsers
from .incoming_acl import ACL_KEY, server_allowed_by_acl
from .timestamps import TimestampsStorage, closest_local_event
from .visibility import HistoryVisibilityFilter

MAX_BACKFILL = 100
MAX_MISSING_EVENTS = 20


class IncomingReadsStorage(
    TimestampsStorage, HasRooms, HasEvents, HasState, HasUsers, HasAliases, HasPartialState, Protocol
):
    """What rooms/incoming_reads.py asks of storage."""


class FederationReads:
    def __init__(
        self,
        storage: IncomingReadsStorage,
        server_name: str,
        visibility: HistoryVisibilityFilter | None = None,
    ) -> None:
        self._storage = storage
        self.server_name = server_name
        self._visibility = visibility or HistoryVisibilityFilter(storage)

    # -- access ----------------------------------------------------------------------------------

    async def check_room_access(self, origin: str, room_id: str) -> None:
        """Raise unless ``origin`` may read ``room_id``: ACL first, then a joined user of its own (the
        room's current state; a left, banned, invited or knocking user does not count)."""
        if await self._storage.rooms.get_room_version(room_id) is None:
            raise NotFound(f"unknown room {room_id}")
        acl = await self._storage.state.get_current_state_event(room_id, *ACL_KEY)
        if not server_allowed_by_acl(origin, acl.content if acl is not None else None):
            raise Forbidden(f"server {origin} is denied by the room's server ACL")
        if origin not in await self._storage.state.get_joined_servers(room_id):
            raise Forbidden(f"server {origin} has no user joined to room {room_id}")

    async def _event_in_room(self, origin: str, room_id: str, event_id: str) -> Pdu:
        await self.check_room_access(origin, room_id)
        pdu: Pdu | None = await self._storage.events.get_event(event_id)
        if pdu is None or pdu.room_id != room_id:
            raise NotFound(f"unknown event {event_id} in {room_id}")
        return pdu

    def _txn(self, pdus: Iterable[Pdu]) -> dict[str, Any]:
        return {
            "origin": self.server_name,
            "origin_server_ts": now_ms(),
            "pdus": [p.to_federation() for p in pdus],
        }

    # -- events and state ------------------------------------------------------------------------

    async def get_event(self, origin: str, event_id: str) -> dict[str, Any]:
        """``GET /event``: a transaction holding the one event."""
        pdu = await self._storage.events.get_event(event_id)
        if pdu is None:
            raise NotFound(f"unknown event {event_id}")
        await self.check_room_access(origin, pdu.room_id)
        return self._txn(await self._visibility.filter_for_server(pdu.room_id, origin, [pdu]))

    async def state_ids(self, origin: str, room_id: str, event_id: str) -> dict[str, Any]:
        """``GET /state_ids``: the state before ``event_id`` and its auth chain, as ids."""
        pdu = await self._event_in_room(origin, room_id, event_id)
        await self._not_partial(room_id)
        try:
            state = await self._storage.state.get_state_ids_before(event_id)
        except UnknownEvent as e:
            raise NotFound(f"no state is known at {event_id}") from e
        pdu_ids = sorted(set(state.values()))
        chain = await self._auth_chain(pdu, pdu_ids)
        return {"pdu_ids": pdu_ids, "auth_chain_ids": sorted(chain)}

    async def _not_partial(self, room_id: str) -> None:
        # A room joined with partial state (MSC3706) has no full state to give yet: another server must.
        if await self._storage.partial_state.is_partial(room_id):
            raise NotFound(f"the state of {room_id} is not fully known here yet (partial state)")

    async def state_text(self, origin: str, room_id: str, event_id: str) -> str:
        """``GET /state``: as ``state_ids`` with the events themselves, as the answer's JSON text: the
        events' stored text is joined, not parsed and encoded again (a 10,000-member room's answer took
        0.6 s of the event loop that way, most of it parsing)."""
        ids = await self.state_ids(origin, room_id, event_id)
        texts = await self._storage.events.get_event_texts(ids["pdu_ids"] + ids["auth_chain_ids"])
        pdus = ",".join(texts[e] for e in ids["pdu_ids"] if e in texts)
        chain = ",".join(texts[e] for e in ids["auth_chain_ids"] if e in texts)
        return f'{{"pdus":[{pdus}],"auth_chain":[{chain}]}}'

    async def event_auth(self, origin: str, room_id: str, event_id: str) -> dict[str, Any]:
        """``GET /event_auth``: the full auth chain of the event."""
        pdu = await self._event_in_room(origin, room_id, event_id)
        chain = sorted(await self._auth_chain(pdu, [event_id]))
        events = await self._storage.events.get_events(chain)
        return {"auth_chain": [events[e].to_federation() for e in chain if e in events]}

    async def _auth_chain(self, pdu: Pdu, event_ids: list[str]) -> set[str]:
        """The auth chain of ``event_ids`` (events of ``pdu``'s room).

        Room version 12 forbids citing the m.room.create event in ``auth_events``: "the room_id (being
        the m.room.create event's ID) implies this instead" (v12 "Authorization rules", note before rule
        1). The create event is thus an implicit auth event of every other event, and we include it as
        Synapse does; a peer that walks our chain to authorise events needs it (and /event_auth of a
        message would otherwise not reach the create event at all)."""
        chain: set[str] = set(await self._storage.events.get_auth_chain_ids(event_ids))
        rv = pdu.room_version
        if rv.room_id_from_create_event:
            create_id = "$" + pdu.room_id[1:]
            if any(e != create_id for e in event_ids):
                chain.add(create_id)
        return chain

    async def backfill(
        self, origin: str, room_id: str, from_ids: Sequence[str], limit: int
    ) -> dict[str, Any]:
        """``GET /backfill``: ``from_ids`` and the events before them, breadth-first, newest first."""
        await self.check_room_access(origin, room_id)
        limit = max(0, min(limit, MAX_BACKFILL))
        found = await self._walk(room_id, list(from_ids), limit, include_start=True)
        found.sort(key=lambda p: p.depth, reverse=True)
        return self._txn(await self._visibility.filter_for_server(room_id, origin, found))

    async def missing_events(
        self,
        origin: str,
        room_id: str,
        earliest: Sequence[str],
        latest: Sequence[str],
        limit: int,
        min_depth: int,
    ) -> dict[str, Any]:
        """``POST /get_missing_events``: walk prev_events from ``latest`` (breadth-first), not past
        ``earliest``, not below ``min_depth``; the events found, oldest first."""
        await self.check_room_access(origin, room_id)
        limit = max(0, min(limit, MAX_MISSING_EVENTS))
        found = await self._walk(room_id, list(latest), limit, stop=set(earliest), min_depth=min_depth)
        found.sort(key=lambda p: p.depth)
        found = await self._visibility.filter_for_server(room_id, origin, found)
        return {"events": [p.to_federation() for p in found]}

    async def _walk(
        self,
        room_id: str,
        start: list[str],
        limit: int,
        *,
        include_start: bool = False,
        stop: set[str] | frozenset[str] = frozenset(),
        min_depth: int = 0,
    ) -> list[Pdu]:
        seen: set[str] = set(start) | set(stop)
        found: list[Pdu] = []
        starting = await self._storage.events.get_events(start)
        frontier: list[str] = []
        for event_id in start:
            pdu = starting.get(event_id)
            if pdu is None or pdu.room_id != room_id:
                continue
            if include_start and len(found) < limit:
                found.append(pdu)
            frontier.extend(pdu.prev_event_ids)
        while frontier and len(found) < limit:
            level = [e for e in dict.fromkeys(frontier) if e not in seen]
            seen.update(level)
            events = await self._storage.events.get_events(level)
            frontier = []
            for event_id in level:
                pdu = events.get(event_id)
                if pdu is None or pdu.room_id != room_id or pdu.depth < min_depth:
                    continue
                found.append(pdu)
                if len(found) >= limit:
                    break
                frontier.extend(pdu.prev_event_ids)
        return found

    async def timestamp_to_event(self, origin: str, room_id: str, ts: int, direction: str) -> dict[str, Any]:
        """``GET /timestamp_to_event``: the first event at or after ``ts`` ('f'), or at or before it ('b')
        (the walk is rooms.timestamps', shared with the client endpoint)."""
        await self.check_room_access(origin, room_id)
        if direction not in ("f", "b"):
            raise InvalidParam("dir must be 'f' or 'b'")
        pdu = await closest_local_event(self._storage, room_id, ts, direction)
        if pdu is None:
            raise NotFound(f"no event found {'after' if direction == 'f' else 'before'} {ts}")
        return {"event_id": pdu.event_id, "origin_server_ts": pdu.origin_server_ts}

    # -- queries ---------------------------------------------------------------------------------

    async def query_profile(self, user_id: str, field: str | None) -> dict[str, Any]:
        try:
            parse_user_id(user_id)
        except InvalidIdentifier as e:
            raise InvalidParam(f"invalid user id {user_id!r}") from e
        if field not in (None, "displayname", "avatar_url"):
            raise InvalidParam(f"unknown profile field {field!r}")
        if _server(user_id) != self.server_name:
            raise NotFound(f"{user_id} is not a user of this server")
        profile = await self._storage.users.get_profile(user_id)
        if profile is None:
            raise NotFound(f"unknown user {user_id}")
        out = {"displayname": profile.displayname, "avatar_url": profile.avatar_url}
        out = {k: v for k, v in out.items() if v is not None and field in (None, k)}
        return out

    async def query_directory(self, alias: str) -> dict[str, Any]:
        try:
            parse_room_alias(alias)
        except InvalidIdentifier as e:
            raise InvalidParam(f"invalid room alias {alias!r}") from e
        record = await self._storage.aliases.get_alias(alias)
        if record is None:
            raise NotFound(f"room alias {alias} is unknown")
        servers = await self._storage.state.get_joined_servers(record.room_id)
        # Our server first: it is the one that certainly knows the room.
        ordered = [self.server_name, *sorted(s for s in servers if s != self.server_name)]
        return {"room_id": record.room_id, "servers": ordered}


def _server(user_id: str) -> str | None:
    try:
        return server_of(user_id)
    except InvalidIdentifier:
        return None
