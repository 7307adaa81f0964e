"""The worker runtime of one process: shares the event stream with the other writers, joins the
replication bus, and replicates what lives outside the database.

Which streams cross processes, and how:

* events (and with them state, since current state changes only with events): ``MultiWriterPositions``
  announcements; the receiver forgets the batch's cached events and the room's cached current state, then
  moves its frontier, which wakes its long-polling ``/sync``;
* receipts, account data (push rules and tags are account data), to-device, device lists, presence: their
  rows and positions are in the database already (``aux_stream_positions``, bumped in the writing
  transaction), so only the wake-up crosses: every local ``SyncNotifier.notify`` is repeated on the bus;
* typing is in memory: every process keeps a replica; each change is broadcast (room, user, typing,
  timeout) and applied by every process, which expires it on the same timeout;
* outbound federation: ``wake`` of a destination another sender owns is sent to it over the bus;
* push and appservice deliveries run in the background process, woken by every event announcement.

Presence is owned by the process with the background role (its timers and its in-memory facts); the others
relay presence changes to it (ranvier.workers.presence) and read presence from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..client_api.ephemeral import SyncNotifier, TypingStream
from ..storage.sql.storage import SqlStorage
from .liveness import WriterLiveness
from .positions import Announcement, MultiWriterPositions, heartbeat
from .presence import KIND as PRESENCE
from .presence import PRESENCE_PATH, PresenceOwner, RelayedPresence
from .roles import RolePlan

if TYPE_CHECKING:
    # Imported where a runtime is built (only with workers configured): redis costs a single-process
    # server about 8 MB of RSS.
    from .bus import Bus

logger = logging.getLogger(__name__)

REACHABLE_EVERY = 5.0


class ReplicatedNotifier(SyncNotifier):
    """``SyncNotifier`` whose local wake-ups are repeated in every other process."""

    def __init__(self) -> None:
        super().__init__()
        self.bus: Bus | None = None

    def notify(self) -> None:
        super().notify()
        if self.bus is not None:
            self.bus.publish("notify", {})

    def notify_local(self) -> None:
        super().notify()


class ReplicatedTyping(TypingStream):
    """``TypingStream`` replicated to every process (typing is never stored)."""

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        super().__init__(on_change=on_change)
        self.bus: Bus | None = None
        # The wake-up of this process alone, for changes heard from the others (set by the runtime).
        self.local_change: Callable[[], None] | None = on_change

    def set_typing(self, room_id: str, user_id: str, typing: bool, timeout_ms: int = 30_000) -> None:
        super().set_typing(room_id, user_id, typing, timeout_ms)
        if self.bus is not None:
            self.bus.publish("typing", {"r": room_id, "u": user_id, "t": typing, "ms": timeout_ms})

    def apply_remote(self, body: dict[str, Any]) -> None:
        room_id, user_id, typing, timeout_ms = body.get("r"), body.get("u"), body.get("t"), body.get("ms")
        if (
            isinstance(room_id, str)
            and isinstance(user_id, str)
            and isinstance(typing, bool)
            and isinstance(timeout_ms, int)
        ):
            # Woken here only: every process hears the change itself, so none repeats the wake-up.
            on_change, self._on_change = self._on_change, self.local_change
            try:
                super().set_typing(room_id, user_id, typing, timeout_ms)
            finally:
                self._on_change = on_change


class WorkerRuntime:
    def __init__(
        self, plan: RolePlan, redis_url: str, channel_prefix: str, database_url: str | None = None
    ) -> None:
        from .bus import Bus  # see the imports

        self.plan = plan
        self.bus = Bus(redis_url, plan.name, channel_prefix)
        self.positions: MultiWriterPositions | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._presence_owner: PresenceOwner | None = None
        # Without the database URL there is no writer lock: a dead writer's hole waits for its restart.
        self._database_url = database_url
        self.liveness: WriterLiveness | None = None
        # Told of each room whose state another process changed (set by ``wire``: partial-state waits).
        self.on_room_state: Callable[[str], None] | None = None

    async def attach_storage(self, storage: SqlStorage) -> None:
        """Before anything reads or writes events: positions from the sequences, striped state group ids,
        and the bus (started here, so no announcement is missed between loading positions and listening)."""
        plan = self.plan
        writers = plan.event_writers()
        persister = storage.events.persister
        positions = MultiWriterPositions(plan.name, storage.db, writers)
        # Subscribed before the positions are read, so nothing committed in between goes unheard; what
        # arrives before they are read is applied after.
        early: list[Announcement] = []
        loaded = False

        def on_events(body: dict[str, Any]) -> None:
            ann = Announcement.from_json(body)
            if loaded:
                positions.on_announcement(ann)
            else:
                early.append(ann)

        self.bus.on("events", on_events)
        await self.bus.start()
        if self._database_url is not None:
            # Held before any position is allocated, for as long as this process lives.
            self.liveness = WriterLiveness(self._database_url, positions)
            await self.liveness.start()
        async with storage.db.snapshot() as txn:
            await positions.load(txn)
        loaded = True
        for ann in early:
            positions.on_announcement(ann)
        early.clear()
        persister.share_stream(positions, positions)
        storage.stream.use_positions(positions)
        storage.state_groups.stripe(writers.index(plan.name), len(writers))
        partial_state = storage.partial_state

        def forget(room_id: str | None, event_ids: list[str], state_changed: bool = True) -> None:
            persister.forget(room_id, event_ids, state_changed)
            if room_id is None or state_changed:
                # A partial-state join, or a resync's completion, by the room's persister: this process's
                # set of partial rooms reads the room again (before the position moves, like the caches).
                partial_state.forget(room_id)
                if room_id is not None and self.on_room_state is not None:
                    self.on_room_state(room_id)

        positions.forget = forget

        def purged(body: dict[str, Any]) -> None:
            # A room purged by its persister (ranvier.workers.purge_forwarding): its rows are gone, so is
            # what this process caches of it; without the event ids, every cached event is dropped.
            room_id, event_ids = body.get("r"), body.get("e")
            if not isinstance(room_id, str):
                return
            if isinstance(event_ids, list) and all(isinstance(e, str) for e in event_ids):
                forget(room_id, event_ids)
            else:
                forget(None, [])

        self.bus.on("purged", purged)
        positions.announce = lambda ann: self.bus.publish("events", ann.to_json())
        # One writer per room (its persister): a batch of another room is a path not handed over.
        positions.owns = plan.owns_room

        async def resync() -> None:
            # Messages were lost while the subscription was down: forget every cached room and event,
            # re-read the writers' declarations and what was committed past our frontier.
            forget(None, [])
            async with storage.db.snapshot() as txn:
                await positions.reload(txn)

        self.bus.on_resync(resync)
        self.positions = positions
        self._heartbeat = asyncio.create_task(
            heartbeat(positions, liveness=self.liveness), name="stream heartbeat"
        )

    def wire(self, hs: Any) -> None:
        """Connect the bus to the homeserver's parts (after they are built, before they start)."""
        plan, bus = self.plan, self.bus
        notifier: ReplicatedNotifier = hs.sync_notifier
        notifier.bus = bus
        bus.on("notify", lambda _body: notifier.notify_local())
        typing: ReplicatedTyping = hs.typing
        typing.bus = bus
        typing.local_change = notifier.notify_local
        bus.on("typing", typing.apply_remote)
        sender = getattr(hs, "federation_sender", None)
        if sender is not None:
            # Only the owner of a destination runs its queue; others hand the wake-up to it.
            sender.shard = plan.owns_destination if plan.federation_sender else lambda _d: False
            sender.remote_wake = lambda dest: bus.publish("fed_wake", {"d": dest})

            def fed_wake(body: dict[str, Any]) -> None:
                dest = body.get("d")
                if isinstance(dest, str) and plan.federation_sender and plan.owns_destination(dest):
                    sender.wake(dest)

            bus.on("fed_wake", fed_wake)
            # A server that just sent us a signed request is up: its owner ends the back-off. Told at most
            # once per REACHABLE_EVERY seconds per server (every federation request would say it).
            told: dict[str, float] = {}

            def reachable(dest: str) -> None:
                now = time.monotonic()
                if now - told.get(dest, float("-inf")) >= REACHABLE_EVERY:
                    told[dest] = now
                    bus.publish("fed_reachable", {"d": dest})

            sender.remote_reachable = reachable

            def fed_reachable(body: dict[str, Any]) -> None:
                dest = body.get("d")
                if isinstance(dest, str) and plan.federation_sender and plan.owns_destination(dest):
                    sender.mark_reachable(dest)

            bus.on("fed_reachable", fed_reachable)
        presence = hs.presence
        if isinstance(presence, RelayedPresence):
            presence.bus = bus
            owner_name = plan.presence_owner()
            replication = hs.replication_client
            owner_listener = plan.workers.instances[owner_name].replication if plan.workers else None
            if replication is not None and owner_listener is not None:

                async def post(body: dict[str, Any]) -> None:
                    async with replication.session().post(
                        replication.base_url(owner_name) + PRESENCE_PATH,
                        json=body,
                        headers={"Authorization": f"Bearer {replication.secret}"},
                    ) as resp:
                        if resp.status != 200:
                            raise RuntimeError(f"{owner_name} answered {resp.status}")

                presence.post = post
        elif plan.background:
            self._presence_owner = PresenceOwner(presence)
            bus.on(PRESENCE, self._presence_owner.on_message)
        policy = hs.admin_api.policy
        reloads: set[asyncio.Task[None]] = set()

        def reload_policy(_body: dict[str, Any]) -> None:
            task = asyncio.create_task(policy.load(), name="admin policy reload")
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        bus.on("policy", reload_policy)
        # Requests waiting here for a partial-state room's full state hear of its resync's completion by
        # the room's persister.
        self.on_room_state = hs.partial_resync.notice_change
        if plan.background:

            def deliveries(_body: dict[str, Any]) -> None:
                hs.push_delivery.wake()
                for as_id in list(hs.appservice_pusher.workers):
                    hs.appservice_pusher.wake(as_id)
                # MSC3202 "left": the leaves among another process's events (after the frontier moved).
                hs.appservice_ephemeral.events_moved()

            bus.on("events", deliveries)

    @property
    def presence_owner(self) -> PresenceOwner | None:
        """Set in the process that owns presence (after ``wire``): its replication listener takes the
        changes the others relay."""
        return self._presence_owner

    def admin_change_middleware(self) -> Any:
        """After an admin API write here (shadow bans, blocked rooms, overrides), the other processes
        re-read the admin policy they check requests against."""
        bus = self.bus

        @web.middleware
        async def middleware(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            response = await handler(request)
            if request.method != "GET" and request.path.startswith("/_synapse/admin/"):
                bus.publish("policy", {})
            return response

        return middleware

    async def stop(self) -> None:
        if self._presence_owner is not None:
            await self._presence_owner.stop()
        if self.liveness is not None:
            await self.liveness.stop()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        await self.bus.stop()
