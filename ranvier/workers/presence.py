"""Presence with several processes: one owner, the others relay.

``PresenceService`` is a state machine in memory (who is syncing, since when, each device's stated state)
with its results written to the database. Two processes running it would each time users out on half of
the facts, so it is owned by the process with the background role (the one that runs its timers). The
others run ``RelayedPresence``: what would change presence (a ``/sync`` starting and ending, PUT
/presence, activity, an incoming ``m.presence`` EDU) is sent to the owner; reads come from the database,
which the owner writes, and every process's ``/sync`` is woken by the owner's notifications.

A ``/sync`` start, a PUT /presence and a user's activity wait for the owner to have applied them (over the
owner's replication listener, ``PRESENCE_PATH``), as they would in one process: a client that syncs and then
long-polls must not be woken by a presence change of its own arriving late. The rest goes over the bus
without waiting (and everything does when the owner has no replication listener).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..presence.service import PresenceService
from .replication_http import internal_body

if TYPE_CHECKING:
    # A type only: importing the bus imports redis (about 8 MB of RSS with what it pulls in, cryptography
    # included), which a single-process server never uses.
    from .bus import Bus

logger = logging.getLogger(__name__)

KIND = "presence"
PRESENCE_PATH = "/_ranvier/replication/v1/presence"
# A /sync relayed as started whose end never arrives (its process died) stops counting after this long.
MAX_SYNC_SECONDS = 600.0


class RelayedPresence(PresenceService):
    """``PresenceService`` of a process that does not own presence: changes go to the owner."""

    bus: Bus | None = None
    # Sends a change to the owner and returns once it is applied (set by the runtime when the owner has a
    # replication listener); raises OSError-like errors when the owner cannot be reached.
    post: Callable[[dict[str, Any]], Awaitable[None]] | None = None

    def _relay(self, body: dict[str, Any]) -> None:
        if self.bus is not None:
            self.bus.publish(KIND, body)

    async def _relay_and_wait(self, body: dict[str, Any]) -> None:
        if self.post is not None:
            try:
                await self.post(body)
                return
            except Exception as e:
                # Presence is best effort: the request goes on, the change still reaches the owner.
                logger.warning("presence owner unreachable (%s): relayed without waiting", e)
        self._relay(body)

    async def start(self) -> None:
        return None  # the owner runs the timers

    async def set_state(
        self, user_id: str, device_id: str | None, state: str, status_msg: str | None
    ) -> None:
        if self.enabled:
            await self._relay_and_wait(
                {"op": "set", "u": user_id, "d": device_id, "s": state, "m": status_msg}
            )

    async def bump_active(self, user_id: str) -> None:
        if self.enabled and self.is_local(user_id):
            # Awaited too: in one process the sender's activity is applied before its send is answered.
            await self._relay_and_wait({"op": "active", "u": user_id})

    @contextlib.asynccontextmanager
    async def syncing(
        self, user_id: str, device_id: str | None, set_presence: str | None
    ) -> AsyncIterator[None]:
        if not self.enabled:
            yield
            return
        sync_id = uuid.uuid4().hex
        await self._relay_and_wait(
            {"op": "sync", "id": sync_id, "u": user_id, "d": device_id, "p": set_presence}
        )
        try:
            yield
        finally:
            self._relay({"op": "sync_end", "id": sync_id})

    async def on_edu(self, origin: str, content: dict[str, Any]) -> None:
        if self.enabled:
            self._relay({"op": "edu", "o": origin, "c": content})

    async def on_persisted(self, room_id: str, batch: Sequence[Any]) -> None:
        """Joins persisted here (a room's persister) are told to the owner, which holds the presence the new
        member's server must hear of (and the joined local user's own). The activity of local senders
        reaches the owner from the process that took their send (``bump_active``)."""
        if not self.enabled:
            return
        for item in batch:
            pdu = item.pdu
            if item.outlier or item.rejected_reason is not None or item.soft_failed:
                continue
            if pdu.type == "m.room.member" and pdu.membership == "join" and pdu.state_key is not None:
                self._relay({"op": "joined", "r": room_id, "u": pdu.state_key})


class PresenceOwner:
    """The owner's side: applies what the other processes relay."""

    def __init__(self, presence: PresenceService) -> None:
        self._presence = presence
        self._syncs: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def on_message(self, body: dict[str, Any]) -> None:
        """From the bus: applied in the background."""
        self._spawn(self.apply(body))

    async def apply(self, body: dict[str, Any]) -> None:
        """Apply one relayed change; returns once it is applied (a /sync start: once the sync counts)."""
        op = body.get("op")
        user_id = body.get("u")
        device_id = body.get("d")
        if op == "sync_end":
            ended = self._syncs.pop(str(body.get("id")), None)
            if ended is not None:
                ended.set()
            return
        if op == "edu":
            origin, content = body.get("o"), body.get("c")
            if isinstance(origin, str) and isinstance(content, dict):
                await self._presence.on_edu(origin, content)
            return
        if op == "joined":
            room_id = body.get("r")
            if isinstance(room_id, str) and isinstance(user_id, str):
                await self._presence.on_joined(room_id, user_id)
            return
        if not isinstance(user_id, str) or not (device_id is None or isinstance(device_id, str)):
            return
        if op == "active":
            await self._presence.bump_active(user_id)
        elif op == "set":
            state, status_msg = body.get("s"), body.get("m")
            if isinstance(state, str) and (status_msg is None or isinstance(status_msg, str)):
                await self._presence.set_state(user_id, device_id, state, status_msg)
        elif op == "sync":
            sync_id, wanted = body.get("id"), body.get("p")
            if isinstance(sync_id, str) and (wanted is None or isinstance(wanted, str)):
                ended = self._syncs[sync_id] = asyncio.Event()
                counted = asyncio.Event()
                self._spawn(self._hold_sync(user_id, device_id, wanted, counted, ended))
                await counted.wait()

    async def _hold_sync(
        self,
        user_id: str,
        device_id: str | None,
        wanted: str | None,
        counted: asyncio.Event,
        ended: asyncio.Event,
    ) -> None:
        try:
            async with self._presence.syncing(user_id, device_id, wanted):
                counted.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ended.wait(), MAX_SYNC_SECONDS)
        finally:
            counted.set()  # a failure must not leave the relaying request waiting

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(self._guarded(work), name="relayed presence")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guarded(work: Any) -> None:
        try:
            await work
        except Exception:
            logger.exception("relayed presence change failed")

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


def add_presence_route(app: web.Application, secret: str, owner: PresenceOwner) -> None:
    """The owner's side of ``RelayedPresence.post``."""

    async def presence(request: web.Request) -> web.Response:
        body = await internal_body(request, secret)
        if isinstance(body, web.Response):
            return body
        await owner.apply(body)
        return web.json_response({})

    app.router.add_post(PRESENCE_PATH, presence)
