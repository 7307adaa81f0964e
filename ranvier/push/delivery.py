"""Deliveries to push gateways (Push Gateway API ``POST /_matrix/push/v1/notify``) for http pushers.

Durable by position: each pusher records how far through its user's push actions (event_push_actions,
written in the events' own persist transactions) it has delivered; a delivery moves the position only
once the gateway answered 200, so after a crash or restart the loop sends what is past the position
(at least once; the gateway may see a notification twice if we stopped between its answer and the
write). A failing gateway is retried with exponential back-off (1 s doubling to ``max_backoff``); a pushkey
the gateway lists in ``rejected`` has its pusher removed (Push Gateway API: "the homeserver should
remove the pusher"). Gateways are reached through the federation's outbound IP blocklist: a user's
pusher URL must not make the server call into its own network.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

import aiohttp
import yarl

from ..federation.ip_blocklist import BlocklistingResolver, IpBlocklist, is_ip_literal
from ..storage.interfaces import EventToPersist
from ..storage.protocols.composite import HasEvents, HasPushActions, HasPushers, HasState
from ..storage.sql.push_counts import Notification
from ..storage.sql.pushers import Pusher

logger = logging.getLogger(__name__)

BATCH = 50
REQUEST_TIMEOUT = 30.0
PusherKey = tuple[str, str, str]


class DeliveryStorage(HasEvents, HasState, HasPushActions, HasPushers, Protocol):
    """What push/delivery.py asks of storage."""


def tweaks_of(actions: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for action in actions:
        if isinstance(action, dict) and isinstance(action.get("set_tweak"), str):
            out[action["set_tweak"]] = action.get("value", True)
    return out


class PushDelivery:
    def __init__(
        self,
        storage: DeliveryStorage,
        blocklist: IpBlocklist,
        notified_users: Callable[[Sequence[EventToPersist]], set[str] | None],
        max_backoff: float = 300.0,
    ) -> None:
        self._storage = storage
        self._blocklist = blocklist
        # After a commit: whose notifications the batch made (PushActionsHook.take_notified), so a pass
        # looks only at those users' pushers; None: every pusher.
        self._notified_users = notified_users
        self._dirty: set[str] | None = None  # None: look at every pusher (start, pushers changed, errors)
        self._max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        # pusher -> (loop time before which it is not retried, the current back-off)
        self._backoff: dict[PusherKey, tuple[float, float]] = {}

    def wake(self) -> None:
        """Pushers changed: look at all of them."""
        self._dirty = None
        self._wake.set()

    async def on_persisted(self, room_id: str, batch: Sequence[EventToPersist]) -> None:
        """The persister's listener: the users the batch notified have something to send."""
        users = self._notified_users(batch)
        if users is None:
            self._dirty = None
        elif not users:
            return
        elif self._dirty is not None:
            self._dirty |= users
        self._wake.set()

    async def _pushers_to_try(self, now: float) -> list[Pusher]:
        dirty, self._dirty = self._dirty, set()
        if dirty is None:
            pushers: list[Pusher] = await self._storage.pushers.all_pushers()
            return pushers
        due = {key[0] for key, (not_before, _) in self._backoff.items() if not_before <= now}
        users = dirty | due
        return await self._storage.pushers.pushers_for_users(users) if users else []

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=BlocklistingResolver(self._blocklist)),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        )
        self._task = asyncio.create_task(self._run(), name="push-delivery")
        self._wake.set()  # what a previous run left undelivered

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            error = False
            try:
                for pusher in await self._pushers_to_try(loop.time()):
                    key = (pusher.user_id, pusher.app_id, pusher.pushkey)
                    not_before, delay = self._backoff.get(key, (0.0, 0.0))
                    if not_before > loop.time():
                        continue  # its retry comes when the back-off ends
                    if await self._deliver(pusher):
                        self._backoff.pop(key, None)
                    else:
                        delay = min(self._max_backoff, max(1.0, delay * 2))
                        self._backoff[key] = (loop.time() + delay, delay)
            except Exception:
                logger.exception("push delivery pass failed")
                self._dirty = None
                error = True
            retries = [not_before for not_before, _ in self._backoff.values()]
            if error:
                retries.append(loop.time() + 1.0)
            timeout = max(0.0, min(retries) - loop.time()) if retries else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _deliver(self, pusher: Pusher) -> bool:
        """Send what is past the pusher's position, in order; False when the gateway failed."""
        while True:
            pending = await self._storage.push_actions.pending_for_pusher(
                pusher.user_id, pusher.last_stream_ordering, BATCH
            )
            if not pending:
                return True
            for item in pending:
                outcome = await self._notify(pusher, item)
                if outcome == "failed":
                    return False
                if outcome == "rejected":
                    logger.info(
                        "push gateway rejected pushkey of %s (%s): pusher removed",
                        pusher.user_id,
                        pusher.app_id,
                    )
                    await self._storage.pushers.delete_pusher(pusher.user_id, pusher.app_id, pusher.pushkey)
                    return True
                await self._storage.pushers.advance(
                    pusher.user_id, pusher.app_id, pusher.pushkey, item.stream_ordering
                )
                pusher = _moved(pusher, item.stream_ordering)

    async def _notify(self, pusher: Pusher, item: Notification) -> str:
        assert self._session is not None
        url = pusher.data.get("url")
        if not isinstance(url, str):
            return "rejected"
        body = {"notification": await self._payload(pusher, item)}
        try:
            host = yarl.URL(url).host or ""
            if is_ip_literal(host):
                self._blocklist.check(host)  # the resolver is not asked about IP literals
            async with self._session.post(url, json=body) as resp:
                if resp.status != 200:
                    logger.warning("push gateway %s answered %s", url, resp.status)
                    return "failed"
                answer = await resp.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
            logger.warning("push gateway %s unreachable: %s", url, e)
            return "failed"
        rejected = answer.get("rejected") if isinstance(answer, dict) else None
        if isinstance(rejected, list) and pusher.pushkey in rejected:
            return "rejected"
        return "sent"

    async def _payload(self, pusher: Pusher, item: Notification) -> dict[str, Any]:
        tweaks = tweaks_of(item.actions)
        data = {k: v for k, v in pusher.data.items() if k != "url"}
        device = {"app_id": pusher.app_id, "pushkey": pusher.pushkey, "data": data, "tweaks": tweaks}
        out: dict[str, Any] = {
            "event_id": item.event_id,
            "room_id": item.room_id,
            "counts": {"unread": await self._unread(pusher.user_id)},
            "devices": [device],
            "prio": "high" if tweaks else "low",
        }
        if data.get("format") == "event_id_only":
            return out
        pdu = await self._storage.events.get_event(item.event_id)
        if pdu is not None:
            out["type"] = pdu.type
            out["sender"] = pdu.sender
            out["content"] = pdu.content
            if pdu.state_key is not None:
                out["user_is_target"] = pdu.state_key == pusher.user_id
            member = await self._storage.state.get_current_state_event(
                item.room_id, "m.room.member", pdu.sender
            )
            name = member.content.get("displayname") if member is not None else None
            if isinstance(name, str):
                out["sender_display_name"] = name
            room_name = await self._storage.state.get_current_state_event(item.room_id, "m.room.name", "")
            if room_name is not None and isinstance(room_name.content.get("name"), str):
                out["room_name"] = room_name.content["name"]
        return out

    async def _unread(self, user_id: str) -> int:
        rooms = await self._storage.state.get_rooms_for_user(user_id)
        joined = [r for r, m in rooms.items() if m == "join"]
        counts = await self._storage.push_actions.unread_counts(user_id, joined)
        return sum(c.total().notification_count for c in counts.values())


def _moved(pusher: Pusher, position: int) -> Pusher:
    return replace(pusher, last_stream_ordering=position)
