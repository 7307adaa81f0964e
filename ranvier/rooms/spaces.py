"""Spaces: the hierarchy of a space (CS "GET /hierarchy", S2S "GET /hierarchy") and room summaries
(CS "GET /room_summary", MSC3266).

The client walk is depth first over ``m.space.child`` events (only those with a ``via``; with
``suggested_only``, only suggested children), in the spec's order of children. A room this server is in is
summarised from its state; any other room is asked of the servers its parent's child event names (``via``),
with S2S ``GET /hierarchy``, and the answer is kept for a minute (CS "Spaces", server behaviour: "should be
cached for a period of time"). The remote answer also summarises the room's children, which the walk uses
for those that are not spaces themselves (a space's children must be asked of it again). Pages of a walk
are sessions kept in memory for five minutes: ``from`` names one, and must come with the same
``max_depth`` and ``suggested_only`` (CS "GET /hierarchy").

Every room shown is one the user may see (``rooms.room_summary``): the first room of the walk answers 403
when it is not, its descendants are left out.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ..federation.client import FederationClient, FederationError
from ..federation.errors import FederationRequestError
from ..protocol.identifiers import server_of
from ..storage.protocols.composite import HasEvents, HasRooms, HasState
from .room_summary import (
    SPACE_CHILD,
    SPACE_ROOM_TYPE,
    LocalRoom,
    accessible_to_user,
    allowed_room_ids,
    child_sort_key,
    open_to_anyone,
    valid_via,
    via_servers,
)

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
MAX_DEPTH = 50
SESSION_SECONDS = 300.0
MAX_SESSIONS = 1000
REMOTE_CACHE_SECONDS = 60.0
MAX_REMOTE_CACHE = 1000
REMOTE_TIMEOUT = 15.0


class SpacesStorage(HasRooms, HasEvents, HasState, Protocol):
    """What rooms/spaces.py asks of storage."""


class SpacesError(Exception):
    """A client request the spaces code refuses: status and errcode for the HTTP edge."""

    def __init__(self, status: int, errcode: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode
        self.message = message


@dataclasses.dataclass
class _Entry:
    room_id: str
    via: list[str]
    depth: int
    # A remote parent's summary of this room (S2S /hierarchy ``children``), used unless it is a space.
    remote_summary: dict[str, Any] | None = None


@dataclasses.dataclass
class _Session:
    user_id: str
    room_id: str
    suggested_only: bool
    max_depth: int
    queue: list[_Entry]
    processed: set[str]
    expires: float


@dataclasses.dataclass
class _RemoteAnswer:
    room: dict[str, Any]
    children: dict[str, dict[str, Any]]
    inaccessible: set[str]


class SpaceHierarchy:
    def __init__(
        self,
        storage: SpacesStorage,
        server_name: str,
        client: FederationClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._storage = storage
        self.server_name = server_name
        self._client = client
        self._clock = clock
        self._sessions: dict[str, _Session] = {}
        self._remote_cache: dict[tuple[str, bool], tuple[float, _RemoteAnswer]] = {}

    # -- rooms we are in ----------------------------------------------------------------------------

    async def local_room(self, room_id: str) -> LocalRoom | None:
        """The room with its current state (member events left out), if a local user is joined to it."""
        if await self._storage.rooms.get_room_version(room_id) is None:
            return None
        # Counted and looked up in the membership index: a big room's members are not read.
        if not await self._storage.state.is_server_joined(room_id, self.server_name):
            return None
        joined, _ = await self._storage.state.get_member_counts(room_id)
        wanted = await self._storage.state.get_current_non_member_state_ids(room_id)
        events = await self._storage.events.get_events(list(wanted.values()))
        state = {k: events[v] for k, v in wanted.items() if v in events}
        return LocalRoom(room_id, state, joined)

    async def _membership(self, room_id: str, user_id: str) -> str | None:
        found = await self._storage.state.get_membership(room_id, user_id)
        return str(found[0]) if found is not None else None

    async def _joined_rooms(self, user_id: str) -> set[str]:
        rooms = await self._storage.state.get_rooms_for_user(user_id)
        return {r for r, m in rooms.items() if m == "join"}

    async def _accessible_to_server(self, room: LocalRoom, origin: str) -> bool:
        """S2S "GET /hierarchy": may ``origin`` see the room? Never past the server ACL; else when anyone
        may, when one of its users is joined or invited, or (restricted rooms) joined to an allowed room."""
        if not room.server_allowed(origin):
            return False
        summary = room.summary()
        if open_to_anyone(summary):
            return True
        if origin in await self._storage.state.get_joined_servers(room.room_id):
            return True
        members = await self._storage.state.get_members(room.room_id)
        if any(m == "invite" and server_of(u) == origin for u, m in members.items()):
            return True
        if room.join_rule in ("restricted", "knock_restricted"):
            for allowed in allowed_room_ids(room.content("m.room.join_rules")):
                if origin in await self._storage.state.get_joined_servers(allowed):
                    return True
        return False

    # -- S2S GET /hierarchy (served) ----------------------------------------------------------------

    async def federation_hierarchy(self, origin: str, room_id: str, suggested_only: bool) -> dict[str, Any]:
        room = await self.local_room(room_id)
        if room is None or not await self._accessible_to_server(room, origin):
            # S2S: 404 "the room is not known to the server or the requesting server is unable to see it".
            raise FederationRequestError(404, "M_NOT_FOUND", f"room {room_id} is unknown or not accessible")
        children: list[dict[str, Any]] = []
        inaccessible: list[str] = []
        for event in room.child_events() if room.is_space else []:
            if suggested_only and event.content.get("suggested") is not True:
                continue
            child = await self.local_room(event.state_key or "")
            if child is None:
                continue  # unknown here: the asking server has the via list to ask elsewhere
            if await self._accessible_to_server(child, origin):
                children.append(child.summary())
            else:
                inaccessible.append(child.room_id)
        return {
            "room": {**room.summary(), "children_state": room.children_state()},
            "children": children,
            "inaccessible_children": inaccessible,
        }

    # -- S2S GET /hierarchy (asked) -----------------------------------------------------------------

    async def _ask_remote(self, room_id: str, via: list[str], suggested_only: bool) -> _RemoteAnswer | None:
        key = (room_id, suggested_only)
        now = self._clock()
        cached = self._remote_cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        servers = list(via)
        if ":" in room_id[1:]:
            servers.append(server_of(room_id))  # pre-v12 room ids name the room's creating server
        answer = None
        for server in dict.fromkeys(s for s in servers if s != self.server_name):
            if self._client is None:
                break
            try:
                raw = await self._client.hierarchy(server, room_id, suggested_only)
            except FederationError as e:
                logger.info("hierarchy of %s from %s failed: %s", room_id, server, e)
                continue
            answer = _parse_remote(room_id, raw)
            if answer is not None:
                break
            logger.info("hierarchy of %s from %s: unusable answer", room_id, server)
        if answer is None:
            return None  # not remembered: another request may name a server that knows the room
        if len(self._remote_cache) >= MAX_REMOTE_CACHE:
            self._remote_cache = {k: v for k, v in self._remote_cache.items() if v[0] > now}
            if len(self._remote_cache) >= MAX_REMOTE_CACHE:
                self._remote_cache.clear()
        self._remote_cache[key] = (now + REMOTE_CACHE_SECONDS, answer)
        return answer

    # -- CS GET /hierarchy --------------------------------------------------------------------------

    async def hierarchy(
        self,
        user_id: str,
        room_id: str,
        *,
        suggested_only: bool,
        max_depth: int | None,
        limit: int | None,
        from_token: str | None,
    ) -> dict[str, Any]:
        limit = min(limit or DEFAULT_LIMIT, MAX_LIMIT)
        depth_bound = MAX_DEPTH if max_depth is None else min(max_depth, MAX_DEPTH)
        now = self._clock()
        self._sessions = {t: s for t, s in self._sessions.items() if s.expires > now}
        if from_token is not None:
            session = self._sessions.get(from_token)
            if (
                session is None
                or session.user_id != user_id
                or session.room_id != room_id
                or session.suggested_only != suggested_only
                or session.max_depth != depth_bound
            ):
                raise SpacesError(400, "M_INVALID_PARAM", "unknown pagination token (or changed parameters)")
            del self._sessions[from_token]  # each token is good for one page
        else:
            # A space we are not in (one the user is invited to, say): asked of the servers we know of it.
            root = _Entry(room_id, await self._servers_known_from_membership(room_id, user_id), 0)
            session = _Session(user_id, room_id, suggested_only, depth_bound, [root], set(), 0)
        joined = await self._joined_rooms(user_id)
        rooms: list[dict[str, Any]] = []
        while session.queue and len(rooms) < limit:
            entry = session.queue.pop(0)
            if entry.room_id in session.processed:
                continue
            session.processed.add(entry.room_id)
            found = await self._summarize(entry, user_id, joined, suggested_only)
            if found is None:
                if entry.room_id == room_id and from_token is None:
                    raise SpacesError(403, "M_FORBIDDEN", f"{user_id} may not see room {room_id}")
                continue
            chunk, children = found
            rooms.append(chunk)
            if entry.depth < depth_bound:
                session.queue[0:0] = [dataclasses.replace(c, depth=entry.depth + 1) for c in children]
        result: dict[str, Any] = {"rooms": rooms}
        if session.queue:
            token = secrets.token_urlsafe(16)
            session.expires = now + SESSION_SECONDS
            if len(self._sessions) >= MAX_SESSIONS:
                del self._sessions[next(iter(self._sessions))]
            self._sessions[token] = session
            result["next_batch"] = token
        return result

    async def _summarize(
        self, entry: _Entry, user_id: str, joined: set[str], suggested_only: bool
    ) -> tuple[dict[str, Any], list[_Entry]] | None:
        """The room's chunk (with ``children_state``) and its children to walk, or None when the user may
        not see it or nobody could tell us about it."""
        membership = await self._membership(entry.room_id, user_id)
        local = await self.local_room(entry.room_id)
        if local is not None:
            summary = local.summary()
            if not accessible_to_user(summary, membership, joined):
                return None
            children = [
                _Entry(e.state_key or "", via_servers(e.content), 0)
                for e in (local.child_events() if local.is_space else [])
                if not suggested_only or e.content.get("suggested") is True
            ]
            return {**summary, "children_state": local.children_state()}, children
        if entry.remote_summary is not None and entry.remote_summary.get("room_type") != SPACE_ROOM_TYPE:
            if not accessible_to_user(entry.remote_summary, membership, joined):
                return None
            return {**entry.remote_summary, "children_state": []}, []
        answer = await self._ask_remote(entry.room_id, entry.via, suggested_only)
        if answer is None or not accessible_to_user(answer.room, membership, joined):
            return None
        children = [
            _Entry(c["state_key"], via_servers(c["content"]), 0, answer.children.get(c["state_key"]))
            for c in answer.room["children_state"]
            if c["state_key"] not in answer.inaccessible
            and (not suggested_only or c["content"].get("suggested") is True)
        ]
        return answer.room, children

    # -- CS GET /room_summary -----------------------------------------------------------------------

    async def _servers_known_from_membership(self, room_id: str, user_id: str | None) -> list[str]:
        """For a room the user is invited to or knocked on (and we are not in): the servers to ask for its
        summary when the client names none, those of the invite's sender and of the stripped state's
        senders (a v12 room id names no server)."""
        if user_id is None:
            return []
        found = await self._storage.state.get_membership(room_id, user_id)
        if found is None or found[0] not in ("invite", "knock"):
            return []
        event = await self._storage.events.get_event(found[1], allow_rejected=True)
        if event is None:
            return []
        servers = [server_of(event.sender)]
        for key in ("invite_room_state", "knock_room_state"):
            shown = event.unsigned.get(key)
            for entry in shown if isinstance(shown, list) else []:
                sender = entry.get("sender") if isinstance(entry, dict) else None
                if isinstance(sender, str) and ":" in sender:
                    servers.append(server_of(sender))
        return list(dict.fromkeys(servers))

    async def summary(self, user_id: str | None, room_id: str, via: list[str]) -> dict[str, Any]:
        """The room's summary for ``user_id`` (None: an unauthenticated request, shown only rooms open to
        anyone), with the user's ``membership``; 404 when it is unknown or not to be seen."""
        membership = await self._membership(room_id, user_id) if user_id is not None else None
        local = await self.local_room(room_id)
        if local is not None:
            summary = local.summary()
        else:
            servers = [*via, *await self._servers_known_from_membership(room_id, user_id)]
            answer = await self._ask_remote(room_id, servers, False)
            if answer is None:
                raise SpacesError(404, "M_NOT_FOUND", f"room {room_id} not found")
            summary = {k: v for k, v in answer.room.items() if k != "children_state"}
        if user_id is None:
            visible = open_to_anyone(summary)
        else:
            visible = accessible_to_user(summary, membership, await self._joined_rooms(user_id))
        if not visible:
            raise SpacesError(404, "M_NOT_FOUND", f"room {room_id} not found or not accessible")
        if user_id is not None:
            summary["membership"] = membership or "leave"
        return summary


def _parse_remote(room_id: str, raw: Mapping[str, Any]) -> _RemoteAnswer | None:
    """A remote S2S /hierarchy answer, checked: the room must be the one asked about, with the summary's
    required fields; children entries not shaped like summaries, and child events without a valid
    ``via``, are dropped."""
    room = raw.get("room")
    if not isinstance(room, dict) or not _is_summary(room) or room.get("room_id") != room_id:
        return None
    children_state = room.get("children_state")
    kept = []
    for event in children_state if isinstance(children_state, list) else []:
        if (
            isinstance(event, dict)
            and event.get("type") == SPACE_CHILD
            and isinstance(event.get("state_key"), str)
            and event["state_key"].startswith("!")
            and isinstance(event.get("content"), dict)
            and valid_via(event["content"].get("via"))
            and isinstance(event.get("origin_server_ts"), int)
        ):
            kept.append(event)
    kept.sort(key=lambda e: child_sort_key(e["content"], e["origin_server_ts"], e["state_key"]))
    listed = raw.get("children")
    children = {c["room_id"]: c for c in listed if _is_summary(c)} if isinstance(listed, list) else {}
    inaccessible = raw.get("inaccessible_children")
    return _RemoteAnswer(
        room={**room, "children_state": kept},
        children=children,
        inaccessible={r for r in inaccessible if isinstance(r, str)}
        if isinstance(inaccessible, list)
        else set(),
    )


def _is_summary(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("room_id"), str)
        and isinstance(value.get("num_joined_members"), int)
        and isinstance(value.get("world_readable"), bool)
        and isinstance(value.get("guest_can_join"), bool)
    )
