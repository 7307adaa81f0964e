"""Ephemeral data for appservices with ``receive_ephemeral`` (AS "Pushing ephemeral data", MSC2409):
typing and read receipts of the rooms an appservice is interested in, queued like events.

The feed follows the same wake-up as long-polling /sync (``SyncNotifier.ticket``), then reads what
changed since it last looked: the typing stream's change counter and the receipts stream position.
Ephemeral data is not kept across a restart of Ranvier (typing is in memory; receipts after the last
position seen are picked up from the position current at start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ..storage.sql.appservice import AppServiceStore
from ..storage.sql.receipts import client_receipt_contents
from .pusher import AppServicePusher

logger = logging.getLogger(__name__)


class EphemeralFeed:
    def __init__(self, pusher: AppServicePusher, store: AppServiceStore, typing: Any, notifier: Any) -> None:
        """``typing``: the TypingStream (``serial``, ``rooms_changed_since``, ``typing_users``);
        ``notifier``: the SyncNotifier (``ticket()``)."""
        self._pusher = pusher
        self._store = store
        self._typing = typing
        self._notifier = notifier
        self._task: asyncio.Task[None] | None = None
        self._typing_serial = 0
        self._receipt_pos = 0

    def wanted(self) -> bool:
        return any(w.service.receive_ephemeral for w in self._pusher.workers.values())

    async def start(self) -> None:
        if not self.wanted():
            return
        self._typing_serial = self._typing.serial
        self._receipt_pos = await self._receipt_max()
        self._task = asyncio.create_task(self._run(), name="appservice ephemeral")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _receipt_max(self) -> int:
        value = await self._store.db.fetchval("SELECT pos FROM aux_stream_positions WHERE name = 'receipts'")
        return int(value or 0)

    async def _run(self) -> None:
        while True:
            ticket = self._notifier.ticket()
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("appservice ephemeral feed failed; continuing")
            await ticket.wait()

    async def poll(self) -> None:
        """Queue what changed since the last poll."""
        serial = self._typing.serial
        rooms = (
            self._typing.rooms_changed_since(self._typing_serial) if serial != self._typing_serial else set()
        )
        self._typing_serial = serial
        for room_id in sorted(rooms):
            edu = {
                "type": "m.typing",
                "room_id": room_id,
                "content": {"user_ids": self._typing.typing_users(room_id)},
            }
            await self._pusher.enqueue_ephemeral(sorted(await self._pusher.room_interest(room_id)), edu)
        upto = await self._receipt_max()
        if upto > self._receipt_pos:
            receipts = await self._store.receipts_between(self._receipt_pos, upto)
            self._receipt_pos = upto
            for room_id, content in client_receipt_contents(receipts).items():
                edu = {"type": "m.receipt", "room_id": room_id, "content": content}
                await self._pusher.enqueue_ephemeral(sorted(await self._pusher.room_interest(room_id)), edu)
