"""The resident server's side of membership over federation: make_join/send_join, make_leave/send_leave,
and receiving invites for our users (S2S "Joining Rooms", "Leaving Rooms", "Inviting to a room").

Also the join-gap healing: an event created between a joiner's make_join and send_join is neither cited
by the join nor part of the state the joiner gets. Right after persisting a remote join we look at the
room's forward extremities; if there is more than one, a local user sends an ``org.matrix.dummy_event``
citing all of them, and it goes to every server in the room, the joiner included, which then pulls the
missed events as ordinary missing prev_events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from ..federation.errors import FederationRequestError
from ..protocol.auth import check_auth_events_list, check_auth_rules
from ..protocol.auth.power_levels import get_required_level_for_event, get_user_power_level
from ..protocol.auth.selection import auth_types_for_event, auth_types_of
from ..protocol.errors import AuthRejected, FormatError, HashMismatch, ProtocolError, SignatureError
from ..protocol.events import Pdu, StateKey, add_signature
from ..protocol.identifiers import server_of
from ..protocol.room_versions import RoomVersion, get_room_version
from ..protocol.signing import SigningKey
from ..storage.interfaces import EventToPersist, StateDelta
from ..storage.protocols.composite import HasEvents, HasPartialState, HasRooms, HasState, HasUsers
from .incoming_acl import ACL_KEY, server_allowed_by_acl
from .local_events import LocalEventCreator, RoomNotFound
from .persister import EventPersister
from .state import StateService
from .stripped_state import room_state_for_remote

logger = logging.getLogger(__name__)

CREATE_KEY: StateKey = ("m.room.create", "")
DUMMY_EVENT_TYPE = "org.matrix.dummy_event"
# Seconds after the dummy event of a remote join at which it is sent to the joiner once more (see
# ``_resend_to_joiner``).
JOINER_RESEND_DELAYS = (1.0, 5.0)


class ResidentStorage(HasRooms, HasEvents, HasState, HasUsers, HasPartialState, Protocol):
    """What rooms/resident.py asks of storage."""


_CREATE_KEY: StateKey = ("m.room.create", "")


def _vouched_by_us(content: dict[str, Any], server_name: str) -> bool:
    authoriser = content.get("join_authorised_via_users_server")
    return isinstance(authoriser, str) and ":" in authoriser and server_of(authoriser) == server_name


def _bad(message: str) -> FederationRequestError:
    return FederationRequestError(400, "M_BAD_JSON", message)


def _forbidden(message: str) -> FederationRequestError:
    return FederationRequestError(403, "M_FORBIDDEN", message)


KeyPrefetch = Callable[[Sequence[tuple[str, str]]], Awaitable[None]]


class ResidentMembership:
    def __init__(
        self,
        storage: ResidentStorage,
        state: StateService,
        persister: EventPersister,
        creator: LocalEventCreator,
        server_name: str,
        signing_key: SigningKey,
        keyring: Any,
        sender: Any = None,
        *,
        join_gap_dummy_event: bool = True,
        max_forward_extremities: int = 10,
    ) -> None:
        self._storage = storage
        self._state = state
        self._persister = persister
        self._creator = creator
        self.server_name = server_name
        self._signing_key = signing_key
        self._keyring = keyring
        # The federation sender (forward_in_txn, wake); None on a server without federation.
        self._sender = sender
        self.join_gap_dummy_event = join_gap_dummy_event
        self.max_forward_extremities = max_forward_extremities
        self._healing: dict[str, asyncio.Task[None]] = {}
        self._heal_requests: dict[str, tuple[int, str]] = {}
        self._heal_joiners: dict[str, set[str]] = {}
        self._resends: set[asyncio.Task[None]] = set()
        # Told of every dummy event sent to tie extremities together (the metrics count them).
        self.on_dummy_sent: Callable[[], None] | None = None
        persister.add_listener(self._after_persist)

    # -- make_join / send_join ---------------------------------------------------------------------

    async def _room_version(self, room_id: str, origin: str) -> RoomVersion:
        rv = await self._storage.rooms.get_room_version(room_id)
        if rv is None or not await self._we_are_joined(room_id):
            raise FederationRequestError(404, "M_NOT_FOUND", f"Unknown room {room_id}")
        if await self._storage.partial_state.is_partial(room_id):
            # Joined with partial state (MSC3706): we cannot vouch for the membership yet (Synapse answers
            # the same 404), so the other server asks another resident.
            raise FederationRequestError(
                404, "M_NOT_FOUND", f"{self.server_name} is not fully joined to {room_id} yet (partial state)"
            )
        acl = await self._storage.state.get_current_state_event(room_id, *ACL_KEY)
        if not server_allowed_by_acl(origin, acl.content if acl is not None else None):
            # S2S "Server Access Control Lists": membership requests of denied servers are refused too.
            raise _forbidden(f"server {origin} is denied by the room's server ACL")
        return rv

    async def _we_are_joined(self, room_id: str) -> bool:
        return await self._storage.state.is_server_joined(room_id, self.server_name)

    async def make_membership(
        self,
        origin: str,
        room_id: str,
        user_id: str,
        membership: str,
        supported_versions: Sequence[str] | None,
    ) -> dict[str, Any]:
        if server_of(user_id) != origin:
            raise _forbidden(f"{origin} cannot make a {membership} event for {user_id}")
        rv = await self._room_version(room_id, origin)
        if supported_versions is not None and rv.identifier not in supported_versions:
            raise FederationRequestError(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                f"room version {rv.identifier} is not supported by you",
                room_version=rv.identifier,
            )
        content: dict[str, Any] = {"membership": membership}
        if membership == "join":
            authoriser = await self._restricted_authoriser(room_id, user_id)
            if authoriser is not None:
                content["join_authorised_via_users_server"] = authoriser
        template = await self._creator.template(room_id, user_id, "m.room.member", content, user_id)
        # Authorise the template now, so the joiner hears "no" from make_join rather than from send_join.
        # Only the state the rules consult for it is loaded: a big room's members are never parsed here.
        keys = auth_types_for_event(rv, "m.room.member", user_id, user_id, content) | {_CREATE_KEY}
        probe_state = await self._state.current_state_events(room_id, keys)
        await self._check_template(rv, template, probe_state)
        return {"event": template, "room_version": rv.identifier}

    async def _check_template(
        self, rv: RoomVersion, template: dict[str, Any], state: dict[StateKey, Pdu]
    ) -> None:
        from ..protocol.events import build_event

        probe_key = SigningKey.generate("probe")
        probe = build_event(
            room_version=rv,
            room_id=template["room_id"],
            sender=template["sender"],
            event_type=template["type"],
            content=template["content"],
            state_key=template.get("state_key"),
            # v1/v2 templates cite [event_id, hashes] pairs (event_references); build_event takes ids.
            prev_events=[_ref_id(r) for r in template["prev_events"]],
            auth_events=[_ref_id(r) for r in template["auth_events"]],
            depth=template["depth"],
            origin_server_ts=template["origin_server_ts"],
            server_name=server_of(template["sender"]),
            signing_key=probe_key,
            # A restricted join we vouch for will carry our signature too (send_join adds it): the rules
            # ask for it, so the probe has it (without it every restricted make_join was refused).
            extra_signatures=[(self.server_name, self._signing_key)]
            if _vouched_by_us(template["content"], self.server_name)
            else (),
        )
        try:
            check_auth_rules(probe, state)
        except AuthRejected as e:
            raise _forbidden(
                f"You are not allowed to {template['content']['membership']} this room: {e.reason}"
            ) from None

    async def _restricted_authoriser(self, room_id: str, user_id: str) -> str | None:
        """For a restricted room (v8+), a local user who can invite vouches for the join."""
        from ..protocol.auth.power_levels import get_named_level, room_creators

        # The join rules, power levels, create event and the joiner's membership; the local members come
        # from the membership index, so the room's member events are not all parsed for one join.
        keys = {
            ("m.room.join_rules", ""),
            ("m.room.power_levels", ""),
            _CREATE_KEY,
            ("m.room.member", user_id),
        }
        state = await self._state.current_state_events(room_id, keys)
        join_rules = state.get(("m.room.join_rules", ""))
        if join_rules is None or join_rules.content.get("join_rule") not in (
            "restricted",
            "knock_restricted",
        ):
            return None
        current = state.get(("m.room.member", user_id))
        if current is not None and current.membership in ("join", "invite"):
            return None  # already joined or invited: the ordinary rules allow the join
        if not await self._meets_allow_conditions(join_rules, user_id):
            return None
        needed = get_named_level(state, "invite")
        rv = join_rules.room_version
        # The users the power levels name and the creators first: each is one membership lookup, not a
        # read of every member.
        power = state.get(("m.room.power_levels", ""))
        named = power.content.get("users") if power is not None else None
        create = state.get(_CREATE_KEY)
        creators = room_creators(create) if create is not None else set()
        for key in sorted({*(named if isinstance(named, dict) else ()), *creators}):
            if (
                isinstance(key, str)
                and ":" in key
                and server_of(key) == self.server_name
                and get_user_power_level(key, state, rv) >= needed
            ):
                membership = await self._storage.state.get_membership(room_id, key)
                if membership is not None and membership[0] == "join":
                    return key
        if get_user_power_level(f"@\x00:{self.server_name}", state, rv) < needed:
            return None  # a member the power levels do not name may not invite
        for key in sorted(await self._storage.state.get_joined_users(room_id)):
            if server_of(key) == self.server_name and get_user_power_level(key, state, rv) >= needed:
                return key
        return None

    async def _meets_allow_conditions(self, join_rules: Pdu, user_id: str) -> bool:
        allow = join_rules.content.get("allow")
        if not isinstance(allow, list):
            return False
        for condition in allow:
            if isinstance(condition, dict) and condition.get("type") == "m.room_membership":
                other = condition.get("room_id")
                if isinstance(other, str):
                    membership = await self._storage.state.get_membership(other, user_id)
                    if membership is not None and membership[0] == "join":
                        return True
        return False

    async def send_membership(
        self,
        origin: str,
        room_id: str,
        event_id: str,
        pdu_json: Any,
        membership: str,
        omit_members: bool = False,
    ) -> dict[str, Any]:
        """send_join / send_leave (v2): check, persist, forward, answer; then heal the join gap."""
        rv = await self._room_version(room_id, origin)
        pdu = await self._verified_membership_event(origin, room_id, event_id, pdu_json, rv, membership)
        async with self._persister.room_lock(room_id):
            # The rules consult a handful of keys: only those events are loaded (a big room's members are
            # not parsed for one join; the make_join/send_join time stays flat in the room's size).
            keys = auth_types_of(pdu) | {_CREATE_KEY}
            state_before: dict[StateKey, str] | None = None
            if len(pdu.prev_event_ids) == 1:
                # The usual join (its template cited the room's one forward extremity): the state before
                # it is the state after that event, and neither it nor the persister needs the full map.
                before_keys = await self._storage.state.get_state_ids_after(pdu.prev_event_ids[0], keys)
            else:
                state_before = await self._state.state_before_prev_events(
                    room_id, rv, list(pdu.prev_event_ids)
                )
                before_keys = {k: v for k, v in state_before.items() if k in keys}
            state_events = await self._state.load_state_events(before_keys)
            try:
                check_auth_rules(pdu, state_events)  # S2S checks: the state before the event
                current = await self._state.current_state_events(room_id, keys)
                check_auth_rules(pdu, current)  # and the current state (else it would soft-fail)
            except AuthRejected as e:
                raise _forbidden(f"{membership} not allowed: {e.reason}") from None
            others = sorted(await self._storage.state.get_joined_servers(room_id))
            # The rest of the room must hear of the new member from us (its own server learns from our
            # answer); queued in the commit that persists the event, so a crash cannot lose the send.
            destinations = [s for s in others if s not in (self.server_name, origin)]
            hook = self._sender.forward_in_txn(destinations) if self._sender and destinations else None
            item = (
                EventToPersist(pdu=pdu, state_before_is_after_prev=True)
                if state_before is None
                else EventToPersist(pdu=pdu, state_before=state_before)
            )
            await self._persister.persist(room_id, rv, [item], extra_txn_hook=hook)
        if self._sender is not None:
            for destination in destinations:
                self._sender.wake(destination)
        if membership == "knock":
            # S2S "Knocking upon a room": the knocker is shown the room as an invitee is (v1.16: full PDUs,
            # the create event among them).
            return {"knock_room_state": await room_state_for_remote(self._storage, room_id)}
        if membership != "join":
            return {}
        if self.join_gap_dummy_event:
            # Synapse does this while still answering; doing it right after persisting means the dummy
            # may reach the joiner before our response does, which joiners must (and we do) handle.
            self._schedule_healing(room_id, reason=f"remote join {pdu.event_id}", threshold=1, joiner=origin)
        return await self._send_join_response(room_id, pdu, state_before, others, omit_members)

    async def _verified_membership_event(
        self, origin: str, room_id: str, event_id: str, pdu_json: Any, rv: RoomVersion, membership: str
    ) -> Pdu:
        if not isinstance(pdu_json, dict):
            raise _bad("the request body must be the event")
        try:
            pdu = Pdu(pdu_json, rv)
        except ProtocolError as e:
            raise _bad(f"malformed event: {e.message}") from None
        if pdu.event_id != event_id:
            raise _bad(f"event id {pdu.event_id} does not match the path's {event_id}")
        if pdu.room_id != room_id:
            raise _bad("event is for another room")
        if pdu.type != "m.room.member" or pdu.membership != membership or pdu.state_key != pdu.sender:
            raise _bad(f"expected an m.room.member {membership} event of its sender")
        if server_of(pdu.sender) != origin:
            raise _forbidden(f"{origin} cannot send a {membership} for {pdu.sender}")
        authoriser = pdu.content.get("join_authorised_via_users_server")
        if membership == "join" and isinstance(authoriser, str) and server_of(authoriser) == self.server_name:
            pdu = add_signature(pdu, self.server_name, self._signing_key)  # restricted join: we vouch
        try:
            await self._keyring.prefetch([(s, k) for s in pdu.required_signers() for k in _key_ids(pdu, s)])
            pdu.check_signatures(self._keyring.lookup)
            pdu.check_content_hash()
        except (SignatureError, HashMismatch) as e:
            raise _forbidden(f"event failed verification: {e.message}") from None
        claimed = await self._storage.events.get_events(list(pdu.auth_event_ids))
        if len(claimed) != len(set(pdu.auth_event_ids)):
            raise _forbidden("the event cites auth events this server does not know")
        try:
            auth_map = check_auth_events_list(pdu, list(claimed.values()))
            if rv.room_id_from_create_event:
                create = await self._storage.state.get_current_state_event(room_id, "m.room.create", "")
                if create is not None:
                    auth_map[CREATE_KEY] = create
            check_auth_rules(pdu, auth_map)
        except (AuthRejected, ValueError) as e:
            raise _forbidden(f"{membership} not allowed by its auth events: {e}") from None
        unknown = set(pdu.prev_event_ids) - await self._storage.events.have_events(list(pdu.prev_event_ids))
        if unknown:
            raise _bad(f"the event's prev_events are unknown here: {sorted(unknown)}")
        return pdu

    async def _send_join_response(
        self,
        room_id: str,
        join: Pdu,
        state_before: dict[StateKey, str] | None,
        servers_before: list[str],
        omit_members: bool = False,
    ) -> dict[str, Any]:
        """``state_before``: the full state before the join, or None when it is the state after the
        join's one prev event (read here, and with ``omit_members`` without its members)."""
        prev = join.prev_event_ids[0] if state_before is None else ""
        if omit_members:
            # Partial state (S2S send_join v2, omit_members; MSC3706 and MSC3943): the non-member state,
            # plus, in a room with neither a name nor a canonical alias, the heroes' member events so the
            # joiner can name the room; the auth chain leaves out what ``state`` already carries.
            if state_before is None:
                others = await self._storage.state.get_non_member_state_ids_after(prev)
            else:
                others = {k: v for k, v in state_before.items() if k[0] != "m.room.member"}
            state_ids = list(others.values())
            if ("m.room.name", "") not in others and ("m.room.canonical_alias", "") not in others:
                heroes = await self._storage.state.get_hero_members(room_id, exclude=join.sender)
                if state_before is None:
                    hero_keys = [("m.room.member", user) for user, _ in heroes]
                    members = await self._storage.state.get_state_ids_after(prev, hero_keys)
                else:
                    members = state_before
                state_ids += [e for user, e in heroes if members.get(("m.room.member", user)) == e]
        else:
            if state_before is None:
                state_before = await self._storage.state.get_state_ids_after(prev)
            state_ids = list(state_before.values())
        chain_ids = await self._storage.events.get_auth_chain_ids([*state_ids, join.event_id])
        if omit_members:
            chain_ids = set(chain_ids) - set(state_ids)
        events = await self._storage.events.get_events([*state_ids, *chain_ids])
        return {
            "state": [events[e].json for e in state_ids if e in events],
            "auth_chain": [events[e].json for e in sorted(chain_ids) if e in events],
            "event": join.json,
            "members_omitted": omit_members,
            "servers_in_room": sorted(set(servers_before) | {self.server_name}),
            "origin": self.server_name,
        }

    # -- MSC4370: current extremities --------------------------------------------------------------------

    async def current_extremities(self, origin: str, room_id: str) -> dict[str, Any]:
        """The events we would cite as prev_events now (MSC4370): 404 for an unknown room, 403 for a server
        that is not in the room or is denied by its ACL."""
        await self._room_version(room_id, origin)
        joined_servers = await self._storage.state.get_joined_servers(room_id)
        if origin not in joined_servers:
            raise _forbidden(f"server {origin} is not in room {room_id}")
        extremities = await self._storage.events.get_forward_extremities(room_id)
        if not extremities:
            raise FederationRequestError(404, "M_NOT_FOUND", f"no events known in {room_id}")
        return {"prev_events": sorted(extremities)}

    # -- invites for our users ----------------------------------------------------------------------

    async def on_invite(self, origin: str, room_id: str, event_id: str, body: Any) -> dict[str, Any]:
        """PUT /v2/invite: a remote server invites one of our users. Co-sign and remember the invite."""
        if not isinstance(body, dict) or not isinstance(body.get("event"), dict):
            raise _bad("the body must carry 'event' and 'room_version'")
        try:
            rv = get_room_version(body.get("room_version", "1"))
        except ProtocolError:
            raise FederationRequestError(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                f"room version {body.get('room_version')!r} is not supported",
                room_version=body.get("room_version"),
            ) from None
        try:
            pdu = Pdu(body["event"], rv)
        except ProtocolError as e:
            raise _bad(f"malformed invite: {e.message}") from None
        if pdu.event_id != event_id or pdu.room_id != room_id:
            raise _bad("the invite does not match the path")
        if pdu.type != "m.room.member" or pdu.membership != "invite" or pdu.state_key is None:
            raise _bad("expected an m.room.member invite")
        if server_of(pdu.state_key) != self.server_name:
            raise _forbidden("the invited user is not on this server")
        if server_of(pdu.sender) != origin:
            raise _forbidden(f"{origin} cannot send an invite from {pdu.sender}")
        if not await self._storage.users.user_exists(pdu.state_key):
            raise FederationRequestError(404, "M_NOT_FOUND", f"no user {pdu.state_key}")
        try:
            await self._keyring.prefetch([(origin, k) for k in _key_ids(pdu, origin)])
            pdu.check_signature_of(origin, self._keyring.lookup)
            pdu.check_content_hash()
        except (SignatureError, HashMismatch) as e:
            raise _forbidden(f"invite failed verification: {e.message}") from None
        stripped = stripped_room_state(body.get("invite_room_state"), rv, room_id)
        signed = add_signature(pdu, self.server_name, self._signing_key)
        if stripped:
            signed = signed.with_unsigned({**signed.unsigned, "invite_room_state": stripped})
        await self.remember_out_of_room_membership(signed)
        return {"event": signed.json}

    async def remember_out_of_room_membership(self, pdu: Pdu) -> None:
        """Keep a membership event for a room we are not in (an invite, or our rejection of one) as an
        outlier, and record it as the user's membership so /sync shows it."""
        room_id = pdu.room_id
        await self._storage.rooms.store_room(room_id, pdu.room_version.identifier, pdu.sender)
        assert pdu.state_key is not None
        async with self._persister.room_lock(room_id):
            if await self._we_are_joined(room_id):
                return  # the event will arrive through the room itself
            delta = StateDelta(changed={("m.room.member", pdu.state_key): pdu.event_id})
            await self._persister.persist_out_of_band(room_id, [EventToPersist(pdu=pdu, outlier=True)], delta)

    async def accept_out_of_room_membership(self, origin: str, pdu: Pdu) -> bool:
        """A PDU of a room we are not in that ends one of our users' invite or knock there: the invite
        withdrawn or the knock refused (a kick or ban by the room), or the user's own leave made through
        another server. Kept like the invite or knock itself (out of band, an outlier that becomes the
        user's membership, so /sync moves the room to ``leave``); True when it was taken.

        Such an event cannot be authorised here, as we hold none of the room's state; its signatures and
        hashes were checked by the intake (S2S steps 1-3), and only a server of the sender may send it,
        which is the trust Synapse gives its out-of-band memberships too."""
        if pdu.type != "m.room.member" or pdu.state_key is None or pdu.membership not in ("leave", "ban"):
            return False
        if server_of(pdu.state_key) != self.server_name or server_of(pdu.sender) != origin:
            return False
        room_id = pdu.room_id
        if await self._we_are_joined(room_id):
            return False
        current = await self._storage.state.get_membership(room_id, pdu.state_key)
        if current is None or current[0] not in ("invite", "knock"):
            return False
        await self.remember_out_of_room_membership(pdu)
        logger.info(
            "%s's %s in %s ended by %s (%s)", pdu.state_key, current[0], room_id, pdu.sender, pdu.event_id
        )
        return True

    # -- healing forward extremities ----------------------------------------------------------------

    async def _after_persist(self, room_id: str, batch: Sequence[EventToPersist]) -> None:
        if any(item.pdu.type == DUMMY_EVENT_TYPE for item in batch):
            return
        if not any(not item.outlier for item in batch):
            return
        predicted = self._persister.predicted_extremities(room_id)
        if predicted is not None and len(predicted) <= self.max_forward_extremities:
            return  # known from the batch without reading them back: nothing to heal
        self._schedule_healing(
            room_id, reason="too many forward extremities", threshold=self.max_forward_extremities
        )

    def _schedule_healing(self, room_id: str, reason: str, threshold: int, joiner: str | None = None) -> None:
        """Heal once the room has more than ``threshold`` forward extremities. Requests made while a
        healing of the room runs are remembered (the lowest threshold wins) and handled right after.
        ``joiner``: the server whose join prompted this, which gets the dummy event again later."""
        if joiner is not None:
            self._heal_joiners.setdefault(room_id, set()).add(joiner)
        current = self._heal_requests.get(room_id)
        if current is None or threshold < current[0]:
            self._heal_requests[room_id] = (threshold, reason)
        running = self._healing.get(room_id)
        if running is None or running.done():
            self._healing[room_id] = asyncio.create_task(self._heal_loop(room_id))

    async def _heal_loop(self, room_id: str) -> None:
        while room_id in self._heal_requests:
            threshold, reason = self._heal_requests.pop(room_id)
            await self._heal(room_id, reason, threshold)

    async def _heal(self, room_id: str, reason: str, threshold: int) -> None:
        joiners = self._heal_joiners.pop(room_id, set())
        try:
            extremities = await self._storage.events.get_forward_extremities(room_id)
            if len(extremities) <= threshold:
                return
            sender = await self._dummy_sender(room_id)
            if sender is None:
                logger.warning(
                    "room %s has %d forward extremities (%s) but no local user may send a dummy event",
                    room_id,
                    len(extremities),
                    reason,
                )
                return
            pdu = await self._creator.send(room_id, sender, DUMMY_EVENT_TYPE, {})
            if self.on_dummy_sent is not None:
                self.on_dummy_sent()
            logger.info(
                "tied %d forward extremities of %s together with %s (%s)",
                len(extremities),
                room_id,
                pdu.event_id,
                reason,
            )
            for joiner in joiners:
                task = asyncio.create_task(self._resend_to_joiner(joiner, room_id, pdu.event_id))
                self._resends.add(task)
                task.add_done_callback(self._resends.discard)
        except (RoomNotFound, AuthRejected, FormatError) as e:
            logger.warning("could not heal forward extremities of %s: %s", room_id, e)
        except Exception:
            logger.exception("healing forward extremities of %s failed", room_id)

    async def _dummy_sender(self, room_id: str) -> str | None:
        state = await self._state.current_state_events(room_id)
        create = state.get(CREATE_KEY)
        if create is None:
            return None
        needed = get_required_level_for_event(DUMMY_EVENT_TYPE, False, state)
        for (etype, key), ev in sorted(state.items()):
            if etype != "m.room.member" or ev.membership != "join" or server_of(key) != self.server_name:
                continue
            if get_user_power_level(key, state, create.room_version) >= needed:
                return key
        return None

    async def _resend_to_joiner(self, joiner: str, room_id: str, event_id: str) -> None:
        """Send the join's dummy event to the joiner again, a little later.

        The dummy is created right after the join is persisted, so its first copy can reach the joiner
        before our send_join answer has been processed there. Synapse (1.163) then drops it: "Ignoring
        PDU for unknown room_id", answering 200 with the PDU left out of the ``pdus`` results, and the
        missed event stays hidden from it until the room's next event. The S2S spec says nothing about
        PDUs racing a join, so we do not rely on the joiner queueing them (ours does): a copy sent again
        once the joiner has had time to finish the join is a known event to it if the first arrived
        (receivers ignore events they have, S2S "Checks performed on receipt of a PDU"), and delivers the
        dummy, and with it the missed events as its prev_events, if it did not."""
        if self._sender is None:
            return
        for delay in JOINER_RESEND_DELAYS:
            await asyncio.sleep(delay)
            try:
                await self._sender.send_pdu_to([joiner], event_id, room_id)
            except Exception:
                logger.exception("could not send %s to the joiner %s again", event_id, joiner)
                return

    async def wait_for_healing(self) -> None:
        """For tests and shutdown: let scheduled healing finish. The repeated sends of dummy events to
        joiners are a courtesy on top of the durable first send, so they are cancelled, not awaited."""
        tasks = [t for t in self._healing.values() if not t.done()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in list(self._resends):
            task.cancel()
        if self._resends:
            await asyncio.gather(*self._resends, return_exceptions=True)


def _key_ids(pdu: Pdu, server: str) -> list[str]:
    sigs = pdu.signatures.get(server, {})
    return [k for k in sigs if k.startswith("ed25519:")]


def _ref_id(ref: Any) -> str:
    return str(ref[0] if isinstance(ref, list) else ref)


def stripped_room_state(raw: Any, rv: RoomVersion, room_id: str) -> list[dict[str, Any]]:
    """The invite's ``invite_room_state`` (or a send_knock answer's ``knock_room_state``, with the same
    rules since v1.16), reduced to stripped state for our clients (CS "Stripped
    state": sender, type, state_key and content only).

    S2S "Inviting to a room" (v1.16): the entries are full PDUs of the room, the m.room.create event
    among them; servers SHOULD refuse (M_INVALID_PARAM) a list that breaks this in room versions 12+ and
    MAY in older ones. We check the create event, the format and the room of each entry for v12+ and
    accept older rooms' lists as they come (senders before v1.16, Synapse 1.155 among them, send bare
    stripped events). Signatures of the entries are not checked: the stripped state is only a hint for
    the invitee, and the join verifies the real state."""
    if not isinstance(raw, list):
        return []
    entries = [e for e in raw if isinstance(e, dict)]
    if rv.room_id_from_create_event:
        has_create = False
        for entry in entries:
            try:
                pdu = Pdu(entry, rv)
            except ProtocolError as e:
                raise FederationRequestError(
                    400, "M_INVALID_PARAM", f"invite_room_state: malformed event: {e.message}"
                ) from None
            if pdu.room_id != room_id:
                raise FederationRequestError(
                    400, "M_INVALID_PARAM", "invite_room_state: an event of another room"
                )
            has_create = has_create or (pdu.type == "m.room.create" and pdu.state_key == "")
        if not has_create:
            raise FederationRequestError(
                400, "M_INVALID_PARAM", "invite_room_state lacks the m.room.create event"
            )
    out = []
    for entry in entries:
        if isinstance(entry.get("type"), str) and isinstance(entry.get("content"), dict):
            out.append({k: entry[k] for k in ("type", "state_key", "content", "sender") if k in entry})
    return out
