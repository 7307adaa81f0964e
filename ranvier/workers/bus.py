"""The replication bus between Ranvier processes: Redis pub/sub.

PostgreSQL is the only source of truth. A message says only that something moved ("the event stream
advanced to P on writer W", "account data changed", "forget these cached events"); whoever receives it
reads the rows from the database. A lost message (Redis restarted, a subscriber reconnecting) therefore
loses no data: on reconnecting, every subscriber runs its ``on_resync`` callbacks, which re-read
positions from the database and wake every waiter.

One channel per deployment (``{prefix}:replication``); a message is a JSON object with the sender's
instance name (``i``), a kind (``k``) and a body (``b``). Messages of this process come back to it from
Redis and are dropped: the sender already applied them locally.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], None]


class Bus:
    def __init__(self, url: str, instance: str, prefix: str = "ranvier") -> None:
        self.url = url
        self.instance = instance
        self.channel = f"{prefix}:replication"
        self._handlers: dict[str, list[Handler]] = {}
        self._resync: list[Callable[[], Awaitable[None]]] = []
        self._client: aioredis.Redis | None = None
        self._outbox: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        # Counters for the metrics and the tests.
        self.sent = 0
        self.received = 0

    def on(self, kind: str, handler: Handler) -> None:
        self._handlers.setdefault(kind, []).append(handler)

    def on_resync(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._resync.append(callback)

    async def start(self) -> None:
        """Connect and subscribe; returns once subscribed (so nothing published after is missed)."""
        # Named, so an operator's CLIENT LIST tells the processes apart.
        self._client = aioredis.Redis.from_url(self.url, client_name=f"{self.channel}:{self.instance}")
        await self._client.ping()  # fail at start, with the URL in the message, rather than later
        self._tasks = [
            asyncio.create_task(self._subscribe_loop(), name="bus subscribe"),
            asyncio.create_task(self._publish_loop(), name="bus publish"),
        ]
        await self._subscribed.wait()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def publish(self, kind: str, body: dict[str, Any]) -> None:
        """Queue a message; never blocks the caller (a persist must not wait on Redis). Order is kept."""
        self._outbox.put_nowait(json.dumps({"i": self.instance, "k": kind, "b": body}, separators=(",", ":")))

    async def _publish_loop(self) -> None:
        assert self._client is not None
        while True:
            message = await self._outbox.get()
            while True:
                try:
                    await self._client.publish(self.channel, message)
                    self.sent += 1
                    break
                except RedisError as e:
                    # Held, not dropped, while Redis is away: the subscribers resync when it is back anyway.
                    logger.warning("replication bus: publish failed (%s), retrying", e)
                    await asyncio.sleep(0.5)

    async def _subscribe_loop(self) -> None:
        assert self._client is not None
        first = True
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if not first:
                    # Messages sent while we were away are lost: re-read what they would have told us.
                    await self._run_resync()
                first = False
                self._subscribed.set()
                while True:
                    msg = await pubsub.get_message(timeout=5.0)
                    if msg is not None and msg.get("type") == "message":
                        self._dispatch(msg["data"])
            except asyncio.CancelledError:
                await pubsub.aclose()
                raise
            except (RedisError, OSError) as e:
                logger.warning("replication bus: subscription lost (%s), reconnecting", e)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                await asyncio.sleep(0.5)

    async def _run_resync(self) -> None:
        for callback in self._resync:
            try:
                await callback()
            except Exception:
                logger.exception("replication bus: resync callback failed")

    def _dispatch(self, data: bytes | str) -> None:
        try:
            message = json.loads(data)
            sender, kind, body = message["i"], message["k"], message["b"]
        except (ValueError, KeyError, TypeError):
            logger.warning("replication bus: ignored a malformed message")
            return
        if sender == self.instance or not isinstance(body, dict):
            return
        self.received += 1
        for handler in self._handlers.get(kind, ()):
            try:
                handler(body)
            except Exception:
                # One bad handler must not stop the others nor the subscription.
                logger.exception("replication bus: handler for %r failed", kind)
