"""Ephemeral data for appservices with ``receive_ephemeral`` (AS "Pushing ephemeral data", MSC2409):
typing and read receipts of the rooms an appservice is interested in, presence of the users in its
namespaces and of those sharing a room with one (as Synapse's interest in presence), to-device messages
for the devices of users in its namespaces (MSC2409's ``de.sorunome.msc2409.to_device``), queued like events;
for appservices with ``org.matrix.msc3202``, device list changes of users who share a room with a user of
their namespaces, and the users who stopped sharing any room with them (``org.matrix.msc3202.device_lists``
``changed`` and ``left``; Synapse leaves ``left`` uncomputed). ``left`` is read from the event stream's
leaves, kicks and bans: after each, whoever no longer shares a room with a user of the namespaces (the one
who left, or, when a namespace user left, the room's other members) has left.

The feed follows the same wake-up as long-polling /sync (``SyncNotifier.ticket``), then reads what
changed since it last looked: the typing stream's change counter (in memory, like typing itself), and
the receipts, presence and to-device streams, whose read positions are stored with what was queued from
them (one transaction), so nothing is skipped or queued twice across a restart. On the very first start
the feed begins at the streams' current positions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ..clock import now_ms
from ..presence.state import client_event
from ..storage.interfaces import EventToPersist
from ..storage.protocols.appservice import AppServiceStorage
from ..storage.protocols.presence import PresenceStorage
from ..storage.sql.appservice import FeedItem
from ..storage.sql.receipts import client_receipt_contents
from .pusher import AppServicePusher

logger = logging.getLogger(__name__)

MAX_ROWS_PER_POLL = 1000
# The feed's position in the event stream, for the leaves that end a user's sharing of rooms (MSC3202 left).
DEPARTURES = "departures"

Row = TypeVar("Row")


class EphemeralFeed:
    def __init__(
        self,
        pusher: AppServicePusher,
        store: AppServiceStorage,
        typing: Any,
        notifier: Any,
        presence: PresenceStorage | None = None,
        events_position: Callable[[], int] | None = None,
    ) -> None:
        """``typing``: the TypingStream (``serial``, ``rooms_changed_since``, ``typing_users``);
        ``notifier``: the SyncNotifier (``ticket()``); ``presence``: the presence states (None when
        presence is off); ``events_position``: the event stream's position up to which every event is
        committed (the stream's ``current_position``), where the departures are read up to. The newest
        stream ordering in the table is not that when several processes persist events (ranvier.workers):
        a lower ordering may still be in another writer's open transaction, and would be skipped."""
        self._events_position = events_position
        self._presence = presence
        self._pusher = pusher
        self._store = store
        self._typing = typing
        self._notifier = notifier
        self._services = [w.service for w in pusher.workers.values() if w.service.receive_ephemeral]
        self._msc3202 = [w.service for w in pusher.workers.values() if w.service.msc3202]
        self._task: asyncio.Task[None] | None = None
        self._typing_serial = 0
        self._positions: dict[str, int] = {}
        # Set by a persisted leave, kick or ban (events do not go through the /sync notifier).
        self._departed = asyncio.Event()

    async def start(self) -> None:
        if not self._services and not self._msc3202:
            return
        self._typing_serial = self._typing.serial
        streams = ["receipts", "to_device", "device_lists"]
        if self._presence is not None:
            streams.append("presence")
        if self._msc3202:
            streams.append(DEPARTURES)
        for stream in streams:
            stored = await self._store.feed_position(stream)
            if stored is None:
                stored = await self._current(stream)
                await self._store.enqueue_feed([], now_ms(), stream, stored)
            self._positions[stream] = stored
        self._task = asyncio.create_task(self._run(), name="appservice ephemeral")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def on_persisted(self, room_id: str, batch: Sequence[EventToPersist]) -> None:
        """The persister's listener: a leave, kick or ban may end a user's sharing of rooms (MSC3202 left)."""
        if self._msc3202 and any(
            item.pdu.type == "m.room.member" and item.pdu.membership in ("leave", "ban") for item in batch
        ):
            self._departed.set()

    def events_moved(self) -> None:
        """Events were persisted by another process (ranvier.workers announces them to this one, which runs
        the feed): a leave among them may end a user's sharing of rooms, and this process's persister,
        whose listener is ``on_persisted``, did not see it."""
        if self._msc3202:
            self._departed.set()

    async def _run(self) -> None:
        while True:
            ticket = self._notifier.ticket()
            self._departed.clear()
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("appservice ephemeral feed failed; continuing")
            waits = [asyncio.ensure_future(ticket.wait()), asyncio.ensure_future(self._departed.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    async def poll(self) -> None:
        """Queue what changed since the last poll."""
        await self._poll_typing()
        await self._poll_receipts()
        await self._poll_presence()
        await self._poll_to_device()
        await self._poll_device_lists()
        await self._poll_departures()

    async def _current(self, stream: str) -> int:
        if stream == DEPARTURES:
            if self._events_position is not None:
                return self._events_position()
            return await self._store.events_position()
        return await self._store.stream_position(stream)

    async def _window(
        self,
        stream: str,
        fetch: Callable[[int, int, int], Awaitable[list[Row]]],
        position_of: Callable[[Row], int],
    ) -> tuple[list[Row], int] | None:
        """The rows of ``stream`` since the feed's position, at most MAX_ROWS_PER_POLL, and the position
        they reach; None when nothing is new. A full page ends where its last row is, and the notifier is
        woken so the rest comes on the next poll."""
        since = self._positions[stream]
        upto = await self._current(stream)
        if upto <= since:
            return None
        rows = await fetch(since, upto, MAX_ROWS_PER_POLL)
        if len(rows) == MAX_ROWS_PER_POLL:
            upto = position_of(rows[-1])
            self._notifier.notify()
        return rows, upto

    async def _interested(self, room_id: str) -> list[str]:
        return sorted(await self._pusher.room_interest(room_id))

    async def _poll_typing(self) -> None:
        serial = self._typing.serial
        if serial == self._typing_serial:
            return
        rooms = self._typing.rooms_changed_since(self._typing_serial)
        self._typing_serial = serial
        items = []
        for room_id in sorted(rooms):
            content = {"user_ids": self._typing.typing_users(room_id)}
            items.append(
                FeedItem(await self._interested(room_id), "ephemeral", _edu("m.typing", room_id, content))
            )
        await self._queue(items)

    async def _poll_receipts(self) -> None:
        window = await self._window("receipts", self._store.receipts_between, lambda r: r.stream_pos)
        if window is None:
            return
        receipts, upto = window
        items = [
            FeedItem(await self._interested(room_id), "ephemeral", _edu("m.receipt", room_id, content))
            for room_id, content in client_receipt_contents(receipts).items()
        ]
        await self._queue(items, "receipts", upto)

    async def _poll_presence(self) -> None:
        """``m.presence`` of users an appservice is interested in: in one of its user namespaces, or
        sharing a room with a user who is."""
        if self._presence is None or not self._services:
            return
        window = await self._window("presence", self._presence.between, lambda r: r[0])
        if window is None:
            return
        rows, upto = window
        now = now_ms()
        items = []
        for _, state in rows:
            user_id = state.user_id
            sharing: list[str] | None = None
            as_ids = []
            for service in self._services:
                if service.is_interested_in_user(user_id):
                    as_ids.append(service.id)
                    continue
                if sharing is None:
                    sharing = await self._store.users_sharing_a_room(user_id)
                if any(service.is_interested_in_user(u) for u in sharing):
                    as_ids.append(service.id)
            if as_ids:
                items.append(FeedItem(as_ids, "ephemeral", client_event(state, now)))
        await self._queue(items, "presence", upto)

    async def _poll_to_device(self) -> None:
        window = await self._window("to_device", self._store.to_device_between, lambda r: r[0])
        if window is None:
            return
        rows, upto = window
        items = []
        for _, user_id, device_id, message in rows:
            as_ids = [s.id for s in self._services if s.is_interested_in_user(user_id)]
            if as_ids:
                item = {**message, "to_user_id": user_id, "to_device_id": device_id}
                items.append(FeedItem(as_ids, "to_device", item))
        await self._queue(items, "to_device", upto)

    async def _poll_device_lists(self) -> None:
        window = await self._window("device_lists", self._store.device_list_changes_between, lambda r: r[0])
        if window is None:
            return
        rows, upto = window
        items = []
        for user_id in dict.fromkeys(u for _, u in rows):
            if not self._msc3202:
                break
            sharing = await self._store.users_sharing_a_room(user_id)
            as_ids = [
                s.id
                for s in self._msc3202
                if s.is_interested_in_user(user_id) or any(s.is_interested_in_user(u) for u in sharing)
            ]
            if as_ids:
                items.append(FeedItem(as_ids, "device_list", {"user_id": user_id}))
        await self._queue(items, "device_lists", upto)

    async def _poll_departures(self) -> None:
        if not self._msc3202:
            return
        window = await self._window(DEPARTURES, self._store.departures_between, lambda r: r[0])
        if window is None:
            return
        rows, upto = window
        room_members = await self._store.joined_members_of({room_id for _, room_id, _ in rows})
        # (service, candidate) pairs in the order found: whoever may have stopped sharing every room with
        # the service's namespace through one of these departures.
        checks: dict[tuple[str, str], None] = {}
        for _, room_id, user_id in rows:
            members = room_members.get(room_id, [])
            for service in self._msc3202:
                if service.is_interested_in_user(user_id):
                    # A user of the namespace left: the room's other members may share nothing with it now.
                    for member in members:
                        if not service.is_interested_in_user(member):
                            checks[(service.id, member)] = None
                elif any(service.is_interested_in_user(m) for m in members):
                    checks[(service.id, user_id)] = None  # shared this room with the namespace until now
        items: list[FeedItem] = []
        if checks:
            # Two queries for every candidate at once: their rooms, then those rooms' members.
            rooms_of = await self._store.joined_rooms_of({candidate for _, candidate in checks})
            members_of = await self._store.joined_members_of(set().union(*rooms_of.values()))
            services = {s.id: s for s in self._msc3202}
            for as_id, candidate in checks:
                service = services[as_id]
                shares = any(
                    service.is_interested_in_user(u)
                    for room_id in rooms_of.get(candidate, ())
                    for u in members_of.get(room_id, ())
                )
                if not shares:
                    items.append(FeedItem([as_id], "device_list_left", {"user_id": candidate}))
        await self._queue(items, DEPARTURES, upto)

    async def _queue(self, items: list[FeedItem], stream: str | None = None, pos: int | None = None) -> None:
        wanted = {s.id for s in self._services} | {s.id for s in self._msc3202}
        items = [FeedItem([i for i in item.as_ids if i in wanted], item.kind, item.content) for item in items]
        await self._store.enqueue_feed([item for item in items if item.as_ids], now_ms(), stream, pos)
        if stream is not None and pos is not None:
            self._positions[stream] = pos
        for as_id in {i for item in items for i in item.as_ids}:
            self._pusher.wake(as_id)


def _edu(edu_type: str, room_id: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"type": edu_type, "room_id": room_id, "content": content}
