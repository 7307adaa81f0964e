"""The background resync of rooms joined with partial state (MSC3706 / MSC3902, as Synapse does it).

After a join whose send_join answer omitted the members, the room is usable at once; this fetches the rest:

1. the state ids at our join (``/state_ids``, the state before it), from the servers the resident listed in
   ``servers_in_room``, the resident first, in turn; the answer is kept (``partial_state_rooms``), so a
   restart does not ask again;
2. the events of it we lack, through ``/state`` when many are missing or ``/event`` one by one, plus the
   auth events they cite that we lack; signatures and hashes verified (keys through the keyring: the
   origin, then the notaries), each event authorised against its own auth events, persisted as outliers
   as soon as they are checked (a restart fetches only what was not persisted);
3. under the room's lock, the state of every event persisted since the join is recomputed with the full
   state (the join's: the fetched state; later ones: resolved from their prev events', or, where a prev
   event is not held, their partial state completed with the members it lacked), each is re-authorised
   against it and one that now fails is rejected (S2S "Checks performed on receipt of a PDU", step 5; it
   disappears from timelines), the current state and membership index are rewritten, and the room is
   marked complete, all in one transaction that takes a stream position so /sync notices.

It never gives up: a failed pass over the servers is retried with exponential back-off (bounded), each
failure logged with its reason and counted, and the last one shown to the operator (admin API, metric).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..clock import now_ms
from ..federation.client import FederationClient, FederationError
from ..federation.keys import Keyring
from ..protocol.events import Pdu
from ..protocol.identifiers import server_of
from ..protocol.room_versions import RoomVersion
from ..storage.interfaces import EventToPersist
from ..storage.protocols.composite import Storage
from ..storage.sql.partial_state import PartialStateRoom, StateRewrite
from .incoming_fetch import RemoteEvents
from .pdu_checks import Load, auth_order, check_against_auth_events, check_against_state
from .persister import EventPersister
from .state import StateIds, StateService

logger = logging.getLogger(__name__)

MEMBER = "m.room.member"
STATE_IDS_TIMEOUT = 60.0
# Rounds of fetching auth events that fetched events cite and we lack (an auth chain is shallow).
MAX_AUTH_ROUNDS = 10
# Outliers persisted per transaction: a restart keeps what the committed ones hold.
PERSIST_CHUNK = 1000
COUNT_TIMEOUT = 30.0  # the resident's /hierarchy answer (the room's member count while partial)


class ResyncFailed(Exception):
    """One attempt at one server failed; the message says why (shown to the operator)."""


class PartialStateResync:
    def __init__(
        self,
        storage: Storage,
        state: StateService,
        persister: EventPersister,
        client: FederationClient,
        keyring: Keyring,
        server_name: str,
        *,
        retry_initial: float = 2.0,
        retry_max: float = 600.0,
    ) -> None:
        self._storage = storage
        self._state = state
        self._persister = persister
        self._client = client
        self._keyring = keyring
        self._remote = RemoteEvents(client, keyring)
        self.server_name = server_name
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._done: dict[str, asyncio.Event] = {}
        self._checks: set[asyncio.Task[None]] = set()
        # Set by the app for the metrics: a failed attempt, and the number of rooms still partial.
        self.on_failure: Callable[[], None] | None = None
        self.on_partial_rooms: Callable[[int], None] | None = None
        # Test hook: awaited before each attempt (to hold a resync still, e.g. to kill the process mid-way).
        self.before_attempt: Callable[[str, str], Any] | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self, room_id: str) -> None:
        """Resync ``room_id`` in the background (no-op if it is already running)."""
        done = self._done.get(room_id)
        if done is not None and done.is_set():
            del self._done[room_id]  # joined with partial state again after an earlier completion
        task = self._tasks.get(room_id)
        if task is not None and not task.done():
            return
        self._tasks[room_id] = asyncio.get_running_loop().create_task(self._run(room_id))

    async def resume_all(self, owned: Callable[[str], bool] | None = None) -> None:
        """At start-up: every room still partial resumes where its durable progress left it (with workers,
        each room's by the process that persists it: ``owned``)."""
        rooms = await self._storage.partial_state.list_rooms()
        await self._report_count()
        for record in rooms:
            if owned is not None and not owned(record.room_id):
                continue
            logger.info(
                "resuming the partial-state resync of %s (%d attempts so far)",
                record.room_id,
                record.attempts,
            )
            self.start(record.room_id)

    async def stop(self) -> None:
        tasks = [t for t in self._tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def notice_change(self, room_id: str) -> None:
        """Another process changed ``room_id``'s state (ranvier.workers): if requests here wait for its
        full state, see whether its resync (run by the room's persister) completed."""
        done = self._done.get(room_id)
        if done is None or done.is_set():
            return

        async def check() -> None:
            if not await self._storage.partial_state.is_partial(room_id):
                done.set()

        task = asyncio.get_running_loop().create_task(check())
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def wait_for_full_state(self, room_id: str, timeout: float) -> bool:
        """Wait until ``room_id`` is no longer partial, at most ``timeout`` seconds; whether it is not."""
        if not await self._storage.partial_state.is_partial(room_id):
            return True
        event = self._done.setdefault(room_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        return not await self._storage.partial_state.is_partial(room_id)

    async def wait_if_partial(self, room_id: str, timeout: float) -> bool:
        """For requests that need the full membership: if ``room_id`` is partial, wait for its full state
        (at most ``timeout`` seconds; then the caller answers with what is known). Whether it was partial."""
        if not await self._storage.partial_state.is_partial(room_id):
            return False
        if not await self.wait_for_full_state(room_id, timeout):
            logger.info(
                "%s is still partial after %.0f s: answering with the members known", room_id, timeout
            )
        return True

    async def wait_for_first_attempts(self, room_ids: Iterable[str], timeout: float) -> None:
        """Wait (at most ``timeout`` seconds in all) for those of ``room_ids`` whose resync is still in its
        first attempt: an initial /sync without lazy-loading leaves partial rooms out, and right after a
        join of a small room the full state is a moment away. A room whose resync failed before (stuck,
        retrying) is not waited for."""
        waits = []
        for room_id in room_ids:
            record = await self._storage.partial_state.get(room_id)
            if record is not None and not record.complete and record.attempts == 0:
                waits.append(self._done.setdefault(room_id, asyncio.Event()).wait())
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), timeout)

    async def _report_count(self) -> None:
        if self.on_partial_rooms is not None:
            self.on_partial_rooms(len(await self._storage.partial_state.list_rooms()))

    # -- the retry loop -------------------------------------------------------------------------------

    async def _run(self, room_id: str) -> None:
        # Beside the resync: the room's member count for /sync's summary meanwhile (cancelled with it).
        count = asyncio.get_running_loop().create_task(self._fetch_joined_count(room_id))
        try:
            await self._resync(room_id)
        finally:
            count.cancel()

    async def _fetch_joined_count(self, room_id: str) -> None:
        """Ask the resident we joined through for the room's joined member count (S2S GET /hierarchy's
        ``num_joined_members``; send_join's answer with members omitted carries no count, and the few
        members of the partial state would make /sync's summary say 6 of a 10,000-member room). A failure
        only leaves the summary counting the members held."""
        record = await self._storage.partial_state.get(room_id)
        if record is None or record.complete or record.joined_via == self.server_name:
            return
        try:
            answer = await asyncio.wait_for(
                self._client.hierarchy(record.joined_via, room_id, suggested_only=True), COUNT_TIMEOUT
            )
        except (FederationError, TimeoutError) as e:
            logger.info("no member count of %s from %s: %s", room_id, record.joined_via, _describe(e))
            return
        room = answer.get("room")
        count = room.get("num_joined_members") if isinstance(room, dict) else None
        if type(count) is not int or count < 0:
            return
        held, _ = await self._storage.state.get_member_counts(room_id)
        await self._storage.partial_state.save_joined_count_hint(room_id, count, held)

    async def _resync(self, room_id: str) -> None:
        await self._report_count()
        passes = 0
        while True:
            record: PartialStateRoom | None = await self._storage.partial_state.get(room_id)
            if record is None or record.complete:
                return
            servers = await self._servers(record)
            if not servers:
                await self._storage.partial_state.record_failure(
                    room_id, "no other server is known in the room", now_ms() + int(self.retry_max * 1000)
                )
            for server in servers:
                try:
                    if self.before_attempt is not None:
                        await self.before_attempt(room_id, server)
                    await self._attempt(record, server)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # every failure is reported and retried, never dropped silently
                    described = _describe(e)
                    reason = described if described.startswith(server) else f"{server}: {described}"
                    delay = min(self.retry_max, self.retry_initial * 2**passes)
                    logger.warning(
                        "partial-state resync of %s failed (attempt %d): %s",
                        room_id,
                        record.attempts + 1,
                        reason,
                    )
                    if not isinstance(e, (ResyncFailed, FederationError, TimeoutError, ValueError)):
                        logger.exception("unexpected failure in the partial-state resync of %s", room_id)
                    await self._storage.partial_state.record_failure(
                        room_id, reason, now_ms() + int(delay * 1000)
                    )
                    if self.on_failure is not None:
                        self.on_failure()
                    record = await self._storage.partial_state.get(room_id) or record
            passes += 1
            delay = min(self.retry_max, self.retry_initial * 2 ** (passes - 1))
            logger.info("partial-state resync of %s: next pass over its servers in %.1f s", room_id, delay)
            await asyncio.sleep(delay)

    async def _servers(self, record: PartialStateRoom) -> list[str]:
        """The resident we joined through first, then the other servers of ``servers_in_room``."""
        listed = await self._storage.partial_state.servers(record.room_id)
        ordered = [record.joined_via, *listed]
        return [s for s in dict.fromkeys(ordered) if s != self.server_name]

    # -- one attempt ------------------------------------------------------------------------------------

    async def _attempt(self, record: PartialStateRoom, server: str) -> None:
        room_id, join_id = record.room_id, record.join_event_id
        rv = await self._storage.rooms.get_room_version(room_id)
        if rv is None:
            raise ResyncFailed(f"room {room_id} is not stored")
        started = time.perf_counter()
        saved = await self._storage.partial_state.get_state_ids(room_id)
        if saved is None:
            saved = await self._fetch_state_ids(server, room_id, join_id)
            await self._storage.partial_state.save_state_ids(room_id, *saved)
        pdu_ids, chain_ids = saved
        # The events checked in this attempt stay at hand: the full state and its members are read from
        # them, not parsed from storage again (10,000 members: about a second).
        checked: dict[str, tuple[Pdu, str | None]] = {}
        fetched = await self._fetch_missing(server, room_id, rv, join_id, [*chain_ids, *pdu_ids], checked)
        full = await self._full_state(pdu_ids, join_id, checked)
        await self._fold_in(record, rv, full, checked)
        logger.info(
            "partial-state resync of %s complete via %s: %d state entries, %d events fetched, %.2f s",
            room_id,
            server,
            len(full),
            fetched,
            time.perf_counter() - started,
        )
        self._storage.partial_state.published_complete(room_id)
        self._done.setdefault(room_id, asyncio.Event()).set()
        await self._report_count()

    async def _fetch_state_ids(self, server: str, room_id: str, join_id: str) -> tuple[list[str], list[str]]:
        answer = await asyncio.wait_for(
            self._client.get_state_ids(server, room_id, join_id), STATE_IDS_TIMEOUT
        )
        pdu_ids, chain_ids = answer.get("pdu_ids"), answer.get("auth_chain_ids")
        if not isinstance(pdu_ids, list) or not isinstance(chain_ids, list):
            raise ResyncFailed("/state_ids answered without pdu_ids and auth_chain_ids")
        return [e for e in pdu_ids if isinstance(e, str)], [e for e in chain_ids if isinstance(e, str)]

    async def _fetch_missing(
        self,
        server: str,
        room_id: str,
        rv: RoomVersion,
        join_id: str,
        needed: Sequence[str],
        checked: dict[str, tuple[Pdu, str | None]],
    ) -> int:
        """Fetch, verify, authorise and persist (as outliers) the events of ``needed`` we lack, with the
        auth events they cite that we lack, each put in ``checked`` with its verdict. Returns how many
        were fetched; raises if some could not be."""
        wanted = list(dict.fromkeys(needed))
        held = await self._storage.events.have_events(wanted)
        missing = [e for e in wanted if e not in held]
        if not missing:
            return 0
        got = await self._remote.fetch_many(server, room_id, rv, join_id, missing)
        for _ in range(MAX_AUTH_ROUNDS):
            cited = {a for p in got.values() for a in p.auth_event_ids if a not in got}
            lacking = cited - await self._storage.events.have_events(cited)
            if not lacking:
                break
            more = await self._remote.events(server, room_id, rv, lacking)
            if not more:
                break
            got.update(more)
        await self._persist_checked(room_id, rv, got, checked)
        now_held = await self._storage.events.have_events(missing)
        still = [e for e in missing if e not in now_held]
        if still:
            why = self._key_failures(got.values(), server)
            raise ResyncFailed(
                f"{len(still)} of the {len(missing)} missing events of the state could not be fetched"
                f" (e.g. {still[0]}){': ' + why if why else ''}"
            )
        return len(got)

    def _key_failures(self, pdus: Iterable[Pdu], server: str) -> str:
        """Why signing keys could not be fetched, for the servers concerned (the operator's hint)."""
        servers = {server} | {server_of(p.sender) for p in pdus}
        failures = [f for s in sorted(servers) if (f := self._keyring.fetch_failure(s)) is not None]
        return "; ".join(failures)

    async def _persist_checked(
        self,
        room_id: str,
        rv: RoomVersion,
        got: dict[str, Pdu],
        verdicts: dict[str, tuple[Pdu, str | None]],
    ) -> None:
        """Step 4 (the rules against each event's own auth events), in auth order; persisted as outliers,
        the rejected with their reason (a state entry that was rejected never belongs to the state).
        ``verdicts`` gets every event checked or read here."""

        async def load(ids: Iterable[str]) -> dict[str, tuple[Pdu, str | None]]:
            # Every member event cites the same few auth events (create, power levels, join rules): each
            # is read from storage once, then kept with this batch's verdicts.
            ids = list(ids)
            out = {e: verdicts[e] for e in ids if e in verdicts}
            rest = [e for e in ids if e not in out]
            if rest:
                read = await self._storage.events.get_events_with_verdicts(rest)
                verdicts.update(read)
                out.update(read)
            return out

        batch: list[EventToPersist] = []
        for pdu in auth_order(got.values()):
            reason = await check_against_auth_events(rv, pdu, load)
            if reason is not None:
                logger.info("partial-state resync of %s: %s fails auth: %s", room_id, pdu.event_id, reason)
            verdicts[pdu.event_id] = (pdu, reason)
            batch.append(EventToPersist(pdu=pdu, outlier=True, rejected_reason=reason))
            if len(batch) >= PERSIST_CHUNK:
                await self._storage.events.persist_events(room_id, batch)
                batch = []
        if batch:
            await self._storage.events.persist_events(room_id, batch)

    async def _full_state(
        self, pdu_ids: Sequence[str], join_id: str, known: dict[str, tuple[Pdu, str | None]]
    ) -> StateIds:
        """The full state before our join: the accepted state events of the answer (our join itself left
        out should a server have answered the state after it). ``known``: events at hand with their
        verdicts; the others are read (and added to it)."""
        rest = [e for e in pdu_ids if e not in known]
        if rest:
            known.update(await self._storage.events.get_events_with_verdicts(rest))
        verdicts = known
        full: StateIds = {}
        for event_id in pdu_ids:
            entry = verdicts.get(event_id)
            if entry is None or entry[1] is not None or entry[0].state_key is None or event_id == join_id:
                continue
            full[(entry[0].type, entry[0].state_key)] = event_id
        return full

    # -- recomputing the state of the events persisted while partial ------------------------------------

    async def _fold_in(
        self,
        record: PartialStateRoom,
        rv: RoomVersion,
        full: StateIds,
        known_events: dict[str, tuple[Pdu, str | None]],
    ) -> None:
        room_id = record.room_id
        async with self._persister.room_lock(room_id):
            order = await self._storage.partial_state.events_since_join(room_id, record.join_event_id)
            ids = [e for e, _, _ in order]
            known = await self._storage.events.get_events_with_verdicts(ids)
            new_after: dict[str, StateIds] = {}
            rewrites: list[StateRewrite] = []
            verdicts: dict[str, tuple[Pdu, str | None]] = {}

            async def load(wanted: Iterable[str]) -> dict[str, tuple[Pdu, str | None]]:
                wanted = list(wanted)
                out = {e: verdicts[e] for e in wanted if e in verdicts}
                rest = [e for e in wanted if e not in out]
                if rest:
                    read = await self._storage.events.get_events_with_verdicts(rest)
                    verdicts.update(read)  # auth events, read once for every event that cites them
                    out.update(read)
                return out

            # The forward extremities as each event arrived (the live events not cited by a later live
            # one), replayed in stream order for the soft-failure check; no longer live: `dropped`.
            extremities: set[str] = set()
            dropped: set[str] = set()
            for event_id, was_rejected, was_soft_failed in order:
                pdu, old_reason = known[event_id]
                if event_id == record.join_event_id:
                    before = dict(full)
                    mine = (MEMBER, pdu.sender)
                    if mine not in before:
                        # A server that answered the state after the join (our join left out of it by
                        # _full_state) says nothing of our membership before it: what we knew (an invite).
                        old = await self._storage.state.get_state_ids_before(event_id)
                        if mine in old:
                            before[mine] = old[mine]
                elif pdu.prev_event_ids and all(p in new_after for p in pdu.prev_event_ids):
                    before = await self._state.resolve(
                        room_id, rv, [new_after[p] for p in pdu.prev_event_ids]
                    )
                else:
                    # A prev event we do not hold with its state (e.g. a gap event before our join): its
                    # partial state, completed with the members the full state has and it lacked.
                    old = await self._storage.state.get_state_ids_before(event_id)
                    before = completed_with_members(old, full)
                reason = None
                if not was_rejected:
                    reason = await check_against_state(pdu, before, load)
                    if reason is not None:
                        logger.info(
                            "partial-state resync of %s: %s is rejected against the full state: %s",
                            room_id,
                            event_id,
                            reason,
                        )
                verdicts[event_id] = (pdu, old_reason if was_rejected else reason)
                soft_failed = False
                if (
                    not was_rejected
                    and reason is None
                    and not was_soft_failed
                    and event_id != record.join_event_id
                    and server_of(pdu.sender) != self.server_name  # ours were authorised at the tip
                ):
                    soft_failed = await self._soft_fails(rv, pdu, before, extremities, new_after, load)
                    if soft_failed:
                        logger.info(
                            "partial-state resync of %s: %s is soft-failed against the full current state",
                            room_id,
                            event_id,
                        )
                after = before  # shared, never mutated: a message's state after is its state before
                if pdu.state_key is not None and not was_rejected and reason is None:
                    after = {**before, (pdu.type, pdu.state_key): event_id}
                new_after[event_id] = after
                rewrites.append(StateRewrite(event_id, before, reason, soft_failed))
                if was_rejected or reason is not None or was_soft_failed or soft_failed:
                    dropped.add(event_id)
                else:
                    extremities = (extremities - set(pdu.prev_event_ids)) | {event_id}
            join_reason = verdicts[record.join_event_id][1] if record.join_event_id in verdicts else None
            # Our own join rejected against the full state (the resident lied, e.g. we were banned): the
            # state before it stands in for it, so the room's current state has our membership as the
            # full state says; the room is complete and left (clients see it in /sync's leave section).
            stand_ins = {record.join_event_id: new_after[record.join_event_id]} if join_reason else {}
            current = await self._current_state(room_id, rv, new_after, verdicts, dropped, stand_ins)
            note = None
            if join_reason is not None:
                note = f"our join {record.join_event_id} is rejected against the full state: {join_reason}"
                logger.warning("partial-state resync of %s: %s; the room is left", room_id, note)
            member_ids = [e for (t, _), e in current.items() if t == MEMBER]
            at_hand = {e: known_events[e][0] for e in member_ids if e in known_events}
            members = {
                **at_hand,
                **await self._storage.events.get_events([e for e in member_ids if e not in at_hand]),
            }
            joins = [p for p in members.values() if p.membership == "join"]

            async def complete(txn: Any, position: int) -> None:
                await self._storage.partial_state.complete_txn(txn, room_id, position, joins, note)

            await self._storage.events.rewrite_states(room_id, rewrites, current, complete)

    async def _current_state(
        self,
        room_id: str,
        rv: RoomVersion,
        new_after: dict[str, StateIds],
        verdicts: dict[str, tuple[Pdu, str | None]],
        dropped: set[str],
        stand_ins: dict[str, StateIds],
    ) -> StateIds:
        """The resolution of the states after the forward extremities, once the events no longer live
        (``dropped``: rejected or soft-failed) are no longer among them (their live parents take their
        place; for one of ``stand_ins``, whose parents we do not hold, the state given)."""
        states: list[StateIds] = []
        pending = list(await self._storage.events.get_forward_extremities(room_id))
        seen: set[str] = set()
        while pending:
            event_id = pending.pop()
            if event_id in seen:
                continue
            seen.add(event_id)
            verdict = verdicts.get(event_id)
            if event_id in stand_ins:
                states.append(stand_ins[event_id])
                continue
            if verdict is not None and (verdict[1] is not None or event_id in dropped):
                pending.extend(verdict[0].prev_event_ids)
                continue
            if event_id in new_after:
                states.append(new_after[event_id])
        if not states:
            raise ResyncFailed("no live event is left to compute the room's current state from")
        return await self._state.resolve(room_id, rv, states)

    async def _soft_fails(
        self,
        rv: RoomVersion,
        pdu: Pdu,
        before: StateIds,
        extremities: set[str],
        new_after: dict[str, StateIds],
        load: Load,
    ) -> bool:
        """S2S "Checks performed on receipt of a PDU", step 6, again with the full state: the rules
        against the room's current state when the event arrived (the resolution of the states after the
        forward extremities of then, with the state before the event among them). While partial, the
        member events the event cited stood in for the members the state lacked, so an event from a
        member who had left (or been banned) passed there."""
        if set(pdu.prev_event_ids) == extremities:
            return False  # the current state was the state before the event: step 5 decided
        states = [before, *(new_after[e] for e in sorted(extremities) if e in new_after)]
        if all(s is before or s == before for s in states[1:]):
            current = before
        else:
            current = await self._state.resolve(pdu.room_id, rv, states)
        return await check_against_state(pdu, current, load) is not None


def completed_with_members(partial: StateIds, full: StateIds) -> StateIds:
    """A partial state with the member entries of ``full`` that it lacks (partial state omits members;
    every other key it holds is at least as recent as the full state's at the join)."""
    out = dict(partial)
    for key, event_id in full.items():
        if key[0] == MEMBER:
            out.setdefault(key, event_id)
    return out


def _describe(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    text = str(e) or type(e).__name__
    return text[:500]
