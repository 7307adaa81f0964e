"""Fetching what an incoming PDU needs from the server that sent it: missing prev events, auth events, and
the state at a gap (S2S "Backfilling and retrieving missing events", "Retrieving events",
"Retrieving event authorisation information").

Everything fetched passes steps 1-3 here (format, signatures, content hash) before the room layer sees it;
what fails is dropped and logged. Requests are bounded: the sender must not be able to make us fetch
without end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Any, TypeVar

from ..federation.client import DestinationUnreachable, FederationClient, FederationError
from ..federation.hedge import HEDGE_AFTER_SECONDS, PROBE_INTERVAL_SECONDS, answers_probe, hedged
from ..federation.keys import Keyring
from ..protocol.events import Pdu
from ..protocol.room_versions import RoomVersion
from ..storage.protocols.composite import HasEvents
from .incoming_verify import Dropped, Unverified, intake_in_threads, key_requests, verify_in_thread

logger = logging.getLogger(__name__)
T = TypeVar("T")

MISSING_EVENTS_LIMIT = 20
# How long one fetch made while a room's PDUs are being judged may take (seconds): the room waits for it,
# and a peer behind a link that drops packets would otherwise hold the room for the client's whole timeout.
FETCH_TIMEOUT = 15.0
MAX_CONCURRENT_FETCHES = 8
# /event one by one up to this many missing events; beyond it one /state request is cheaper.
MAX_SINGLE_FETCHES = 20


class RemoteEvents:
    def __init__(self, client: FederationClient, keyring: Keyring) -> None:
        self._client = client
        self._keyring = keyring

    async def _ask(self, origin: str, send: Callable[[], Awaitable[T]]) -> T:
        """One fetch, repeated on another connection if it has no answer after HEDGE_AFTER_SECONDS while
        ``origin`` answers a probe (federation.hedge: a connection a healed partition broke never
        answers), within FETCH_TIMEOUT in all."""
        return await asyncio.wait_for(
            hedged(
                send,
                lambda: answers_probe(self._client, origin),
                after=HEDGE_AFTER_SECONDS,
                interval=PROBE_INTERVAL_SECONDS,
            ),
            FETCH_TIMEOUT,
        )

    async def verified(self, raws: Iterable[Any], room_id: str, rv: RoomVersion) -> list[Pdu]:
        """Steps 1-3 over fetched PDUs of one room; the others are dropped. Parsing and verifying run in
        worker threads (``intake_in_threads``: a /state answer of a big room is 10,000s of PDUs, about
        0.1 ms of parsing each, that would otherwise hold the event loop); the keys of the PDUs whose
        keys are not known yet are fetched once, together, and those PDUs verified after."""
        items = [(raw, room_id, rv) for raw in raws]
        results: list[Pdu | Dropped | Unverified] = await intake_in_threads(items, self._keyring.lookup)
        waiting = [i for i, p in enumerate(results) if isinstance(p, Unverified)]
        if waiting:
            pdus = [p.pdu for p in results if isinstance(p, Unverified)]
            await self._keyring.prefetch(key_requests(pdus))
            verified = await verify_in_thread(pdus, self._keyring.lookup)
            for i, checked in zip(waiting, verified, strict=True):
                results[i] = checked
        out: list[Pdu] = []
        for r in results:
            if isinstance(r, Dropped):
                logger.info("dropping fetched %s: %s", r.event_id or "PDU", r.reason)
            elif isinstance(r, Pdu):
                out.append(r)
        return out

    async def missing_events(
        self,
        origin: str,
        room_id: str,
        rv: RoomVersion,
        earliest: Sequence[str],
        latest: Sequence[str],
        min_depth: int,
    ) -> list[Pdu]:
        """``/get_missing_events`` from ``origin``, oldest first (by depth, then as sent)."""
        found = await self.try_missing_events(origin, room_id, rv, earliest, latest, min_depth)
        return found or []

    async def try_missing_events(
        self,
        origin: str,
        room_id: str,
        rv: RoomVersion,
        earliest: Sequence[str],
        latest: Sequence[str],
        min_depth: int,
    ) -> list[Pdu] | None:
        """``missing_events``, but None when ``origin`` gave no answer at all (no connection, timed out)."""
        try:
            answer = await self._ask(
                origin,
                lambda: self._client.get_missing_events(
                    origin,
                    room_id,
                    earliest_events=list(earliest),
                    latest_events=list(latest),
                    limit=MISSING_EVENTS_LIMIT,
                    min_depth=min_depth,
                ),
            )
        except (FederationError, TimeoutError) as e:
            logger.info("get_missing_events from %s in %s failed: %s", origin, room_id, e or "timed out")
            return None if isinstance(e, (DestinationUnreachable, TimeoutError)) else []
        raws = answer.get("events")
        if not isinstance(raws, list):
            return []
        events = await self.verified(raws[:MISSING_EVENTS_LIMIT], room_id, rv)
        order = {e.event_id: i for i, e in enumerate(events)}
        return sorted(events, key=lambda e: (e.depth, order[e.event_id]))

    async def events(
        self, origin: str, room_id: str, rv: RoomVersion, event_ids: Iterable[str]
    ) -> dict[str, Pdu]:
        """``/event`` for each id (a few at a time); the answer must be the event asked for."""
        wanted = list(dict.fromkeys(event_ids))
        limit = asyncio.Semaphore(MAX_CONCURRENT_FETCHES)

        async def one(event_id: str) -> list[Any]:
            async with limit:
                try:
                    answer = await self._ask(origin, lambda: self._client.get_event(origin, event_id))
                except (FederationError, TimeoutError) as e:
                    logger.info("fetching %s from %s failed: %s", event_id, origin, e or "timed out")
                    return []
            pdus = answer.get("pdus")
            return pdus[:1] if isinstance(pdus, list) else []

        raws = [r for rs in await asyncio.gather(*(one(e) for e in wanted)) for r in rs]
        got: dict[str, Pdu] = {p.event_id: p for p in await self.verified(raws, room_id, rv)}
        # v3+ event ids are hashes, so a match proves the content; v1-v2 ids are only names.
        return {e: got[e] for e in wanted if e in got}

    async def auth_chain(self, origin: str, room_id: str, rv: RoomVersion, event_id: str) -> list[Pdu]:
        """``/event_auth``: the auth chain of ``event_id``."""
        try:
            answer = await asyncio.wait_for(
                self._client.get_event_auth(origin, room_id, event_id), FETCH_TIMEOUT
            )
        except (FederationError, TimeoutError) as e:
            logger.info("event_auth of %s from %s failed: %s", event_id, origin, e or "timed out")
            return []
        raws = answer.get("auth_chain")
        return await self.verified(raws if isinstance(raws, list) else [], room_id, rv)

    async def state_ids(self, origin: str, room_id: str, event_id: str) -> tuple[list[str], list[str]] | None:
        """``/state_ids``: (state before ``event_id``, its auth chain), or None if the origin won't say."""
        try:
            answer = await self._ask(origin, lambda: self._client.get_state_ids(origin, room_id, event_id))
        except (FederationError, TimeoutError) as e:
            logger.info("state_ids at %s from %s failed: %s", event_id, origin, e or "timed out")
            return None
        pdu_ids, chain_ids = answer.get("pdu_ids"), answer.get("auth_chain_ids")
        if not isinstance(pdu_ids, list) or not isinstance(chain_ids, list):
            return None
        return [e for e in pdu_ids if isinstance(e, str)], [e for e in chain_ids if isinstance(e, str)]

    async def state(self, origin: str, room_id: str, rv: RoomVersion, event_id: str) -> dict[str, Pdu]:
        """``/state``: the state before ``event_id`` and its auth chain, as events (one request)."""
        try:
            # A whole state (big rooms: megabytes) is given longer than the other fetches.
            answer = await asyncio.wait_for(
                self._client.get_state(origin, room_id, event_id), 2 * FETCH_TIMEOUT
            )
        except (FederationError, TimeoutError) as e:
            logger.info("state at %s from %s failed: %s", event_id, origin, e or "timed out")
            return {}
        raws = [*(answer.get("pdus") or []), *(answer.get("auth_chain") or [])]
        return {p.event_id: p for p in await self.verified(raws, room_id, rv)}

    async def fetch_many(
        self, origin: str, room_id: str, rv: RoomVersion, at_event: str, event_ids: Sequence[str]
    ) -> dict[str, Pdu]:
        """The events of ``event_ids`` (state or auth chain at ``at_event``): one by one when few are
        missing, else through one ``/state`` request at ``at_event``."""
        if len(event_ids) <= MAX_SINGLE_FETCHES:
            return await self.events(origin, room_id, rv, event_ids)
        got = await self.state(origin, room_id, rv, at_event)
        rest = [e for e in event_ids if e not in got]
        if rest:
            got.update(await self.events(origin, room_id, rv, rest[: MAX_SINGLE_FETCHES * 5]))
        return got


async def prefetch_missing(
    remote: RemoteEvents,
    storage: HasEvents,
    origin: str,
    room_id: str,
    rv: RoomVersion,
    pending: Sequence[Pdu],
    *,
    skip: Callable[[str], bool],
    rounds: int,
    known: Collection[str] = frozenset(),
) -> tuple[list[Pdu], bool]:
    """``/get_missing_events`` for the prev events of ``pending`` that are not held at all (nor ``skip``-ped),
    asked by the intake *before* it takes the room lock (up to ``rounds`` requests, each from what the last
    one still lacked), so that fetching (up to FETCH_TIMEOUT per request, e.g. on a connection a partition
    broke) holds up only this transaction, not every other server's PDUs for the room: the chaos harness saw
    one hung fetch under the lock hold a room for 15 s. What comes back is checked again under the lock
    (events held by then are skipped). Returns the events fetched, oldest first, and whether the origin
    stopped answering (then nothing more is asked of it under the lock: its PDUs with gaps are deferred).
    ``known``: events not held whose state is known all the same (the prev events of our join to a partial
    room): not asked for, and given as earliest events so that the walk stops there."""
    got: dict[str, Pdu] = {}
    citing = list(pending)
    for _ in range(rounds):
        known = {p.event_id for p in pending} | set(got)
        prevs = [e for p in citing for e in p.prev_event_ids if e not in known]
        prevs = [e for e in dict.fromkeys(prevs) if not skip(e) and e not in known]
        held = await storage.events.have_events(prevs) if prevs else set()
        missing = {e for e in prevs if e not in held}
        if not missing:
            break
        extremities = await storage.events.get_forward_extremities(room_id)
        earliest = sorted({*extremities, *known})
        depths = [m.depth for m in [await storage.events.get_event_meta(e) for e in extremities] if m]
        latest = [p.event_id for p in citing if missing.intersection(p.prev_event_ids)]
        found = await remote.try_missing_events(origin, room_id, rv, earliest, latest, min(depths, default=0))
        if found is None:
            return sorted(got.values(), key=lambda e: e.depth), True
        fresh = [e for e in found if e.event_id not in got and e.event_id not in known]
        if not fresh:
            break
        got.update((e.event_id, e) for e in fresh)
        citing = fresh
    return sorted(got.values(), key=lambda e: e.depth), False
