"""EDUs of an incoming transaction: ``m.typing`` (kept in memory) and ``m.receipt`` (stored); others ignored.

S2S "Typing Notifications": the user must belong to the sending server and be in the room. S2S "Server
Access Control Lists": typing EDUs and receipts of a room the origin is denied are ignored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from ..protocol.errors import InvalidIdentifier
from ..protocol.identifiers import server_of
from ..storage.protocols.composite import HasReceipts, HasRooms, HasState

logger = logging.getLogger(__name__)

TYPING_TIMEOUT_MS = 30_000  # remote servers refresh typing every few seconds while it lasts

ServerAllowed = Callable[[str, str], Awaitable[bool]]
# Handlers of further EDU types, ``async (origin, content)`` (e.g. the E2EE ones, from ranvier.devices).
EduHandler = Callable[[str, dict[str, Any]], Awaitable[None]]


class IncomingEdusStorage(HasRooms, HasState, HasReceipts, Protocol):
    """What rooms/incoming_edus.py asks of storage."""


def _user_of(origin: str, user_id: object) -> str | None:
    if not isinstance(user_id, str):
        return None
    try:
        return user_id if server_of(user_id) == origin else None
    except InvalidIdentifier:
        return None


class TypingState:
    """Who is typing where: room -> user -> until (ms). In memory only; typing is ephemeral."""

    def __init__(self, clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self._typing: dict[str, dict[str, int]] = {}
        self._clock_ms = clock_ms

    def set_typing(
        self, room_id: str, user_id: str, typing: bool, timeout_ms: int = TYPING_TIMEOUT_MS
    ) -> None:
        users = self._typing.setdefault(room_id, {})
        if typing:
            users[user_id] = self._clock_ms() + timeout_ms
        else:
            users.pop(user_id, None)

    def typing_users(self, room_id: str) -> list[str]:
        now = self._clock_ms()
        users = self._typing.get(room_id, {})
        for user_id in [u for u, until in users.items() if until <= now]:
            del users[user_id]
        return sorted(users)


class IncomingEdus:
    def __init__(
        self,
        storage: IncomingEdusStorage,
        typing: TypingState,
        server_allowed: ServerAllowed,
        on_receipt: Callable[[], None] | None = None,
    ) -> None:
        self._storage = storage
        self.typing = typing
        self._on_receipt = on_receipt  # wakes long-polling /sync
        self._server_allowed = server_allowed
        self.handlers: dict[str, EduHandler] = {}

    async def receive_edus(self, origin: str, edus: Sequence[Any]) -> None:
        """Apply what we understand; a malformed or unknown EDU is skipped, never an error."""
        for edu in edus:
            if not isinstance(edu, dict) or not isinstance(edu.get("content"), dict):
                continue
            kind, content = edu.get("edu_type"), edu["content"]
            try:
                if kind == "m.typing":
                    await self._typing(origin, content)
                elif kind == "m.receipt":
                    await self._receipts(origin, content)
                elif isinstance(kind, str) and kind in self.handlers:
                    await self.handlers[kind](origin, content)
            except Exception:
                logger.exception("failed to apply an %s EDU from %s", kind, origin)

    async def _in_room(self, room_id: object, user_id: str) -> bool:
        if not isinstance(room_id, str):
            return False
        membership = await self._storage.state.get_membership(room_id, user_id)
        return membership is not None and membership[0] == "join"

    async def _typing(self, origin: str, content: dict[str, Any]) -> None:
        user_id = _user_of(origin, content.get("user_id"))
        room_id, typing = content.get("room_id"), content.get("typing")
        if user_id is None or not isinstance(typing, bool) or not await self._in_room(room_id, user_id):
            return
        assert isinstance(room_id, str)
        if await self._server_allowed(room_id, origin):
            self.typing.set_typing(room_id, user_id, typing)

    async def _receipts(self, origin: str, content: dict[str, Any]) -> None:
        for room_id, by_type in content.items():
            if not isinstance(by_type, dict) or await self._storage.rooms.get_room_version(room_id) is None:
                continue
            if not await self._server_allowed(room_id, origin):
                continue  # every receipt of a denied room is ignored
            for receipt_type, by_user in by_type.items():
                if not isinstance(by_user, dict):
                    continue
                for raw_user, receipt in by_user.items():
                    user_id = _user_of(origin, raw_user)
                    if user_id is None or not isinstance(receipt, dict):
                        continue
                    event_ids, data = receipt.get("event_ids"), receipt.get("data")
                    if not isinstance(event_ids, list) or not event_ids or not isinstance(event_ids[0], str):
                        continue
                    data = dict(data) if isinstance(data, dict) else {}
                    thread_id = data.pop("thread_id", None)
                    if not await self._in_room(room_id, user_id):
                        continue
                    await self._storage.receipts.put_receipt(
                        room_id,
                        receipt_type,
                        user_id,
                        event_ids[0],
                        data,
                        thread_id=thread_id if isinstance(thread_id, str) else None,
                    )
                    if self._on_receipt is not None:
                        self._on_receipt()
