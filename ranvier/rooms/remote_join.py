"""The joining server's side: joins, invites and invite rejections that go over federation.

Joining (S2S "Joining Rooms"): make_join against each candidate server in turn, sign the template,
send_join v2, verify everything the resident sent (signatures, hashes, the auth of every state and
auth-chain event), persist the auth chain and state as outliers and the join in the timeline.

The join gap, from this side: PDUs of the room that arrive over /send while the join is in flight are
queued durably (``pending_join_pdus``) and processed once the join is persisted, so the resident's dummy
event (which may arrive before our send_join returns) is not lost. And since a resident without the fix
never sends one, after the join we ask the resident for the room's newest events (``fetch_gap_events``:
its MSC4370 extremities endpoint, else ``/timestamp_to_event``); any we lack were created in the gap, and
we pull them (with ``/get_missing_events``, the walk bounded by our join's prev events) and handle them like
any received PDU. In a room joined with partial state, an event continuing our join's prev events is
authorised against the partial state the join was made on (``partial_join_points``), not against a full
state fetched at it, and re-checked at the resync.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from ..clock import now_ms
from ..federation.client import DestinationUnreachable, FederationClient, FederationError, path_segment
from ..federation.keys import Keyring
from ..protocol.auth import check_auth_events_list, check_auth_rules
from ..protocol.errors import AuthRejected, ProtocolError, SignatureError
from ..protocol.events import Pdu, StateKey
from ..protocol.identifiers import server_of
from ..protocol.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version
from ..protocol.signing import SigningKey
from ..storage.interfaces import TOPO_SCALE, EventToPersist
from ..storage.protocols.composite import HasEvents, HasPartialState, HasPendingJoinPdus, HasRooms, HasState
from .incoming_fetch import RemoteEvents
from .local_events import LocalEventCreator
from .membership import MembershipError
from .membership_template import sign_membership_template
from .partial_auth import with_cited_members
from .persister import EventPersister, TxnHook
from .resident import ResidentMembership
from .state import StateService
from .stripped_state import room_state_for_remote

logger = logging.getLogger(__name__)

# MSC4370 (unstable): a server's current forward extremities in a room.
MSC4370_PATH = "/_matrix/federation/unstable/org.matrix.msc4370/extremities/"
GAP_FETCH_LIMIT = 50
GAP_CHECK_TIMEOUT = 20.0
# How long after our join late events concurrent with it are placed before it in /messages.
ANCHOR_SECONDS = 300.0


class RemoteJoinStorage(HasRooms, HasEvents, HasState, HasPendingJoinPdus, HasPartialState, Protocol):
    """What rooms/remote_join.py asks of storage."""


@dataclasses.dataclass
class _GapAnchor:
    join_event_id: str
    topo_depth: int
    topo_order: int
    created: float
    placed: int = 0
    descendants: set[str] = dataclasses.field(default_factory=set)
    # The frontier our join was made at (its prev events) and the events placed before the join since:
    # only an event continuing them (every prev event among them) was made in the gap, concurrently with
    # the join. One whose prev events we do not hold (a hole left by an outage just after the join) keeps
    # the default position, the depth order every other server uses: the chaos harness saw such events,
    # 30 depths after the join, put before it.
    before: set[str] = dataclasses.field(default_factory=set)

    def __post_init__(self) -> None:
        self.descendants.add(self.join_event_id)


CREATE_KEY: StateKey = ("m.room.create", "")
ProcessPdus = Callable[[str, Sequence[Any]], Awaitable[Any]]


# Errors of the joining side, as the client sees them. A server that cannot be reached at all (no such
# name, connection refused, no answer in time) is 404 M_NOT_FOUND naming that server and the reason: the
# client named it (in a user id, an alias or a via), and a client request is answered with a 4xx, never a
# 5xx (Synapse answers 500 for an invite to such a server, synapse#2047, and 502 for a join "via any
# server"; issue 12 asks for a 4xx). A broken answer from a server that did answer is 502 M_UNKNOWN: that
# server misbehaved. A refusal the other server states (403 M_FORBIDDEN, 404 M_NOT_FOUND, an incompatible
# room version) is passed on with its status and errcode. A 401 from the other server means it could not
# authenticate *us* (often: it could not fetch our key), which is not the client's fault: 502 too. Nothing
# on this path is a 500.
PASSED_ON_STATUSES = frozenset({400, 403, 404})
UNREACHABLE = 404


def remote_failure(server: str, action: str, e: FederationError) -> MembershipError:
    """The client's error for a federation request to ``server`` (for ``action``) that failed."""
    if isinstance(e, DestinationUnreachable):
        return MembershipError(
            "M_NOT_FOUND",
            f"could not {action}: {server} could not be reached ({e.reason})",
            UNREACHABLE,
            unreachable=True,
        )
    if e.status in PASSED_ON_STATUSES and e.errcode and e.errcode.startswith("M_"):
        return MembershipError(e.errcode, f"{server} refused to {action}: {e.message[:300]}", e.status)
    return MembershipError(
        "M_UNKNOWN",
        f"could not {action}: {server} answered {e.status} {e.errcode or ''} {e.message[:300]}",
        502,
    )


class KeyFetchFailed(ValueError):
    """The resident's answer could not be verified because signing keys could not be fetched."""


class RemoteMembershipService:
    def __init__(
        self,
        storage: RemoteJoinStorage,
        state: StateService,
        persister: EventPersister,
        creator: LocalEventCreator,
        resident: ResidentMembership,
        client: FederationClient,
        keyring: Keyring,
        server_name: str,
        signing_key: SigningKey,
        *,
        gap_check: bool = True,
        partial_state_joins: bool = True,
    ) -> None:
        self._storage = storage
        self._state = state
        self._persister = persister
        self._creator = creator
        self._resident = resident
        self._client = client
        self._keyring = keyring
        self._remote = RemoteEvents(client, keyring)
        self.server_name = server_name
        self._signing_key = signing_key
        self.gap_check = gap_check
        # Ask send_join for partial state (omit_members, MSC3706); the resync then fetches the rest.
        self.partial_state_joins = partial_state_joins
        # Set by the app: told of every room joined with partial state, once the join is committed.
        self.on_partial_join: Callable[[str], None] | None = None
        self._joining: dict[str, int] = {}
        self._anchors: dict[str, _GapAnchor] = {}
        self._join_locks: dict[str, asyncio.Lock] = {}
        # Set by the app once the intake exists (the intake itself asks us whether a room is joining).
        self.process_pdus: ProcessPdus | None = None
        # Test hooks: awaited between make_join and send_join (the join gap, made wide on purpose), and
        # between send_join's answer and persisting the join (a slow join, while PDUs keep arriving).
        self.before_send_join: Callable[[str], Awaitable[None]] | None = None
        self.after_send_join: Callable[[str], Awaitable[None]] | None = None
        # Told each join phase's duration (make_join, send_join, persist) and how many of a resident's
        # newest events a join missed (the join gap); set by the app for the metrics.
        self.on_join_phase: Callable[[str, float], None] | None = None
        self.on_gap_events: Callable[[int], None] | None = None

    # -- the queue of PDUs that arrive during a join ---------------------------------------------------

    def is_joining(self, room_id: str) -> bool:
        return self._joining.get(room_id, 0) > 0

    async def queue_pdu(self, room_id: str, origin: str, raw: dict[str, Any]) -> None:
        """Durably keep a PDU for a room whose join is in flight (committed before /send answers)."""
        await self._storage.pending_join_pdus.append(room_id, origin, raw)
        if not self.is_joining(room_id):
            # The join finished while this PDU was being queued, after its queue was drained.
            asyncio.get_running_loop().create_task(self.process_queued(room_id))

    async def process_queued(self, room_id: str) -> None:
        if self.process_pdus is None:
            return
        while True:
            queued = await self._storage.pending_join_pdus.list_for_room(room_id, limit=50)
            if not queued:
                return
            by_origin: dict[str, list[Any]] = {}
            for item in queued:
                by_origin.setdefault(item.origin, []).append(item.pdu)
            for origin, raws in by_origin.items():
                await self.process_pdus(origin, raws)
            await self._storage.pending_join_pdus.delete(room_id, [item.seq for item in queued])

    async def process_all_queued(self) -> None:
        """At start-up: queued PDUs of joins that finished (or died) before a crash."""
        for room_id in await self._storage.pending_join_pdus.rooms_with_pending():
            if await self._storage.rooms.get_room_version(room_id) is not None:
                await self.process_queued(room_id)

    # -- joins -----------------------------------------------------------------------------------------

    async def join(self, user_id: str, room_id: str, servers: list[str], content: dict[str, Any]) -> str:
        lock = self._join_locks.setdefault(room_id, asyncio.Lock())
        async with lock:
            self._joining[room_id] = self._joining.get(room_id, 0) + 1
            try:
                server = await self._join_via_any(user_id, room_id, servers, content)
            finally:
                self._joining[room_id] -= 1
        await self.process_queued(room_id)
        if self.gap_check:
            try:
                await self.fetch_gap_events(server, room_id, user_id)
            except Exception:
                logger.exception("joiner-side gap check for %s via %s failed", room_id, server)
        return room_id

    async def _join_via_any(
        self, user_id: str, room_id: str, servers: list[str], content: dict[str, Any]
    ) -> str:
        """Try each server in turn; if none works, the most telling error: a refusal a server stated
        (403, 404, ...) over a network failure or a broken answer (502)."""
        failures: list[MembershipError] = []
        for server in servers:
            try:
                await self._join_via(server, user_id, room_id, content)
                return server
            except FederationError as e:
                failure = remote_failure(server, f"join {room_id}", e)
            except MembershipError as e:
                failure = e
            except (ProtocolError, ValueError) as e:
                # The server answered, but with something we cannot use (including events whose
                # signatures could not be checked): its fault, or the network's, not the client's.
                failure = MembershipError("M_UNKNOWN", f"could not join {room_id} via {server}: {e}", 502)
            logger.info("joining %s via %s failed: %s", room_id, server, failure.message)
            failures.append(failure)
        if not failures:
            raise MembershipError("M_NOT_FOUND", f"no known server to join {room_id} through", 404)
        stated = [f for f in failures if f.status != 502 and not f.unreachable]
        if stated:
            raise stated[0]
        if len(failures) == 1:
            raise failures[0]
        # None answered usefully: 404 when none could be reached at all, 502 when one answered badly.
        unreachable = all(f.unreachable for f in failures)
        raise MembershipError(
            "M_NOT_FOUND" if unreachable else "M_UNKNOWN",
            f"could not join {room_id} via any server: " + "; ".join(f.message for f in failures),
            UNREACHABLE if unreachable else 502,
        )

    def _phase(self, phase: str, start: float) -> float:
        now = time.perf_counter()
        if self.on_join_phase is not None:
            self.on_join_phase(phase, now - start)
        return now

    async def _join_via(self, server: str, user_id: str, room_id: str, content: dict[str, Any]) -> None:
        start = time.perf_counter()
        answer = await self._client.make_join(server, room_id, user_id, list(KNOWN_ROOM_VERSIONS))
        start = self._phase("make_join", start)
        rv = get_room_version(answer.get("room_version", "1"))
        template = answer.get("event")
        if not isinstance(template, dict):
            raise ValueError("make_join answered without an event template")
        join = self._sign_template(rv, template, user_id, content)
        if self.before_send_join is not None:
            await self.before_send_join(room_id)
        start = time.perf_counter()
        response = await self._client.send_join_v2(
            server, room_id, join.event_id, join.json, omit_members=self.partial_state_joins
        )
        start = self._phase("send_join", start)
        if self.after_send_join is not None:
            await self.after_send_join(room_id)
        returned = response.get("event")
        if isinstance(returned, dict):
            # Restricted joins come back co-signed by the resident; keep that copy if it is our event.
            try:
                signed = Pdu(returned, rv)
                if signed.event_id == join.event_id:
                    join = signed
            except ProtocolError:
                pass
        start = time.perf_counter()
        await self._persist_join(server, room_id, rv, join, response)
        self._phase("persist", start)

    def _sign_template(
        self, rv: RoomVersion, template: dict[str, Any], user_id: str, content: dict[str, Any]
    ) -> Pdu:
        if template.get("type") != "m.room.member" or template.get("state_key") != user_id:
            raise ValueError("make_join returned a template that is not our join")
        raw_content = template.get("content")
        theirs: dict[str, Any] = raw_content if isinstance(raw_content, dict) else {}
        merged = dict(content)
        if "join_authorised_via_users_server" in theirs:
            merged["join_authorised_via_users_server"] = theirs["join_authorised_via_users_server"]
        merged["membership"] = "join"

        return sign_membership_template(
            rv,
            template,
            room_id=template.get("room_id"),
            user_id=user_id,
            content=merged,
            server_name=self.server_name,
            signing_key=self._signing_key,
        )

    async def _persist_join(
        self, server: str, room_id: str, rv: RoomVersion, join: Pdu, response: dict[str, Any]
    ) -> None:
        state_raw = response.get("state")
        chain_raw = response.get("auth_chain")
        if not isinstance(state_raw, list) or not isinstance(chain_raw, list):
            raise ValueError("send_join answered without state and auth_chain")
        # The resident just answered us: a key of it that we failed to fetch a moment ago is fetched again
        # now rather than after the back-off (the other servers' keys follow the keyring's back-off).
        await self._keyring.prefetch(_signing_keys_of(server, [*chain_raw, *state_raw]), on_demand=True)
        # Steps 1-3 (format, signatures, hashes) for everything the resident sent.
        events: dict[str, Pdu] = {
            p.event_id: p for p in await self._remote.verified([*chain_raw, *state_raw], room_id, rv)
        }
        state_ids = {p.event_id for p in await self._remote.verified(state_raw, room_id, rv)}
        accepted = self._authorise_all(rv, room_id, events)
        # MSC3706: a resident that honoured omit_members says so and lists the room's servers; one that
        # ignored it (or that we did not ask) sent the full state, and the join is a full one.
        servers_in_room = partial_servers(response) if self.partial_state_joins else None
        state: dict[StateKey, str] = {}
        for event_id in state_ids:
            pdu = accepted.get(event_id)
            if pdu is not None and pdu.state_key is not None:
                state[(pdu.type, pdu.state_key)] = event_id
        create = accepted.get(state.get(CREATE_KEY, ""))
        if create is None:
            failures = self._key_fetch_failures([*chain_raw, *state_raw])
            if failures:
                raise KeyFetchFailed(f"the room's state from {server} could not be verified: {failures}")
            raise ValueError("the resident's state has no valid m.room.create event")
        state_events = {k: accepted[v] for k, v in state.items()}
        if servers_in_room is not None:
            # Partial state lacks most members: the join is checked with the members it cites itself
            # (e.g. the authorising user of a restricted join) where the state has none.
            state_events = with_cited_members(join, state_events, accepted)
        try:
            check_auth_rules(join, state_events)
        except AuthRejected as e:
            raise MembershipError(
                "M_FORBIDDEN", f"the join is not allowed by the room's state: {e.reason}", 403
            ) from None

        await self._storage.rooms.store_room(room_id, rv.identifier, create.sender)
        outliers = [EventToPersist(pdu=p, outlier=True) for p in _auth_order(list(accepted.values()))]
        mark_partial: TxnHook | None = None
        if servers_in_room is not None:
            servers = servers_in_room

            async def mark_partial(txn: Any, room: str, written: list[tuple[EventToPersist, int]]) -> None:
                # With the join, in its transaction: a crash never leaves a partial room unmarked.
                await self._storage.partial_state.start_txn(txn, room, join.event_id, server, servers)

        async with self._persister.room_lock(room_id):
            if outliers:
                await self._storage.events.persist_events(room_id, outliers)
            await self._persister.persist(
                room_id, rv, [EventToPersist(pdu=join, state_before=state)], extra_txn_hook=mark_partial
            )
            meta = await self._storage.events.get_event_meta(join.event_id)
            if meta is not None:
                self.anchor_join(room_id, join, meta.topo_depth, meta.topo_order)
        logger.info(
            "joined %s via %s: %d state events, %d auth events%s",
            room_id,
            server,
            len(state),
            len(accepted),
            "" if servers_in_room is None else f", partial state ({len(servers_in_room)} servers in room)",
        )
        if servers_in_room is not None:
            self._storage.partial_state.published_start(room_id)
            if self.on_partial_join is not None:
                self.on_partial_join(room_id)

    def _key_fetch_failures(self, raws: Sequence[Any]) -> str:
        """Why the keys of servers that signed ``raws`` could not be fetched ("" when none failed)."""
        signers: set[str] = set()
        for raw in raws:
            sigs = raw.get("signatures") if isinstance(raw, dict) else None
            if isinstance(sigs, dict):
                signers.update(s for s in sigs if isinstance(s, str))
        failures = [f for s in sorted(signers) if (f := self._keyring.fetch_failure(s)) is not None]
        return "; ".join(failures)

    def _authorise_all(self, rv: RoomVersion, room_id: str, events: dict[str, Pdu]) -> dict[str, Pdu]:
        """Check every event against its own auth events, in auth order; the rejected are left out."""
        accepted: dict[str, Pdu] = {}
        create = next((p for p in events.values() if p.type == "m.room.create" and p.state_key == ""), None)
        for pdu in _auth_order(list(events.values())):
            try:
                cited = [accepted[a] for a in pdu.auth_event_ids if a in accepted]
                if len(cited) != len(pdu.auth_event_ids):
                    raise ValueError("an auth event is missing or was rejected")
                auth_map = check_auth_events_list(pdu, cited)
                if rv.room_id_from_create_event and create is not None and pdu is not create:
                    auth_map[CREATE_KEY] = create
                check_auth_rules(pdu, auth_map)
            except (AuthRejected, ValueError) as e:
                logger.info("send_join response: %s fails auth: %s", pdu.event_id, e)
                continue
            accepted[pdu.event_id] = pdu
        return accepted

    # -- the gap, from the joiner's side -------------------------------------------------------------

    async def fetch_gap_events(self, server: str, room_id: str, user_id: str) -> int:
        """Ask ``server`` for the room's newest events and pull in what our join did not reference.

        The newest events come from the MSC4370 extremities endpoint where the resident serves it, else
        from ``/timestamp_to_event`` (dir=b, now); whatever of them we lack is fetched with
        ``/get_missing_events`` between our forward extremities and them, plus the events themselves,
        and handled like any received PDU. Returns how many newest events were missing."""
        tips = await self._newest_events(server, room_id)
        missing = sorted(set(tips) - await self._storage.events.have_events(tips))
        if not missing or self.process_pdus is None:
            return 0
        raws: list[Any] = []
        ours = await self._storage.events.get_forward_extremities(room_id)
        # The walk back from the newest events stops at our join's prev events (the frontier it was made
        # at, and the gap events placed before it since) as well as at our extremities: what precedes
        # them is history, which handled as new events would each need the (full) state at a hole.
        anchor = self._anchors.get(room_id)
        earliest = sorted({*ours, *(anchor.before if anchor is not None else ())})
        try:
            between = await self._client.get_missing_events(
                server, room_id, earliest_events=earliest, latest_events=missing, limit=GAP_FETCH_LIMIT
            )
            raws.extend(p for p in between.get("events", []) if isinstance(p, dict))
        except FederationError as e:
            logger.info("get_missing_events from %s for the join gap failed: %s", server, e)
        for event_id in missing:
            try:
                got = await self._client.get_event(server, event_id)
            except FederationError as e:
                logger.info("could not fetch gap event %s from %s: %s", event_id, server, e)
                continue
            raws.extend(p for p in got.get("pdus", []) if isinstance(p, dict))
        if self.on_gap_events is not None:
            self.on_gap_events(len(missing))
        if raws:
            logger.info(
                "join gap in %s: %d of the newest events of %s were unknown here; pulled %d events",
                room_id,
                len(missing),
                server,
                len(raws),
            )
            await self.process_pdus(server, raws)
        return len(missing)

    async def _newest_events(self, server: str, room_id: str) -> list[str]:
        try:
            answer = await self._client.request(
                "GET", server, MSC4370_PATH + path_segment(room_id), timeout=GAP_CHECK_TIMEOUT
            )
            tips = answer.get("prev_events") if isinstance(answer, dict) else None
            if isinstance(tips, list) and tips:
                return [t for t in tips if isinstance(t, str)]
        except FederationError as e:
            logger.debug("%s has no MSC4370 extremities endpoint (%s); using timestamp_to_event", server, e)
        try:
            found = await self._client.timestamp_to_event(server, room_id, now_ms(), "b")
        except FederationError as e:
            logger.info("no newest event from %s for the join gap check: %s", server, e)
            return []
        event_id = found.get("event_id")
        return [event_id] if isinstance(event_id, str) else []

    # -- where the gap events go in the timeline --------------------------------------------------------

    def anchor_join(self, room_id: str, join: Pdu, topo_depth: int, topo_order: int) -> None:
        """Remember our join so that events concurrent with it, learnt after it, are ordered before it."""
        anchor = _GapAnchor(join.event_id, topo_depth, topo_order, time.monotonic())
        anchor.before.update(join.prev_event_ids)
        self._anchors[room_id] = anchor

    def place(self, room_id: str, batch: Sequence[EventToPersist]) -> Sequence[EventToPersist]:
        """The persister's placement policy: events neither our join nor descended from it, persisted
        within ANCHOR_SECONDS of the join, were created in the gap (or before it): /messages shows them
        just before the join, in the order they arrive (parents first). They keep new stream orderings,
        so /sync still tells clients about them."""
        anchor = self._anchors.get(room_id)
        if anchor is None:
            return batch
        if time.monotonic() - anchor.created > ANCHOR_SECONDS:
            del self._anchors[room_id]
            return batch
        out = []
        for item in batch:
            pdu = item.pdu
            after_join = any(p in anchor.descendants for p in pdu.prev_event_ids) or (
                # Deeper than any event made during the handshake can be: it comes after the join even
                # when the events linking it to the join were not seen here in order (a hole filled by
                # backfill, a catch-up after an outage).
                pdu.depth > anchor.topo_depth + GAP_FETCH_LIMIT
            )
            if item.outlier or item.backfilled or pdu.event_id == anchor.join_event_id:
                if after_join and not item.outlier:
                    anchor.descendants.add(pdu.event_id)
                out.append(item)
            elif after_join:
                anchor.descendants.add(pdu.event_id)
                out.append(item)
            elif not all(p in anchor.before for p in pdu.prev_event_ids):
                out.append(item)  # its parents are not the join's frontier nor gap events: unknown here
            elif anchor.placed + 1 >= TOPO_SCALE:
                out.append(item)  # no room left before the join: the default position
            else:
                anchor.placed += 1
                anchor.before.add(pdu.event_id)
                position = (anchor.topo_depth, anchor.topo_order - TOPO_SCALE + anchor.placed)
                out.append(dataclasses.replace(item, topo_position=position))
        return out

    # -- invites and their rejection ------------------------------------------------------------------

    async def invite(self, sender: str, room_id: str, target: str, content: dict[str, Any]) -> Pdu:
        pdu, state_before = await self._creator.build_unpersisted(
            room_id, sender, "m.room.member", content, target
        )
        # S2S "Inviting to a room" (v1.16): invite_room_state MUST hold the m.room.create event and every
        # entry formatted per the room version, i.e. full PDUs (the receiver validates them and strips
        # them for its clients itself). Synapse 1.163 warns about and drops bare stripped events.
        stripped = await room_state_for_remote(self._storage, room_id)
        destination = server_of(target)
        try:
            answer = await self._client.invite_v2(
                destination,
                room_id,
                pdu.event_id,
                room_version=pdu.room_version.identifier,
                event=pdu.json,
                invite_room_state=stripped,
            )
        except FederationError as e:
            raise remote_failure(destination, f"invite {target}", e) from None
        try:
            signed = Pdu(answer.get("event", {}), pdu.room_version)
        except ProtocolError as e:
            raise MembershipError(
                "M_UNKNOWN", f"{destination} answered the invite with an invalid event: {e.message}", 502
            ) from None
        if signed.event_id != pdu.event_id:
            raise MembershipError("M_UNKNOWN", f"{destination} returned a different invite", 502)
        # The invitee's server just answered: fetch its key again now if an earlier fetch failed.
        await self._keyring.prefetch(
            [(destination, k) for k in signed.signatures.get(destination, {})], on_demand=True
        )
        try:
            signed.check_signature_of(destination, self._keyring.lookup)
        except SignatureError as e:
            failure = self._keyring.fetch_failure(destination)
            if failure is not None:
                raise MembershipError(
                    "M_UNKNOWN", f"could not check the invite's signature: {failure}", 502
                ) from None
            raise MembershipError(
                "M_FORBIDDEN", f"{destination} did not sign the invite: {e.message}", 403
            ) from None
        async with self._persister.room_lock(room_id):
            await self._creator.persist_local(signed, state_before)
        return signed

    async def reject_invite(self, user_id: str, room_id: str, content: dict[str, Any]) -> None:
        member = await self._storage.state.get_membership(room_id, user_id)
        servers = []
        if member is not None:
            invite = await self._storage.events.get_event(member[1], allow_rejected=True)
            if invite is not None:
                servers.append(server_of(invite.sender))
                # A knock (ours) is rescinded through the servers whose events the room's state showed us.
                for key in ("invite_room_state", "knock_room_state"):
                    shown = invite.unsigned.get(key)
                    for entry in shown if isinstance(shown, list) else []:
                        sender = entry.get("sender") if isinstance(entry, dict) else None
                        if isinstance(sender, str) and ":" in sender:
                            servers.append(server_of(sender))
        if ":" in room_id[1:]:
            servers.append(server_of(room_id))
        errors = []
        for server in dict.fromkeys(s for s in servers if s != self.server_name):
            try:
                answer = await self._client.make_leave(server, room_id, user_id)
                rv = get_room_version(answer.get("room_version", "1"))
                template = answer.get("event") or {}
                template["content"] = {**content, "membership": "leave"}
                leave = self._sign_template_leave(rv, template, user_id)
                await self._client.send_leave_v2(server, room_id, leave.event_id, leave.json)
                await self._resident.remember_out_of_room_membership(leave)
                return
            except FederationError as e:
                errors.append(remote_failure(server, "reject the invite", e).message)
            except (ProtocolError, ValueError) as e:
                errors.append(f"{server}: {e}")
        raise MembershipError(
            "M_UNKNOWN", f"could not leave {room_id} (invite or knock): {'; '.join(errors)}", 502
        )

    def _sign_template_leave(self, rv: RoomVersion, template: dict[str, Any], user_id: str) -> Pdu:
        if template.get("type") != "m.room.member" or template.get("state_key") != user_id:
            raise ValueError("make_leave returned a template that is not our leave")
        content = template.get("content")
        if not isinstance(content, dict) or content.get("membership") != "leave":
            raise ValueError("make_leave returned a template that is not our leave")
        return sign_membership_template(
            rv,
            template,
            room_id=template.get("room_id"),
            user_id=user_id,
            content=content,
            server_name=self.server_name,
            signing_key=self._signing_key,
        )

    async def resolve_alias(self, alias: str) -> tuple[str, list[str]]:
        try:
            answer = await self._client.query_directory(server_of(alias), alias)
        except DestinationUnreachable as e:
            raise remote_failure(server_of(alias), f"look up {alias}", e) from None
        except FederationError as e:
            raise MembershipError(
                "M_NOT_FOUND", f"room alias {alias} not found: {e.message[:300]}", 404
            ) from None
        room_id = answer.get("room_id")
        servers = answer.get("servers")
        if not isinstance(room_id, str):
            raise MembershipError("M_NOT_FOUND", f"room alias {alias} not found", 404)
        return room_id, [s for s in servers if isinstance(s, str)] if isinstance(servers, list) else []


def partial_servers(response: dict[str, Any]) -> list[str] | None:
    """send_join's ``servers_in_room`` when the answer has ``members_omitted: true`` (MSC3706), else None
    (a full answer). A partial answer without a usable server list is refused: the resync would have
    nowhere to ask."""
    if response.get("members_omitted") is not True:
        return None
    servers = response.get("servers_in_room")
    if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers) or not servers:
        raise ValueError("send_join omitted the members but gave no servers_in_room")
    return list(dict.fromkeys(servers))


def _signing_keys_of(server: str, raws: Sequence[Any]) -> set[tuple[str, str]]:
    """The (server, key id) pairs with which ``server`` signed any of the raw events."""
    keys: set[tuple[str, str]] = set()
    for raw in raws:
        sigs = raw.get("signatures") if isinstance(raw, dict) else None
        by_server = sigs.get(server) if isinstance(sigs, dict) else None
        if isinstance(by_server, dict):
            keys.update((server, k) for k in by_server if isinstance(k, str))
    return keys


def _auth_order(pdus: list[Pdu]) -> list[Pdu]:
    """Events ordered so that each comes after the auth events it cites (then by depth, then id)."""
    by_id = {p.event_id: p for p in pdus}
    done: set[str] = set()
    out: list[Pdu] = []
    for start in sorted(pdus, key=lambda p: (p.depth, p.event_id)):
        stack = [(start, False)]
        while stack:
            pdu, expanded = stack.pop()
            if pdu.event_id in done:
                continue
            if expanded:
                done.add(pdu.event_id)
                out.append(pdu)
                continue
            stack.append((pdu, True))
            for a in sorted(pdu.auth_event_ids, reverse=True):
                if a in by_id and a not in done:
                    stack.append((by_id[a], False))
    return out
