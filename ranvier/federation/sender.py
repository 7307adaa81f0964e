"""The outbound federation sender: the durable outbox, drained per destination as S2S transactions.

Everything we owe another server is first committed to the outbox (``storage.outbox``); only then is the
destination's worker woken. A worker sends the oldest queued items as one transaction (S2S "Transactions":
at most 50 PDUs and 100 EDUs), acknowledges them in the outbox once the destination answered 200, and
repeats until the queue is empty. So a crash or ``stop()`` loses nothing: ``start()`` finds every
destination that still has queued items and sends them.

Rules per destination:
- One transaction in flight at a time, and a failed one is retried with the same id and body until it
  gets a 200 (``PUT /send/{txnId}``: "The sending server must wait and retry for a 200 OK response before
  sending a transaction with a different txnId"). The receiver dedups on the id, so the body must not
  change under it.
- Failures back off exponentially (``initial_backoff`` doubling up to ``max_backoff``, which is bounded:
  minutes, not hours, so a healed link is used again soon); the state is persisted (``destination_retry``)
  so a restart continues the sequence instead of resetting it, but the first attempt after a restart comes
  within ``restart_retry_delay``. A success clears it.
- Proof that the destination is up (``mark_reachable``: it sent us a validly signed request) resets the
  back-off to zero and sends its queue now. The reset does not count as a try: if that attempt fails too
  (a one-way partition: it reaches us, we cannot reach it) the back-off starts again from
  ``initial_backoff`` instead of doubling further, so a chatty peer cannot push it up. A transaction in
  flight for over ``STALE_ATTEMPT_SECONDS`` is then sent again (same id) rather than left to time out.
- A destination that could not be reached at all (no connection, no answer) is probed during its
  back-off (``GET /version`` every ``PROBE_INTERVAL_SECONDS``): once it answers, the queue is tried at
  once, so a healed link is used within seconds even if nothing else proves it. The probe does not reset
  the back-off, and a destination that answers but refuses transactions is not probed.
- A transaction without an answer for ``HEDGE_AFTER_SECONDS`` is sent once more (same id) on another
  connection as soon as the destination answers a probe, and the first answer counts: a connection whose
  bytes a partition swallowed never answers, even after the link healed.
- After a start, the servers we share rooms with are told we are up (``_announce``: one empty transaction
  each), so those that backed off towards us while we were down send their queues now.
- Nothing is dropped for being old or for repeated failures. After an outage (``_catch_up``) every queued
  PDU is sent, oldest first, in transactions of at most 50. Only a room whose backlog exceeds
  ``catchup_keep_per_room`` (large: thousands) is thinned: its newest ``catchup_keep_per_room`` PDUs are
  sent, and an older one is dropped from the queue only when it is an ancestor (through prev_events) of a
  kept one. The destination then sees the kept events' missing prev_events and pulls the rest from us
  (``/get_missing_events``, then ``/backfill`` from the gap in the background: S2S "Backfilling and
  retrieving missing events").
- A 200 whose ``pdus`` map reports per-PDU errors still acknowledges the whole transaction: the spec has
  the receiver "use this response even in the event of one or more PDUs failing to be processed". The
  errors are logged.

Transaction ids are ``<boot time in ms>_<counter>``: unique per destination across restarts without a
persisted counter, as long as the clock does not go back across a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from ranvier.protocol.errors import InvalidIdentifier
from ranvier.protocol.events import Pdu
from ranvier.protocol.identifiers import server_of
from ranvier.storage.interfaces import EventToPersist
from ranvier.storage.sql.outbox import OutboxBatch, RetryState

from ..logs.tracing import EventOrigins
from ..storage.protocols.composite import HasEvents, HasOutbox, HasState
from .client import DestinationUnreachable, FederationClient, FederationError
from .edus import OutboundEdu
from .hedge import answers_probe, hedged

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_PDUS_PER_TXN = 50  # S2S "Transactions"
MAX_EDUS_PER_TXN = 100
# How much of a backlog the catch-up looks at, and how far back through prev_events it walks per room to
# prove an older queued event reachable from the kept ones: bounds on one-off work after an outage.
CATCHUP_SCAN_LIMIT = 100_000
CATCHUP_WALK_BUDGET = 20_000
# After a start, how many servers sharing a room with us are told we are up, and how many at a time.
ANNOUNCE_LIMIT = 1000
ANNOUNCE_CONCURRENCY = 8
# A transaction in flight this long is sent again at once when its destination proves reachable.
STALE_ATTEMPT_SECONDS = 2.0
# While backing off from a destination that could not be reached at all (no connection, no answer), ask it
# for its version this often: a link that heals ends the back-off within seconds even when nothing else
# proves it (a quiet room, a one-way partition that healed after the other side stopped sending). A
# destination that answers but refuses the transaction is not probed: its back-off runs its course.
PROBE_INTERVAL_SECONDS = 2.0
PROBE_TIMEOUT_SECONDS = 2.0
# A transaction without an answer this long is sent once more on another connection as soon as the
# destination answers a probe (``_send_hedged``).
HEDGE_AFTER_SECONDS = 3.0
DEFAULT_TRANSACTION_TIMEOUT = 30.0
# Defaults of the homeserver.yaml settings (``federation.sender``).
DEFAULT_INITIAL_BACKOFF = 5.0
DEFAULT_MAX_BACKOFF = 120.0
DEFAULT_CATCHUP_KEEP_PER_ROOM = 2000


class SenderStorage(HasEvents, HasState, HasOutbox, Protocol):
    """What federation/sender.py asks of storage."""


@dataclass
class _Transaction:
    txn_id: str
    batch: OutboxBatch
    pdus: list[dict[str, Any]]
    edus: list[dict[str, Any]]


@dataclass
class _Destination:
    """In-memory worker state of one destination; everything that matters is in the outbox."""

    task: asyncio.Task[None] | None = None
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    reachable: asyncio.Event = field(default_factory=asyncio.Event)
    # Set by ``mark_reachable``: the back-off is to be reset to zero (consumed by the worker).
    reset: bool = False
    interruptible: bool = False  # waiting on the network or a back-off: safe to cancel
    sending: bool = False  # a transaction is in flight
    attempt: asyncio.Task[bool] | None = None  # the transaction in flight
    attempt_started: float = 0.0  # monotonic
    # The last attempt got no HTTP answer at all (so the back-off probes for the link to come back).
    unreachable: bool = False


class _Stopped(Exception):
    """``stop()`` was called: the worker leaves at its next wait."""


class FederationSender:
    def __init__(
        self,
        storage: SenderStorage,
        client: FederationClient,
        server_name: str,
        metrics: Any = None,
        clock: Callable[[], float] = time.time,
        *,
        initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        restart_retry_delay: float = 2.0,
        max_pdus: int = MAX_PDUS_PER_TXN,
        max_edus: int = MAX_EDUS_PER_TXN,
        catchup_keep_per_room: int = DEFAULT_CATCHUP_KEEP_PER_ROOM,
        announce_on_start: bool = False,
        transaction_timeout: float = DEFAULT_TRANSACTION_TIMEOUT,
    ) -> None:
        self._storage = storage
        self._outbox = storage.outbox
        self._client = client
        self.server_name = server_name
        self._metrics = metrics
        self._clock = clock
        self._initial_backoff_ms = max(1, int(initial_backoff * 1000))
        self._max_backoff_ms = max(self._initial_backoff_ms, int(max_backoff * 1000))
        self._restart_retry_delay = restart_retry_delay
        self._max_pdus = min(max_pdus, MAX_PDUS_PER_TXN)
        self._max_edus = min(max_edus, MAX_EDUS_PER_TXN)
        self._catchup_keep = max(1, catchup_keep_per_room)
        self._boot_ms = self._now_ms()
        self._txn_counter = 0
        self._destinations: dict[str, _Destination] = {}
        self._wake_after_commit: dict[str, set[str]] = {}
        # Destinations with a persisted back-off (``destination_retry``): mark_reachable acts only on
        # these, so the common case (a healthy peer's every request) costs nothing.
        self._backing_off: set[str] = set()
        self._announce_on_start = announce_on_start
        self._transaction_timeout = transaction_timeout
        self._announce_task: asyncio.Task[None] | None = None
        self._running = False
        # Where queued events came from (set by the app): each transaction runs as the request that
        # created its first event, so its log lines carry that request id and its span joins that trace.
        self.origins: EventOrigins | None = None
        # Several processes (ranvier.workers): the destinations this one sends to; the wake-up of another
        # is handed to ``remote_wake`` (its owner's process). None: every destination is ours.
        self.shard: Callable[[str], bool] | None = None
        self.remote_wake: Callable[[str], None] | None = None
        self.remote_reachable: Callable[[str], None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin sending, first to every destination that still has queued items (a restart's catch-up)."""
        self._running = True
        retries = await self._outbox.get_all_retries()
        self._backing_off = set(retries)
        for destination, retry in retries.items():
            self._publish_retry(destination, retry)
        for destination in await self._outbox.destinations_with_pending():
            self.wake(destination)
        if self._announce_on_start:
            self._announce_task = asyncio.create_task(self._announce(), name="fedsend announce")

    async def stop(self) -> None:
        """Cancel the workers. A transaction cut off mid-flight stays queued and is sent again (with a new
        id) after the next start; the receiver ignores PDUs it already has."""
        self._running = False
        tasks = []
        if self._announce_task is not None:
            self._announce_task.cancel()  # network only: safe to cancel anywhere
            tasks.append(self._announce_task)
            self._announce_task = None
        for state in self._destinations.values():
            if state.task is None:
                continue
            tasks.append(state.task)
            # Only a worker waiting on the network or a back-off is cancelled. One in the middle of a
            # database call finishes it and stops at its next wait: cancelling an engine call half-way
            # could leave a connection inside an open transaction.
            if state.interruptible:
                state.task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._destinations.clear()

    # -- what the rest of the server calls ------------------------------------------------------------

    async def enqueue_in_txn(
        self, txn: Any, room_id: str, written: Sequence[tuple[EventToPersist, int]]
    ) -> None:
        """The persister's in-transaction hook: queue our own new live events for every other server in the
        room, in the transaction that persists them, so a crash right after the commit cannot lose a send
        (the outbox is read again by ``start()``). The workers are woken by ``on_persisted`` after the
        commit: before it, they could not see the rows.

        The destinations are the servers joined after the batch (the transaction already holds the new
        membership) plus, for a membership event, the target's server (a kicked or banned user's server is
        no longer joined but must learn of it).
        """
        ours = [
            (item.pdu, stream)
            for item, stream in written
            if not item.outlier
            and item.rejected_reason is None
            and not item.soft_failed
            and not item.backfilled
            and _origin(item.pdu) == self.server_name
        ]
        if not ours:
            return
        joined = set(await self._storage.state.get_joined_servers_txn(txn, room_id))
        for pdu, stream in ours:
            destinations = set(joined)
            if pdu.type == "m.room.member" and pdu.state_key is not None:
                with contextlib.suppress(InvalidIdentifier):
                    destinations.add(server_of(pdu.state_key))
            destinations.discard(self.server_name)
            if destinations:
                await self._outbox.enqueue_pdus_txn(txn, destinations, pdu.event_id, room_id, stream)
                # Keyed by event: listeners of other batches may run while this one is uncommitted. An
                # entry of a batch that rolls back stays until the same event is persisted again.
                self._wake_after_commit[pdu.event_id] = destinations

    async def on_persisted(self, room_id: str, batch: Sequence[EventToPersist]) -> None:
        """The persister's listener, after the commit: wake the destinations ``enqueue_in_txn`` queued
        the batch's events for."""
        woken: set[str] = set()
        for item in batch:
            woken |= self._wake_after_commit.pop(item.pdu.event_id, set())
        for destination in woken:
            self.wake(destination)

    async def send_pdu_to(self, destinations: Iterable[str], event_id: str, room_id: str) -> None:
        """Queue an event we hold for the given servers, e.g. a remote user's join accepted through our
        ``send_join``, which the room's other servers must receive from us. The caller leaves out servers
        that already have it (the joining server)."""
        dests = set(destinations) - {self.server_name}
        if not dests:
            return
        await self._outbox.enqueue_pdus(dests, event_id, room_id)
        for destination in dests:
            self.wake(destination)

    def forward_in_txn(self, destinations: Iterable[str]) -> Any:
        """A persister transaction hook that queues the batch's events for ``destinations`` in the same
        commit (a remote user's join accepted through our send_join, which the room's other servers must
        get from us); the caller wakes the destinations with ``wake`` after the commit."""
        dests = set(destinations) - {self.server_name}

        async def hook(txn: Any, room_id: str, written: Sequence[tuple[EventToPersist, int]]) -> None:
            if not dests:
                return
            for item, stream in written:
                await self._outbox.enqueue_pdus_txn(txn, dests, item.pdu.event_id, room_id, stream)

        return hook

    async def send_edu(
        self, destination: str, edu_type: str, content: dict[str, Any], *, coalesce_key: str | None = None
    ) -> None:
        """Queue one EDU durably. With ``coalesce_key``, a still-queued EDU of the same type and key is
        replaced (see ``edus.py``)."""
        await self.broadcast_edu([destination], OutboundEdu(edu_type, content, coalesce_key))

    async def broadcast_edu(self, destinations: Iterable[str], edu: OutboundEdu) -> None:
        """Queue one EDU for several servers in one database transaction (typing and receipts go to every
        server in the room)."""
        dests = set(destinations) - {self.server_name}
        if not dests:
            return
        await self._outbox.enqueue_edu(dests, edu.edu_type, edu.content, edu.coalesce_key)
        for destination in dests:
            self.wake(destination)

    def wake(self, destination: str) -> None:
        """Something was queued for ``destination``: make sure its worker runs. A destination in back-off
        is not hurried (see ``mark_reachable``)."""
        if destination == self.server_name:
            return
        if self.shard is not None and not self.shard(destination):
            if self.remote_wake is not None:
                self.remote_wake(destination)
            return
        if not self._running:
            return
        state = self._destinations.setdefault(destination, _Destination())
        state.wakeup.set()
        if state.task is None or state.task.done():
            # A context of its own: created while some request is being served, the worker would otherwise
            # carry that request's id and trace into every later transaction.
            state.task = asyncio.create_task(
                self._worker(destination, state), name=f"fedsend {destination}", context=contextvars.Context()
            )

    def mark_reachable(self, destination: str) -> None:
        """``destination`` has just shown it is up (it sent us a validly signed request): reset its
        back-off to zero and send its queue now; a transaction long in flight to it is sent again. A no-op
        for a destination that is healthy."""
        if self.shard is not None and not self.shard(destination):
            if self.remote_reachable is not None:
                self.remote_reachable(destination)  # its owner's process keeps the back-off
            return
        if destination in self._backing_off or self._stale_attempt(destination):
            self.reset_backoff(destination)

    def _stale_attempt(self, destination: str) -> bool:
        state = self._destinations.get(destination)
        return (
            state is not None
            and state.attempt is not None
            and not state.attempt.done()
            and time.monotonic() - state.attempt_started > STALE_ATTEMPT_SECONDS
        )

    def reset_backoff(self, destination: str) -> None:
        """End ``destination``'s back-off now (``mark_reachable``, or an operator's reset): the worker
        forgets the retry state and sends what is queued; a failure then backs off from the start."""
        if destination == self.server_name or not self._running:
            return
        state = self._destinations.setdefault(destination, _Destination())
        state.reset = True
        state.reachable.set()
        if self._stale_attempt(destination) and state.attempt is not None:
            # A transaction long in flight to a server that has just reached us was most likely sent into a
            # link that has since healed (a blackhole keeps it waiting for the whole timeout): send it again
            # now (same id: the receiver answers a repeat without handling it twice).
            state.attempt.cancel()
        self.wake(destination)

    def worker_state(self, destination: str) -> str:
        """What the destination's worker is doing: ``idle``, ``sending`` or ``backing_off``."""
        state = self._destinations.get(destination)
        if state is None or state.task is None or state.task.done():
            return "idle"
        if state.sending:
            return "sending"
        return "backing_off" if destination in self._backing_off else "sending"

    def is_idle(self, destination: str) -> bool:
        """No worker is running for ``destination`` (its queue was empty when last looked at)."""
        state = self._destinations.get(destination)
        return state is None or state.task is None or state.task.done()

    # -- the per-destination worker -------------------------------------------------------------------

    async def _worker(self, destination: str, state: _Destination) -> None:
        try:
            await self._drain(destination, state)
        except (_Stopped, asyncio.CancelledError):
            return
        except Exception:
            # Not a send failure (those back off inside _drain): a bug or storage failure. The items stay
            # queued; the next wake (or restart) starts a new worker.
            log.exception("federation sender for %s stopped unexpectedly", destination)

    async def _drain(self, destination: str, state: _Destination) -> None:
        # ``_backing_off`` holds every destination with a persisted back-off (loaded by ``start``, kept by
        # this worker), so a healthy destination's back-off is not read back: one database round trip less
        # per destination each time a message is fanned out.
        retry = await self._outbox.get_retry(destination) if destination in self._backing_off else None
        catching_up = retry is not None
        if retry is not None and not state.reset:
            # Respect a back-off persisted before a restart, but try again soon: the restart may well have
            # been the fix.
            remaining = (retry.retry_last_ts + retry.retry_interval - self._now_ms()) / 1000
            await self._interruptible(
                state, self._sleep(state, max(0.0, min(remaining, self._restart_retry_delay)))
            )
        retry = await self._take_reset(destination, state, retry)
        pending: _Transaction | None = None
        while True:
            if pending is None:
                state.wakeup.clear()
                if catching_up:
                    await self._catch_up(destination)
                    catching_up = False
                batch = await self._outbox.next_batch(destination, self._max_pdus, self._max_edus)
                await self._update_gauge(destination, batch)
                if batch.is_empty():
                    if state.wakeup.is_set():
                        continue  # something was queued while we looked
                    return
                pending = await self._build(batch)
                if pending is None:
                    continue  # nothing in the batch could be loaded; it was acknowledged
            sent = await self._interruptible(state, self._attempt_once(destination, state, pending))
            if sent:
                await self._outbox.ack_batch(pending.batch)
                whole_queue = not self._is_full(pending.batch)
                pending = None
                state.reset = False  # a reachability proof met a healthy link: nothing to reset
                state.reachable.clear()
                if retry is not None:
                    await self._clear_retry(destination)
                    retry = None
                if whole_queue and not state.wakeup.is_set():
                    # The batch was the whole queue when read, and nothing was queued since (every enqueue
                    # wakes us after its commit; one that commits after this check finds the worker done
                    # and starts a new one): the queue is empty without reading it again.
                    self._set_gauge(destination, 0)
                    return
            else:
                catching_up = True
                # A reachability proof since the last failure means the back-off starts from zero again:
                # it is not one more failure in a row (a one-way partition must not escalate it).
                retry = self._next_retry(None if state.reset else retry)
                await self._outbox.set_retry(destination, retry)
                self._backing_off.add(destination)
                self._publish_retry(destination, retry)
                probe = destination if state.unreachable else None
                await self._interruptible(state, self._sleep(state, retry.retry_interval / 1000, probe))
                retry = await self._take_reset(destination, state, retry)

    async def _attempt_once(self, destination: str, state: _Destination, txn: _Transaction) -> bool:
        """``_attempt`` as a task of its own, which ``reset_backoff`` may cancel when it is stale (then it
        failed); cancelling the worker (``stop()``) cancels it too."""
        attempt = asyncio.create_task(
            self._attempt_as_origin(destination, txn),
            name=f"fedsend {destination} attempt",
            context=contextvars.Context(),
        )
        state.attempt, state.attempt_started, state.sending = attempt, time.monotonic(), True
        try:
            await asyncio.wait({attempt})
        finally:
            state.attempt, state.sending = None, False
            if not attempt.done():
                attempt.cancel()  # the worker itself is being cancelled
        if attempt.cancelled():
            log.info(
                "transaction %s to %s abandoned: the server reached us meanwhile", txn.txn_id, destination
            )
            return False
        return attempt.result()

    async def _attempt_as_origin(self, destination: str, txn: _Transaction) -> bool:
        origins = self.origins
        found = origins.all_of(txn.batch.event_ids) if origins is not None else []
        if origins is None or not found:
            return await self._attempt(destination, txn)
        # The transaction belongs to the trace of its first event's request; the other requests whose
        # events it carries get a span in their own trace, linked to it.
        with origins.running_as(found[0]), origins.span("federation transaction", destination, txn.txn_id):
            linked = origins.current_link()
            ok = await self._attempt(destination, txn)
        for other in found[1:]:
            origins.mark_carried(other, linked, destination, txn.txn_id)
        return ok

    async def _attempt(self, destination: str, txn: _Transaction) -> bool:
        state = self._destinations.get(destination)
        if state is not None:
            state.unreachable = False
        try:
            response = await asyncio.wait_for(self._send_hedged(destination, txn), self._transaction_timeout)
        except TimeoutError:
            # A link that drops packets silently, or a receiver still busy with it: sent again (same id).
            if state is not None:
                state.unreachable = True
            log.warning(
                "transaction %s to %s: no answer within %gs",
                txn.txn_id,
                destination,
                self._transaction_timeout,
            )
            return False
        except FederationError as e:
            # Every failure, 4xx included, backs off and retries: dropping would lose events, and a 4xx on
            # /send is more often a passing problem (keys, a proxy, rate limits) than a permanent one.
            log.warning("transaction %s to %s failed: %s", txn.txn_id, destination, e)
            if state is not None and isinstance(e, DestinationUnreachable):
                state.unreachable = True
            return False
        results = response.get("pdus")
        if isinstance(results, dict):
            for event_id, result in results.items():
                if isinstance(result, dict) and result.get("error"):
                    log.info("%s did not accept %s: %s", destination, event_id, result["error"])
        return True

    async def _send_hedged(self, destination: str, txn: _Transaction) -> dict[str, Any]:
        """Send ``txn``; if it has no answer after ``HEDGE_AFTER_SECONDS`` and the destination answers a
        probe meanwhile, send it once more on another connection and take whichever answer comes first
        (``federation.hedge``). The chaos harness saw two servers each wait 30 s on the other after a healed
        partition. The receiver answers a repeated transaction id without handling it twice (a repeat
        racing the original waits for its answer), so a merely slow transaction costs a second request."""

        def send() -> Coroutine[Any, Any, dict[str, Any]]:
            return self._client.send_transaction(
                destination, txn.txn_id, origin_server_ts=self._now_ms(), pdus=txn.pdus, edus=txn.edus
            )

        return await hedged(
            send,
            lambda: self._answers_probe(destination),
            after=HEDGE_AFTER_SECONDS,
            interval=PROBE_INTERVAL_SECONDS,
        )

    async def _build(self, batch: OutboxBatch) -> _Transaction | None:
        events: dict[str, Pdu] = await self._storage.events.get_events(batch.event_ids) if batch.pdus else {}
        missing = [e for e in batch.event_ids if e not in events]
        if missing:
            # Purged, or queued by mistake: nothing can be sent for these.
            log.warning("not sending %d queued events we no longer hold: %s", len(missing), missing[:5])
        pdus = [_wire_form(events[e]) for e in dict.fromkeys(batch.event_ids) if e in events]
        edus = [{"edu_type": e.edu_type, "content": e.content} for e in batch.edus]
        if not pdus and not edus:
            await self._outbox.ack_batch(batch)
            return None
        self._txn_counter += 1
        return _Transaction(f"{self._boot_ms}_{self._txn_counter}", batch, pdus, edus)

    async def _take_reset(
        self, destination: str, state: _Destination, retry: RetryState | None
    ) -> RetryState | None:
        """Consume a ``reset_backoff`` request: the persisted back-off is cleared (the retry follows now)."""
        if not state.reset:
            return retry
        state.reset = False
        if retry is not None:
            await self._clear_retry(destination)
        return None

    async def _clear_retry(self, destination: str) -> None:
        await self._outbox.reset_retry(destination)
        self._backing_off.discard(destination)
        self._publish_retry(destination, None)

    def _next_retry(self, previous: RetryState | None) -> RetryState:
        if previous is None:
            interval = self._initial_backoff_ms
        else:
            interval = min(max(previous.retry_interval, self._initial_backoff_ms) * 2, self._max_backoff_ms)
        failures = 1 if previous is None else previous.failure_count + 1
        return RetryState(retry_last_ts=self._now_ms(), retry_interval=interval, failure_count=failures)

    async def _interruptible(self, state: _Destination, wait: Coroutine[Any, Any, T]) -> T:
        """Await ``wait`` as a point where ``stop()`` may cancel the worker."""
        if not self._running:
            wait.close()
            raise _Stopped
        state.interruptible = True
        try:
            return await wait
        finally:
            state.interruptible = False

    async def _sleep(self, state: _Destination, seconds: float, probe: str | None = None) -> None:
        """Back off for ``seconds``, or until ``reset_backoff``. A mark made while the failing attempt was
        still in flight counts too (the flag is consumed after the wait, not cleared before it): the
        destination's request that made it may well have come in between. With ``probe`` (a destination
        that could not be reached at all), the wait also ends once it answers a probe; unlike a
        reachability proof this does not reset the back-off, so a link that answers probes but keeps
        failing transactions still backs off further."""
        if seconds > 0:
            waits: list[asyncio.Task[Any]] = [asyncio.ensure_future(state.reachable.wait())]
            if probe is not None and seconds > PROBE_INTERVAL_SECONDS:
                waits.append(asyncio.ensure_future(self._probe_until_up(probe)))
            try:
                await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
        state.reachable.clear()

    async def _probe_until_up(self, destination: str) -> None:
        """Return once ``destination`` gives any HTTP answer to ``GET /version`` (unauthenticated, cheap)."""
        while True:
            await asyncio.sleep(PROBE_INTERVAL_SECONDS)
            if await self._answers_probe(destination):
                return

    async def _answers_probe(self, destination: str) -> bool:
        return await answers_probe(self._client, destination, PROBE_TIMEOUT_SECONDS)

    async def _announce(self) -> None:
        """Tell the servers we share rooms with that we are up again, with an empty transaction: a server
        that backed off towards us while we were down (or cut off) takes any validly signed request as
        proof of reachability and sends its queue now (Ranvier's ``mark_reachable``; Synapse resets its
        retry timings the same way) instead of at the end of its back-off. Failures are of no consequence:
        nothing is queued, nothing is retried."""
        servers = await self._storage.state.get_servers_in_joined_rooms(self.server_name, ANNOUNCE_LIMIT)
        limit = asyncio.Semaphore(ANNOUNCE_CONCURRENCY)

        async def one(destination: str) -> None:
            async with limit:
                self._txn_counter += 1
                txn_id = f"{self._boot_ms}_{self._txn_counter}"
                try:
                    await self._client.send_transaction(
                        destination, txn_id, origin_server_ts=self._now_ms(), pdus=[], edus=[]
                    )
                except FederationError as e:
                    log.debug("could not tell %s we are up: %s", destination, e)

        await asyncio.gather(*(one(s) for s in servers))

    # -- catch-up after an outage ---------------------------------------------------------------------

    async def _catch_up(self, destination: str) -> None:
        """Everything queued is sent, oldest first, except in a room whose backlog exceeds
        ``catchup_keep_per_room``: there the newest ``catchup_keep_per_room`` queued PDUs are kept, and an
        older one is dropped only when a kept one reaches it through prev_events, so the destination can
        fetch it (/get_missing_events, /backfill). Anything not proven reachable stays queued."""
        backlogs = await self._outbox.room_backlogs(destination)
        if all(count <= self._catchup_keep for count in backlogs.values()):
            return  # the common case: the whole backlog goes out, in order
        queued = (await self._outbox.next_batch(destination, CATCHUP_SCAN_LIMIT, 0)).pdus
        by_room: dict[str, list[tuple[int, str]]] = {}
        for item in queued:
            by_room.setdefault(item.room_id, []).append((item.seq, item.event_id))
        dropped: list[int] = []
        for items in by_room.values():
            if len(items) <= self._catchup_keep:
                continue
            older, kept = items[: -self._catchup_keep], items[-self._catchup_keep :]
            reachable = await self._ancestors_among([e for _, e in kept], {e for _, e in older})
            dropped += [seq for seq, event_id in older if event_id in reachable]
        if dropped:
            log.info(
                "catching up %s: %d older queued events left for it to fetch (get_missing_events, backfill)",
                destination,
                len(dropped),
            )
            await self._outbox.ack(destination, dropped)

    async def _ancestors_among(self, start: Iterable[str], targets: set[str]) -> set[str]:
        """The members of ``targets`` reachable from ``start`` through prev_events of events we hold
        (rejected events are not served to others, so the walk does not pass through them)."""
        held = await self._storage.events.get_events(targets)
        if not held:
            return set()
        min_depth = min(p.depth for p in held.values())
        found: set[str] = set()
        seen = set(start)
        frontier = list(seen)
        while frontier and len(seen) < CATCHUP_WALK_BUDGET and len(found) < len(held):
            events = await self._storage.events.get_events(frontier)
            frontier = []
            for pdu in events.values():
                if pdu.depth < min_depth:
                    continue  # its ancestors are deeper in the past than every target
                for prev in pdu.prev_event_ids:
                    if prev not in seen:
                        seen.add(prev)
                        frontier.append(prev)
                        if prev in held:
                            found.add(prev)
        return found

    # -- helpers --------------------------------------------------------------------------------------

    def _is_full(self, batch: OutboxBatch) -> bool:
        """Whether ``batch`` reached a limit: if not, it was the whole queue (read in one snapshot)."""
        return len(batch.pdus) >= self._max_pdus or len(batch.edus) >= self._max_edus

    async def _update_gauge(self, destination: str, batch: OutboxBatch) -> None:
        if self._metrics is None:
            return
        # A batch short of both limits is the whole queue: no count query. That is a database round trip
        # less per destination and batch (fanning one message out to 100 servers made 200 of them).
        full = self._is_full(batch)
        count = await self._outbox.pending_count(destination) if full else len(batch.pdus) + len(batch.edus)
        self._set_gauge(destination, count)

    def _set_gauge(self, destination: str, count: int) -> None:
        if self._metrics is not None:
            self._metrics.federation_queue.labels(destination=destination).set(count)

    def _publish_retry(self, destination: str, retry: RetryState | None) -> None:
        if self._metrics is None:
            return
        interval = 0.0 if retry is None else retry.retry_interval / 1000
        failures = 0 if retry is None else retry.failure_count
        self._metrics.federation_retry_interval.labels(destination=destination).set(interval)
        self._metrics.federation_failures.labels(destination=destination).set(failures)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _origin(pdu: Pdu) -> str | None:
    try:
        return server_of(pdu.sender)
    except InvalidIdentifier:
        return None


def _wire_form(pdu: Pdu) -> dict[str, Any]:
    # ``unsigned`` is local annotation (the client's transaction id, redacted_because); receivers compute
    # their own, so it is not sent.
    return {k: v for k, v in pdu.to_federation().items() if k != "unsigned"}
