"""Creating events on this server: build on the room's forward extremities, authorise, persist.

Every local event cites all current forward extremities (up to 20, the spec's limit; extremity healing
keeps rooms far below that), so the state before it is simply the room's current state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..clock import now_ms
from ..protocol.auth import auth_types_for_event, check_auth_rules
from ..protocol.auth.power_levels import get_named_level, get_user_power_level
from ..protocol.canonical_json import MAX_SAFE_INT
from ..protocol.errors import AuthRejected
from ..protocol.events import MAX_DEPTH, MAX_PREV_EVENTS, Pdu, StateKey, build_event, event_references
from ..protocol.identifiers import server_of
from ..protocol.room_versions import RoomVersion
from ..protocol.signing import SigningKey
from ..storage.interfaces import EventToPersist
from ..storage.protocols.composite import HasEvents, HasRooms, HasState
from .persister import EventPersister, TxnHook
from .state import StateIds, StateService

CREATE_KEY: StateKey = ("m.room.create", "")
# Events this server refuses to redact whoever asks (as Synapse does): a redacted create event loses the
# room's settings, and a redacted m.room.server_acl keeps no "allow" list, which denies every server.
UNREDACTABLE_TYPES = frozenset({"m.room.create", "m.room.server_acl"})


class LocalEventsStorage(HasRooms, HasEvents, HasState, Protocol):
    """What rooms/local_events.py asks of storage."""


def depth_after(rv: RoomVersion, max_prev_depth: int) -> int:
    """The depth of a new event: the largest depth of its prev events plus one, held at the room version's
    limit once a room reaches it (S2S PDU schemas: "If the room's depth is already at the limit, the depth
    must be set to the limit"). The limit is 2^53-1 since v6 (canonical JSON) and 2^63-1 before."""
    limit = MAX_SAFE_INT if rv.strict_canonical_json else MAX_DEPTH
    return min(max_prev_depth + 1, limit)


class RoomNotFound(LookupError):
    pass


class LocalEventCreator:
    def __init__(
        self,
        storage: LocalEventsStorage,
        state: StateService,
        persister: EventPersister,
        server_name: str,
        signing_key: SigningKey,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._storage = storage
        self._state = state
        self._persister = persister
        self.server_name = server_name
        self.signing_key = signing_key
        self._clock = clock

    async def room_version(self, room_id: str) -> RoomVersion:
        rv = await self._storage.rooms.get_room_version(room_id)
        if rv is None:
            raise RoomNotFound(room_id)
        return rv

    async def send(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        *,
        state_key: str | None = None,
        redacts: str | None = None,
        unsigned: dict[str, Any] | None = None,
        txn_hook: TxnHook | None = None,
        origin_server_ts: int | None = None,
    ) -> Pdu:
        """Create, authorise and persist one event; raises AuthRejected if the sender may not send it.
        ``txn_hook`` runs inside the persist transaction (e.g. recording the client's transaction id);
        ``origin_server_ts`` replaces "now" (an appservice's ``?ts=``, AS "Timestamp massaging")."""
        rv = await self.room_version(room_id)
        async with self._persister.room_lock(room_id):
            prev_ids, state_before = await self.tips_and_state(room_id, rv)
            pdu = await self._build(
                rv,
                room_id,
                sender,
                event_type,
                content,
                state_key,
                redacts,
                prev_ids,
                state_before,
                unsigned,
                origin_server_ts,
            )
            if pdu.type == "m.room.redaction":
                await self._check_local_redaction(pdu, state_before)
            await self.persist_local(pdu, state_before, txn_hook)
        return pdu

    async def _check_local_redaction(self, pdu: Pdu, state_before: StateIds) -> None:
        """What this server lets its own users redact (CS "Redactions": redacting "events sent by other
        users" needs the redact level). The federation rule (v3+ "Handling redactions": enough power, or
        the same server as the original sender) trusts each server to hold its own users to this, so it
        is enforced here, in every room version: before v3 auth rule 11 only compares the servers too."""
        target_id = pdu.redacts
        target = await self._storage.events.get_event(target_id) if target_id is not None else None
        if target is not None and target.room_id != pdu.room_id:
            target = None  # another room's event: not a target here, and not told apart from an unknown one
        if target is not None and target.type in UNREDACTABLE_TYPES:
            raise AuthRejected("redaction", f"{target.type} events cannot be redacted on this server")
        if target is not None and target.sender == pdu.sender:
            return  # one's own events need only the power to send m.room.redaction (the auth rules)
        if not await self._may_redact_others(pdu, state_before):
            # An unknown target is refused too: it cannot be shown to be the sender's own, and every
            # event of a local user is known here.
            raise AuthRejected(
                "redaction", f"redacting events of other users needs the room's redact level ({pdu.sender})"
            )

    async def tips_and_state(self, room_id: str, rv: RoomVersion) -> tuple[list[str], StateIds]:
        """The prev_events a new event should cite (the forward extremities, at most 20) and the state
        before such an event. Call with the room lock held if the event will be persisted."""
        prev_ids = sorted(await self._storage.events.get_forward_extremities(room_id))
        if len(prev_ids) <= MAX_PREV_EVENTS:
            return prev_ids, await self._storage.state.get_current_state_ids(room_id)
        # Cite the newest 20; the state before is then the resolution of their states.
        metas = [await self._storage.events.get_event_meta(e) for e in prev_ids]
        newest = sorted((m for m in metas if m is not None), key=lambda m: (-m.depth, m.event_id))
        prev_ids = [m.event_id for m in newest[:MAX_PREV_EVENTS]]
        return prev_ids, await self._state.state_before_prev_events(room_id, rv, prev_ids)

    async def template(
        self, room_id: str, sender: str, event_type: str, content: dict[str, Any], state_key: str | None
    ) -> dict[str, Any]:
        """An unsigned event skeleton for a remote server to complete (make_join, make_leave, make_knock)."""
        rv = await self.room_version(room_id)
        prev_ids = sorted(await self._storage.events.get_forward_extremities(room_id))
        if len(prev_ids) <= MAX_PREV_EVENTS:
            # The state before the template is the current state; only the keys its auth events come from
            # are looked up (make_join into a room of 50,000 members reads none of their events).
            keys = auth_types_for_event(rv, event_type, state_key, sender, content) | {CREATE_KEY}
            state_before = {}
            for key in keys:
                event_id = await self._storage.state.get_current_state_id(room_id, *key)
                if event_id is not None:
                    state_before[key] = event_id
        else:
            prev_ids, state_before = await self.tips_and_state(room_id, rv)
        auth_ids, _ = await self._auth_events_for(rv, event_type, state_key, sender, content, state_before)
        template: dict[str, Any] = {
            "type": event_type,
            "room_id": room_id,
            "sender": sender,
            "content": content,
            "depth": depth_after(
                rv, await self._storage.events.get_max_depth_of(prev_ids) if prev_ids else 0
            ),
            # Room versions 1 and 2 cite [event_id, hashes] pairs; Synapse refuses a v1 template with bare
            # ids ("expected a tuple of size 2") and gives up on the join.
            "prev_events": event_references(prev_ids, rv),
            "auth_events": event_references(auth_ids, rv),
            "origin_server_ts": self._clock(),
        }
        if state_key is not None:
            template["state_key"] = state_key
        if not rv.implicit_room_creator:
            template["origin"] = server_of(sender)  # v1-v10 events carry "origin"
        return template

    async def build_unpersisted(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str | None = None,
    ) -> tuple[Pdu, StateIds]:
        """Build and authorise an event without persisting it (e.g. an invite a remote server must sign
        first). The caller persists it with ``persist_local`` under the room lock, re-checking freshness."""
        rv = await self.room_version(room_id)
        prev_ids, state_before = await self.tips_and_state(room_id, rv)
        pdu = await self._build(
            rv, room_id, sender, event_type, content, state_key, None, prev_ids, state_before, None
        )
        return pdu, state_before

    async def persist_local(self, pdu: Pdu, state_before: StateIds, txn_hook: TxnHook | None = None) -> None:
        """Persist an event built here (the caller holds the room lock)."""
        permitted = pdu.type == "m.room.redaction" and await self._may_redact_others(pdu, state_before)
        item = EventToPersist(pdu=pdu, state_before=state_before, redaction_permitted_by_power=permitted)
        await self._persister.persist(pdu.room_id, pdu.room_version, [item], extra_txn_hook=txn_hook)

    async def _may_redact_others(self, pdu: Pdu, state_before: StateIds) -> bool:
        keys = {k: v for k, v in state_before.items() if k in (CREATE_KEY, ("m.room.power_levels", ""))}
        state = await self._state.load_state_events(keys)
        return get_user_power_level(pdu.sender, state, pdu.room_version) >= get_named_level(state, "redact")

    async def _auth_events_for(
        self,
        rv: RoomVersion,
        event_type: str,
        state_key: str | None,
        sender: str,
        content: dict[str, Any],
        state_before: StateIds,
    ) -> tuple[list[str], dict[StateKey, Pdu]]:
        """The auth event ids to cite (S2S "Auth events selection") and the state the rules will read."""
        auth_keys = auth_types_for_event(rv, event_type, state_key, sender, content)
        needed = {k: v for k, v in state_before.items() if k in auth_keys or k == CREATE_KEY}
        auth_state = await self._state.load_state_events(needed)
        return sorted(auth_state[k].event_id for k in auth_keys if k in auth_state), auth_state

    async def _build(
        self,
        rv: RoomVersion,
        room_id: str | None,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str | None,
        redacts: str | None,
        prev_ids: list[str],
        state_before: StateIds,
        unsigned: dict[str, Any] | None,
        origin_server_ts: int | None = None,
    ) -> Pdu:
        auth_ids, auth_state = await self._auth_events_for(
            rv, event_type, state_key, sender, content, state_before
        )
        depth = depth_after(rv, await self._storage.events.get_max_depth_of(prev_ids) if prev_ids else 0)
        pdu = build_event(
            room_version=rv,
            room_id=room_id,
            sender=sender,
            event_type=event_type,
            content=content,
            state_key=state_key,
            redacts=redacts,
            prev_events=prev_ids,
            auth_events=auth_ids,
            depth=depth,
            origin_server_ts=self._clock() if origin_server_ts is None else origin_server_ts,
            server_name=self.server_name,
            signing_key=self.signing_key,
            unsigned=unsigned,
        )
        # The state before a local event is the current state, so one check covers both the auth events
        # and the state-before checks of S2S "Checks performed on receipt of a PDU".
        check_auth_rules(pdu, auth_state)
        return pdu

    async def create_room_events(
        self,
        room_id_hint: str | None,
        rv: RoomVersion,
        creator: str,
        create_content: dict[str, Any],
        state: list[tuple[str, str, dict[str, Any]]],
        creator_profile: dict[str, Any] | None = None,
    ) -> str:
        """Create a room: the create event, the creator's join (with ``creator_profile``: displayname and
        avatar_url), then ``state`` in order. Returns the room id.

        Before v12 the room id is ours to mint (``room_id_hint``); since v12 it is derived from the create
        event, so the whole creation happens before anyone else can know the id. Every event is built and
        authorised before any is stored, and all are persisted in one batch: a request refused on its
        tenth event (an over-long type, power levels the rules refuse) leaves no half-made room behind.
        """
        specs = [
            ("m.room.create", "", create_content),
            ("m.room.member", creator, {"membership": "join", **(creator_profile or {})}),
            *state,
        ]
        room_id = room_id_hint
        current: dict[StateKey, Pdu] = {}
        prev_ids: list[str] = []
        batch: list[EventToPersist] = []
        for depth, (event_type, state_key, content) in enumerate(specs, start=1):
            auth_keys = auth_types_for_event(rv, event_type, state_key, creator, content)
            auth_state = {k: e for k, e in current.items() if k in auth_keys or k == CREATE_KEY}
            pdu = build_event(
                room_version=rv,
                room_id=room_id,
                sender=creator,
                event_type=event_type,
                content=content,
                state_key=state_key,
                prev_events=prev_ids,
                auth_events=sorted(e.event_id for k, e in auth_state.items() if k in auth_keys),
                depth=depth,
                origin_server_ts=self._clock(),
                server_name=self.server_name,
                signing_key=self.signing_key,
            )
            check_auth_rules(pdu, auth_state)
            batch.append(EventToPersist(pdu=pdu, state_before={k: e.event_id for k, e in current.items()}))
            room_id = pdu.room_id
            current[(event_type, state_key)] = pdu
            prev_ids = [pdu.event_id]
        assert room_id is not None  # the create event's, at the latest
        await self.persist_new_room(room_id, rv, creator, batch)
        return room_id

    async def persist_new_room(
        self, room_id: str, rv: RoomVersion, creator: str, batch: list[EventToPersist]
    ) -> None:
        """Store a new room and its creation batch (built and authorised by ``create_room_events``)."""
        await self._storage.rooms.store_room(room_id, rv.identifier, creator)
        async with self._persister.room_lock(room_id):
            await self._persister.persist(room_id, rv, batch)
