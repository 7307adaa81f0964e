"""Pushing events to appservices (AS "Pushing events"): a durable queue per appservice, filled in the
transaction that persists the events, and one worker per appservice sending numbered transactions.

- Interest (AS "Registration" > namespaces): the sender or state key in a user namespace (or the
  appservice's own sender), the room id in a room namespace, an alias of the room in an alias namespace,
  or a joined member of the room in a user namespace.
- Order and no loss: rows are queued in commit order (one stream counter), a transaction is built from the
  oldest rows and stored with its body before it is sent, and removed only after a 2xx; a failure is
  retried with the same id and body after a back-off (1 s doubling, capped at 4 s), so nothing is dropped or
  reordered, across restarts too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..client_api.event_format import format_client_event
from ..clock import now_ms
from ..protocol.events import Pdu
from ..storage.interfaces import EventToPersist
from ..storage.protocols.appservice import AppServiceStorage
from ..storage.sql.appservice import QueueStats, StoredTxn
from ..storage.sql.aux_streams import load_json
from .client import AppServiceClient, AppServiceUnreachable
from .registration import AppService, AppServices

logger = logging.getLogger(__name__)

MAX_EVENTS_PER_TXN = 100  # as Synapse
MAX_EPHEMERAL_PER_TXN = 100
INITIAL_BACKOFF = 1.0
# A down appservice is probed this often at most: cheap (one request), and a bridge that returns is
# served again within seconds even if it does not ping.
MAX_BACKOFF = 4.0


@dataclass
class _Worker:
    service: AppService
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when the appservice proved it is up (a successful ping): ends a back-off at once.
    reachable: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    backoff: float = 0.0
    sent_txns: int = 0
    sent_events: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    stats: QueueStats = field(default_factory=lambda: QueueStats(0, 0, 0, None))
    last_error: str | None = None


class AppServicePusher:
    def __init__(
        self,
        services: AppServices,
        store: AppServiceStorage,
        events: Any,
        client: AppServiceClient,
        *,
        initial_backoff: float = INITIAL_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        keys: Any = None,
    ) -> None:
        """``keys``: the end-to-end key store, for MSC3202's key counts (None: not sent)."""
        self._services = services
        self._store = store
        self._events = events
        self._client = client
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._keys = keys
        self._pushed = [s for s in services.all if s.url is not None]
        self.workers: dict[str, _Worker] = {s.id: _Worker(s) for s in self._pushed}
        self._wake_after_commit: dict[str, set[str]] = {}
        self._running = False

    # -- queueing (inside the persist transaction) -------------------------------------------------------

    async def enqueue_in_txn(
        self, txn: Any, room_id: str, written: Sequence[tuple[EventToPersist, int]]
    ) -> None:
        """The persister's in-transaction hook: queue each live event for the appservices interested in it."""
        if not self._pushed:
            return
        # Live events, and the out-of-band membership events that arrive as outliers (an invite or knock
        # from another server for one of the bridge's users: AS "Pushing events" covers them too). Such an
        # invite or knock was pushed when it arrived out of band; when the room's history brings it in
        # later (the invite is the prev event of the puppet's join), it is not pushed a second time.
        live = [
            item.pdu
            for item, _ in written
            if (
                (not item.outlier and not (item.held_as_outlier and self._out_of_band_for_us(item.pdu)))
                or (item.outlier and _is_membership(item.pdu))
            )
            and item.rejected_reason is None
            and not item.soft_failed
            and not item.backfilled
        ]
        if not live:
            return
        # Read in this transaction, so the membership is the batch's own (no cache: a batch without state
        # events can still change the membership, when it merges forks of the room).
        room_wide = await self._room_interest_txn(txn, room_id)
        rows: list[tuple[str, str]] = []
        for pdu in live:
            woken = self._wake_after_commit.setdefault(pdu.event_id, set())
            for service in self._pushed:
                if (
                    service.id in room_wide
                    or service.is_interested_in_user(pdu.sender)
                    or (
                        pdu.type == "m.room.member"
                        and pdu.state_key
                        and service.is_interested_in_user(pdu.state_key)
                    )
                ):
                    rows.append((service.id, pdu.event_id))
                    woken.add(service.id)
            if not woken:
                del self._wake_after_commit[pdu.event_id]
        await self._store.enqueue_events_txn(txn, rows, now_ms())

    def _out_of_band_for_us(self, pdu: Pdu) -> bool:
        """A membership event of one of our appservices' users: held as an outlier, it came out of band."""
        return _is_membership(pdu) and any(s.is_interested_in_user(pdu.state_key or "") for s in self._pushed)

    async def _room_interest_txn(self, txn: Any, room_id: str) -> frozenset[str]:
        interested = {s.id for s in self._pushed if s.is_interested_in_room(room_id)}
        rest = [s for s in self._pushed if s.id not in interested]
        if any(s.aliases for s in rest):
            aliases = [
                r[0]
                for r in await txn.fetchall("SELECT alias FROM room_aliases WHERE room_id = ?", (room_id,))
            ]
            interested |= {s.id for s in rest if any(s.is_interested_in_alias(a) for a in aliases)}
        rest = [s for s in rest if s.id not in interested]
        everyone: list[str] | None = None  # all joined members, read only if a namespace needs them
        for service in rest:
            if await _joined(txn, room_id, [service.sender]):
                interested.add(service.id)
                continue
            for ns in service.users:
                prefix = ns.prefix
                if len(prefix) >= 2:
                    # Only members whose id starts with the namespace's literal prefix can match.
                    candidates = await _joined_with_prefix(txn, room_id, prefix)
                else:
                    if everyone is None:
                        everyone = await _joined_with_prefix(txn, room_id, "")
                    candidates = everyone
                if any(ns.matches(m) for m in candidates):
                    interested.add(service.id)
                    break
        return frozenset(interested)

    async def room_interest(self, room_id: str) -> frozenset[str]:
        """Ids of the appservices a room concerns (room id, alias or a joined member in a namespace), from
        committed data; for ephemeral data, which belongs to no persist transaction."""
        return await self._room_interest_txn(self._store.db, room_id)

    @property
    def store(self) -> AppServiceStorage:
        return self._store

    async def on_persisted(self, room_id: str, batch: Sequence[EventToPersist]) -> None:
        """After the commit: wake the workers of the appservices the batch was queued for."""
        woken: set[str] = set()
        for item in batch:
            woken |= self._wake_after_commit.pop(item.pdu.event_id, set())
        for as_id in woken:
            self.wake(as_id)

    # -- workers -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker: each sends what a previous run left queued or unsent first."""
        for as_id in await self._store.appservices_with_queue():
            if as_id not in self.workers:
                logger.warning(
                    "appservice %r has undelivered events queued but is no longer registered (or has no url):"
                    " they are kept, and sent if it is registered again",
                    as_id,
                )
        self._running = True
        for as_id in self.workers:
            self.wake(as_id)

    async def stop(self) -> None:
        self._running = False
        tasks = [w.task for w in self.workers.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def mark_reachable(self, as_id: str) -> None:
        """The appservice answered a ping: retry its unsent transactions now, not after the back-off."""
        worker = self.workers.get(as_id)
        if worker is not None:
            worker.backoff = 0.0
            worker.reachable.set()
            self.wake(as_id)

    def wake(self, as_id: str) -> None:
        worker = self.workers.get(as_id)
        if worker is None or not self._running:
            return
        worker.wakeup.set()
        if worker.task is None or worker.task.done():
            worker.task = asyncio.create_task(self._run(worker), name=f"appservice push {as_id}")

    async def _run(self, worker: _Worker) -> None:
        as_id = worker.service.id
        while self._running:
            try:
                worker.wakeup.clear()
                txn = await self._next_txn(worker)
                if txn is None:
                    worker.stats = await self._store.stats(as_id)
                    await worker.wakeup.wait()
                    continue
                await self._deliver(worker, txn)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("appservice %s: push worker failed; retrying", as_id)
                await asyncio.sleep(self._max_backoff)

    async def _next_txn(self, worker: _Worker) -> StoredTxn | None:
        """The oldest unsent transaction, or a new one built from the oldest queued items (stored before
        it is sent, so a retry, even after a restart, has the same id and body). None: nothing queued."""
        service = worker.service
        pending = await self._store.pending_txns(service.id, limit=1)
        if pending:
            return pending[0]
        events, ephemeral = await self._store.peek(service.id, MAX_EVENTS_PER_TXN, MAX_EPHEMERAL_PER_TXN)
        if not events and not ephemeral:
            return None
        pdus = await self._events.get_events([e.value for e in events])
        now = now_ms()
        body: dict[str, Any] = {
            "events": [format_client_event(pdus[e.value], now) for e in events if e.value in pdus]
        }
        edus = [load_json(e.value) for e in ephemeral if e.kind == "ephemeral"]
        if edus:
            body["ephemeral"] = edus
            body["de.sorunome.msc2409.ephemeral"] = edus
        to_device = [load_json(e.value) for e in ephemeral if e.kind == "to_device"]
        if to_device:
            body["de.sorunome.msc2409.to_device"] = to_device
        changed = [load_json(e.value)["user_id"] for e in ephemeral if e.kind == "device_list"]
        left = [load_json(e.value)["user_id"] for e in ephemeral if e.kind == "device_list_left"]
        if changed or left:
            # A user both changed and gone in one transaction is reported as gone (the change no longer
            # concerns the bridge's users).
            gone = set(left)
            body["org.matrix.msc3202.device_lists"] = {
                "changed": [u for u in dict.fromkeys(changed) if u not in gone],
                "left": list(dict.fromkeys(left)),
            }
        if service.msc3202 and to_device and self._keys is not None:
            await self._add_key_counts(body, to_device)
        oldest = min(item.queued_ts for item in (*events, *ephemeral))
        txn_id = await self._store.create_txn(
            service.id, [e.seq for e in events], [e.seq for e in ephemeral], body, oldest
        )
        return StoredTxn(txn_id, body, len(body["events"]), oldest)

    async def _add_key_counts(self, body: dict[str, Any], to_device: list[dict[str, Any]]) -> None:
        """MSC3202: one-time key counts and unused fallback key types of the devices the transaction's
        to-device messages are for (a message usually follows a claim of one of their keys)."""
        counts: dict[str, dict[str, Any]] = {}
        fallback: dict[str, dict[str, Any]] = {}
        assert self._keys is not None
        for user_id, device_id in dict.fromkeys((m["to_user_id"], m["to_device_id"]) for m in to_device):
            device_counts = await self._keys.count_one_time_keys(user_id, device_id)
            device_counts.setdefault("signed_curve25519", 0)
            counts.setdefault(user_id, {})[device_id] = device_counts
            types = await self._keys.unused_fallback_key_types(user_id, device_id)
            fallback.setdefault(user_id, {})[device_id] = types
        body["org.matrix.msc3202.device_one_time_keys_count"] = counts
        body["org.matrix.msc3202.device_unused_fallback_key_types"] = fallback

    async def _deliver(self, worker: _Worker, txn: StoredTxn) -> None:
        """Send ``txn`` until the appservice accepts it, backing off between attempts (a ping ends the
        back-off), then forget it."""
        service = worker.service
        while True:
            try:
                await self._client.push(service, txn.txn_id, txn.body)
                break
            except AppServiceUnreachable as e:
                worker.failures += 1
                worker.consecutive_failures += 1
                worker.last_error = str(e)
                worker.backoff = min(self._max_backoff, max(self._initial_backoff, worker.backoff * 2))
                logger.warning(
                    "appservice %s: transaction %d not accepted (%s); retrying in %.1f s",
                    service.id,
                    txn.txn_id,
                    e,
                    worker.backoff,
                )
                worker.stats = await self._store.stats(service.id)
                worker.reachable.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(worker.reachable.wait(), worker.backoff)
        await self._store.complete_txn(service.id, txn.txn_id)
        worker.backoff = 0.0
        worker.consecutive_failures = 0
        worker.last_error = None
        worker.sent_txns += 1
        worker.sent_events += txn.event_count


def _is_membership(pdu: Pdu) -> bool:
    return pdu.type == "m.room.member" and bool(pdu.state_key)


async def _joined(txn: Any, room_id: str, user_ids: Sequence[str]) -> bool:
    for user_id in user_ids:
        row = await txn.fetchone(
            "SELECT 1 FROM room_memberships WHERE room_id = ? AND user_id = ? AND membership = 'join'",
            (room_id, user_id),
        )
        if row is not None:
            return True
    return False


async def _joined_with_prefix(txn: Any, room_id: str, prefix: str) -> list[str]:
    """Joined members of the room whose user id starts with ``prefix`` (all of them for "")."""
    sql = "SELECT user_id FROM room_memberships WHERE room_id = ? AND membership = 'join'"
    params: tuple[Any, ...] = (room_id,)
    if prefix:
        sql += " AND substr(user_id, 1, ?) = ?"
        params = (room_id, len(prefix), prefix)
    return [r[0] for r in await txn.fetchall(sql, params)]
