"""The one Matrix client every workload uses against either server: raw client-server API over aiohttp,
registration through the ordinary ``m.login.dummy`` flow, and a ``/sync`` long-poller that timestamps what
it sees. Every wait is bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import aiohttp

# Same filter for both servers: Synapse hides rooms joined with partial state from a sync that does not
# lazy-load members (and real clients such as Element always lazy-load).
LAZY_FILTER = json.dumps({"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 50}}})
_txn = itertools.count()


class RequestFailed(Exception):
    pass


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class MxClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, user_id: str, token: str) -> None:
        self.session = session
        self.base = base_url.rstrip("/") + "/_matrix/client/v3"
        self.user_id = user_id
        self.token = token

    @classmethod
    async def register(cls, session: aiohttp.ClientSession, base_url: str, prefix: str) -> MxClient:
        localpart = f"{prefix}{secrets.token_hex(3)}"
        body: dict[str, Any] = {"username": localpart, "password": secrets.token_hex(12)}
        url = base_url.rstrip("/") + "/_matrix/client/v3/register"
        for _ in range(3):  # at most: the auth-less probe answered 401, then the dummy stage
            async with session.post(url, json=body) as resp:
                answer = await resp.json()
                if resp.status == 200:
                    return cls(session, base_url, answer["user_id"], answer["access_token"])
                if resp.status != 401 or "session" not in answer:
                    raise RequestFailed(f"register -> {resp.status} {answer}")
                body["auth"] = {"type": "m.login.dummy", "session": answer["session"]}
        raise RequestFailed("registration did not complete")

    async def call(
        self, method: str, path: str, body: Any = None, http_timeout: float = 60.0, **params: str
    ) -> tuple[int, Any]:
        async with self.session.request(
            method,
            self.base + path,
            json=body,
            params=params or None,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=aiohttp.ClientTimeout(total=http_timeout),
        ) as resp:
            try:
                return resp.status, await resp.json(content_type=None)
            except (json.JSONDecodeError, aiohttp.ContentTypeError):
                return resp.status, {"raw": (await resp.text())[:200]}

    async def ok(
        self, method: str, path: str, body: Any = None, http_timeout: float = 60.0, **params: str
    ) -> Any:
        status, answer = await self.call(method, path, body, http_timeout, **params)
        if status != 200:
            # The endpoint family, not the ids in the path: the table has room for the server's words only.
            where = path.strip("/").split("/")[0]
            if isinstance(answer, dict) and "errcode" in answer:
                answer = f"{answer['errcode']}: {answer.get('error', '')}"
            raise RequestFailed(f"{method} /{where} -> {status} {str(answer)[:400]}")
        return answer

    async def create_room(self, **body: Any) -> str:
        return str((await self.ok("POST", "/createRoom", {"preset": "public_chat", **body}))["room_id"])

    async def join(self, room_id: str, via: str) -> None:
        await self.ok("POST", f"/join/{q(room_id)}", {}, http_timeout=300, server_name=via)

    async def send_text(self, room_id: str, text: str) -> str:
        txn = f"b{next(_txn)}-{secrets.token_hex(4)}"
        path = f"/rooms/{q(room_id)}/send/m.room.message/{txn}"
        return str((await self.ok("PUT", path, {"msgtype": "m.text", "body": text}))["event_id"])

    async def put_state(self, room_id: str, event_type: str, key: str, content: dict[str, Any]) -> None:
        await self.ok("PUT", f"/rooms/{q(room_id)}/state/{event_type}/{q(key)}", content)

    async def texts_back(self, room_id: str, limit: int = 50) -> list[str]:
        """Bodies of the latest ``limit`` events, newest first."""
        answer = await self.ok("GET", f"/rooms/{q(room_id)}/messages", dir="b", limit=str(limit))
        return [e["content"].get("body", "") for e in answer["chunk"] if e.get("type") == "m.room.message"]

    async def count_texts(self, room_id: str, prefix: str, max_pages: int = 100) -> int:
        """How many messages whose body starts with ``prefix`` the room's history serves (newest first,
        bounded number of pages)."""
        found, token = 0, None
        for _ in range(max_pages):
            params = {"dir": "b", "limit": "1000"} | ({"from": token} if token else {})
            answer = await self.ok("GET", f"/rooms/{q(room_id)}/messages", **params)
            chunk = answer.get("chunk", [])
            found += sum(
                1
                for e in chunk
                if e.get("type") == "m.room.message" and str(e["content"].get("body", "")).startswith(prefix)
            )
            token = answer.get("end")
            if not chunk or not token:
                break
        return found


class SyncWatcher:
    """Long-polls ``/sync`` in a task; calls ``on_event(room_id, event, seen_at)`` for every timeline event
    and remembers when each joined room first appeared. Runs until ``stop()`` or ``max_seconds``."""

    def __init__(
        self,
        client: MxClient,
        on_event: Callable[[str, dict[str, Any], float], None] | None = None,
        poll_ms: int = 30000,
        max_seconds: float = 1800.0,
    ) -> None:
        self.client = client
        self.on_event = on_event
        self.poll_ms = poll_ms
        self.max_seconds = max_seconds
        self.since: str | None = None
        self.joined_at: dict[str, float] = {}
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        await self._once(0)  # the initial sync, so that everything afterwards is incremental
        self._task = asyncio.create_task(self._loop())

    async def _once(self, timeout_ms: int) -> None:
        params = {"timeout": str(timeout_ms), "filter": LAZY_FILTER}
        if self.since:
            params["since"] = self.since
        answer = await self.client.ok("GET", "/sync", http_timeout=timeout_ms / 1000 + 30, **params)
        now = time.perf_counter()
        self.since = answer["next_batch"]
        for room_id, room in answer.get("rooms", {}).get("join", {}).items():
            self.joined_at.setdefault(room_id, now)
            if self.on_event is not None:
                for event in room.get("timeline", {}).get("events", []):
                    self.on_event(room_id, event, now)
        self._changed.set()

    async def _loop(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        try:
            while time.monotonic() < deadline:
                await self._once(self.poll_ms)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # reported by wait_for_room/the workload, never swallowed
            self.error = f"sync failed: {e}"
            self._changed.set()

    async def wait_joined(self, room_id: str, timeout: float) -> float:
        """The perf_counter time at which the room first showed up as joined."""
        deadline = time.monotonic() + timeout
        while room_id not in self.joined_at:
            if self.error:
                raise RequestFailed(self.error)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"room not in /sync after {timeout:.0f}s")
            self._changed.clear()
            if room_id in self.joined_at:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return self.joined_at[room_id]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)
