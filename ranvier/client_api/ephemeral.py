"""Typing notifications, receipts and read markers (CS modules "Typing Notifications", "Receipts",
"Fully read markers"), the in-memory typing stream /sync reads, and the notifier that wakes long-polls.

Local changes are handed to the other servers in the room as EDUs (S2S "Typing Notifications",
"Receipts"); only public ``m.read`` receipts leave the server, ``m.read.private`` stays with its owner.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from ..clock import now_ms
from ..federation.edus import OutboundEdu, receipt_edu, typing_edu
from ..rooms.incoming_edus import TypingState
from ..storage.protocols.composite import HasAccountData, HasEvents, HasReceipts, HasRelations, HasState
from ..storage.sql.push_counts import MAIN_THREAD
from .auth import Authenticator
from .errors import MatrixError, forbidden, invalid_param, not_found
from .http_util import read_json_body

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")
RECEIPT_TYPES = ("m.read", "m.read.private")
FULLY_READ = "m.fully_read"
MAX_TYPING_TIMEOUT_MS = 120_000


class EphemeralStorage(HasEvents, HasState, HasAccountData, HasReceipts, HasRelations, Protocol):
    """What client_api/ephemeral.py asks of storage."""


class SyncNotifier:
    """Wakes long-polling /sync requests when account data, receipts or typing change (the event stream
    has its own wake-up). A waiter takes a ticket *before* reading positions, so a change that lands
    between its read and its wait still wakes it."""

    def __init__(self) -> None:
        self._news = asyncio.Event()

    def ticket(self) -> asyncio.Event:
        return self._news

    def notify(self) -> None:
        news, self._news = self._news, asyncio.Event()
        news.set()


class TypingStream(TypingState):
    """``TypingState`` plus a change counter per room, so /sync can send ``m.typing`` only for rooms whose
    typing users changed since its token. In memory: after a restart the counter starts again at 0, and
    tokens from before (with a larger counter) are read as 0."""

    def __init__(
        self,
        clock_ms: Callable[[], int] = now_ms,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(clock_ms)
        self.serial = 0
        self._room_serial: dict[str, int] = {}
        self._on_change = on_change

    def _bump(self, room_id: str) -> None:
        self.serial += 1
        self._room_serial[room_id] = self.serial
        if self._on_change is not None:
            self._on_change()

    def set_typing(self, room_id: str, user_id: str, typing: bool, timeout_ms: int = 30_000) -> None:
        self.expire()
        before = user_id in self._typing.get(room_id, {})
        super().set_typing(room_id, user_id, typing, timeout_ms)
        if before != typing:
            self._bump(room_id)

    def expire(self) -> None:
        """Drop timed-out typists; a room that lost one counts as changed."""
        now = self._clock_ms()
        for room_id, users in list(self._typing.items()):
            gone = [u for u, until in users.items() if until <= now]
            for user_id in gone:
                del users[user_id]
            if gone:
                self._bump(room_id)
            if not users:
                del self._typing[room_id]  # keep the map to rooms where someone types

    def typing_users(self, room_id: str) -> list[str]:
        self.expire()
        return sorted(self._typing.get(room_id, {}))

    def rooms_changed_since(self, since: int) -> set[str]:
        self.expire()
        if since > self.serial:
            since = 0  # a token from before a restart
        return {room for room, serial in self._room_serial.items() if serial > since}

    def seconds_to_next_expiry(self) -> float | None:
        ends = [until for users in self._typing.values() for until in users.values()]
        if not ends:
            return None
        return max(0.0, (min(ends) - self._clock_ms()) / 1000)


class EphemeralHandlers:
    def __init__(
        self,
        storage: EphemeralStorage,
        authenticator: Authenticator,
        typing: TypingStream,
        notifier: SyncNotifier,
        federation_sender: Any | None = None,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self._storage = storage
        self._auth = authenticator
        self._typing = typing
        self._notifier = notifier
        self._sender = federation_sender
        self._clock_ms = clock_ms

    def routes(self) -> list[web.RouteDef]:
        r: list[web.RouteDef] = []
        for p in PREFIXES:
            r += [
                web.put(p + "/rooms/{room}/typing/{user}", self.put_typing),
                web.post(p + "/rooms/{room}/receipt/{type}/{event}", self.post_receipt),
                web.post(p + "/rooms/{room}/read_markers", self.post_read_markers),
            ]
        return r

    async def _require_joined(self, room_id: str, user_id: str) -> None:
        membership = await self._storage.state.get_membership(room_id, user_id)
        if membership is None or membership[0] != "join":
            raise forbidden(f"You are not joined to room {room_id}")

    async def _broadcast(self, room_id: str, edu: OutboundEdu) -> None:
        if self._sender is None:
            return
        servers = await self._storage.state.get_joined_servers(room_id)
        await self._sender.broadcast_edu(servers, edu)

    # -- typing ---------------------------------------------------------------------------------------

    async def put_typing(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        room_id, user_id = request.match_info["room"], request.match_info["user"]
        if user_id != requester.user_id:
            raise forbidden("You may only set your own typing state")
        body = await read_json_body(request)
        typing = body.get("typing")
        if typing is None:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing 'typing'")
        if not isinstance(typing, bool):
            raise invalid_param("'typing' must be a boolean")
        timeout = body.get("timeout", 30_000)
        if typing and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0):
            raise invalid_param("'timeout' must be a non-negative integer (milliseconds)")
        await self._require_joined(room_id, user_id)
        # 'timeout' is only read (and checked) when typing starts: {"typing": false, "timeout": {}} is fine.
        timeout_ms = min(timeout, MAX_TYPING_TIMEOUT_MS) if typing else 0
        self._typing.set_typing(room_id, user_id, typing, timeout_ms)
        await self._broadcast(room_id, typing_edu(room_id, user_id, typing))
        return web.json_response({})

    # -- receipts and read markers --------------------------------------------------------------------

    async def _event_position(self, room_id: str, event_id: str) -> int:
        meta = await self._storage.events.get_event_meta(event_id)
        if meta is None or meta.room_id != room_id or meta.outlier:
            raise not_found(f"Unknown event {event_id} in room {room_id}")
        return int(meta.stream_ordering)

    async def _put_receipt(
        self, room_id: str, user_id: str, receipt_type: str, event_id: str, thread_id: str | None
    ) -> None:
        position = await self._event_position(room_id, event_id)
        current = await self._storage.receipts.get_receipt(room_id, receipt_type, user_id, thread_id)
        if current is not None and current.event_id != event_id:
            # CS "Receipts": a receipt marks everything up to the event; one for an older event than the
            # current marker says nothing new, so it is accepted and ignored.
            old = await self._storage.events.get_event_meta(current.event_id)
            if old is not None and old.stream_ordering > position:
                return
        ts = self._clock_ms()
        await self._storage.receipts.put_receipt(
            room_id, receipt_type, user_id, event_id, {"ts": ts}, thread_id=thread_id
        )
        self._notifier.notify()
        if receipt_type == "m.read":
            await self._broadcast(room_id, receipt_edu(room_id, user_id, event_id, ts, thread_id=thread_id))

    async def _check_thread(self, room_id: str, event_id: str, thread_id: str) -> None:
        """400 when "the event_id is not related to the thread_id" (CS "POST /receipt"): the event's thread
        (CS "Threaded read receipts": its m.thread root, following up to 3 relationships) or 'main'."""
        await self._event_position(room_id, event_id)  # an unknown event is a 404 first
        relations = self._storage.relations
        if thread_id == (await relations.thread_of(event_id) or MAIN_THREAD):
            return
        # A thread root is in the main timeline, but clients showing a thread also mark its root read in
        # that thread (Synapse accepts it): a root under its own id is accepted too.
        if thread_id != event_id or not await relations.is_thread_root(event_id):
            raise invalid_param(f"{event_id} is not in thread {thread_id}")

    async def _put_fully_read(self, room_id: str, user_id: str, event_id: str) -> None:
        await self._event_position(room_id, event_id)
        await self._storage.account_data.put_room(user_id, room_id, FULLY_READ, {"event_id": event_id})
        self._notifier.notify()

    async def post_receipt(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        room_id = request.match_info["room"]
        receipt_type, event_id = request.match_info["type"], request.match_info["event"]
        body = await read_json_body(request, allow_empty=True)
        if receipt_type not in (*RECEIPT_TYPES, FULLY_READ):
            raise invalid_param(f"Unknown receipt type {receipt_type!r}")
        thread_id = body.get("thread_id")
        if thread_id is not None and (not isinstance(thread_id, str) or not thread_id):
            raise invalid_param("thread_id field must be a non-empty string")
        if thread_id is not None and receipt_type == FULLY_READ:
            raise invalid_param("thread_id is not allowed for m.fully_read")
        await self._require_joined(room_id, requester.user_id)
        if thread_id is not None:
            await self._check_thread(room_id, event_id, thread_id)
        if receipt_type == FULLY_READ:
            await self._put_fully_read(room_id, requester.user_id, event_id)
        else:
            await self._put_receipt(room_id, requester.user_id, receipt_type, event_id, thread_id)
        return web.json_response({})

    async def post_read_markers(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        room_id = request.match_info["room"]
        body = await read_json_body(request, allow_empty=True)
        markers: dict[str, str] = {}
        for key in (FULLY_READ, *RECEIPT_TYPES):
            value = body.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not value.startswith("$"):
                raise invalid_param(f"'{key}' must be an event id")
            markers[key] = value
        await self._require_joined(room_id, requester.user_id)
        # Check every event first so that a bad one changes nothing.
        for event_id in markers.values():
            await self._event_position(room_id, event_id)
        for key, event_id in markers.items():
            if key == FULLY_READ:
                await self._put_fully_read(room_id, requester.user_id, event_id)
            else:
                await self._put_receipt(room_id, requester.user_id, key, event_id, None)
        return web.json_response({})
