"""The presence service: what changes a user's presence, the timer that moves states on, and the
``m.presence`` EDUs to and from other servers (CS "Presence", S2S "Presence").

States that are not offline are kept in memory (loaded at start) and every change worth telling is
stored at a new position of the ``presence`` stream, which /sync and the appservice feed read. Changes of
local users go out as ``m.presence`` EDUs to the servers that share a room with the user, and the states
of local users in a room go to a server when one of its users joins it (and ours to the room's servers
when a local user joins), so that a new peer hears of them without waiting for the next change.

With ``enabled`` false (config ``presence.enabled``, Synapse's ``presence: enabled:``) nothing is tracked,
stored or sent and incoming EDUs are dropped; the endpoints still answer (see client_api/presence.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from ..clock import now_ms
from ..federation.edus import presence_edu
from ..protocol.errors import InvalidIdentifier
from ..protocol.identifiers import server_of
from ..storage.interfaces import StateStore
from ..storage.protocols.presence import PresenceStorage
from .state import (
    OFFLINE,
    ONLINE,
    UNAVAILABLE,
    Timeouts,
    UserPresence,
    active,
    edu_push_item,
    from_edu_item,
    timed_out,
    worth_telling,
)

logger = logging.getLogger(__name__)

_RANK = {OFFLINE: 0, UNAVAILABLE: 1, ONLINE: 2}
DEFAULT_TIMEOUTS = Timeouts()
TIMER_INTERVAL_S = 5.0  # how often the timeouts are looked at (Synapse: 5 s)
# Up to this many local users with a presence, a remote join looks up their memberships one by one.
FEW_LOCAL_STATES = 50


class PresenceService:
    def __init__(
        self,
        store: PresenceStorage,
        server_name: str,
        *,
        enabled: bool = True,
        sender: Any = None,
        state_store: StateStore | None = None,
        notify: Callable[[], None] | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        """``sender``: the FederationSender (``broadcast_edu``), None without federation; ``state_store``:
        storage.state (joined users of a room, for the presence sent on joins); ``notify``: wakes
        long-polling /sync and the appservice feed."""
        self._store = store
        self.server_name = server_name
        self.enabled = enabled
        self._sender = sender
        self._state_store = state_store
        self._notify = notify
        self.timeouts = timeouts
        self._clock_ms = clock_ms
        self._states: dict[str, UserPresence] = {}  # not offline
        self._syncing: dict[str, int] = {}  # user -> /sync requests running that affect presence
        self._last_sync: dict[str, int] = {}  # user -> when their last such /sync ended
        self._devices: dict[str, dict[str | None, str]] = {}  # user -> device -> state it set
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def is_local(self, user_id: str) -> bool:
        try:
            return server_of(user_id) == self.server_name
        except InvalidIdentifier:
            return False

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.enabled:
            return
        now = self._clock_ms()
        for p in await self._store.not_offline():
            self._states[p.user_id] = p
            if self.is_local(p.user_id):
                # Their clients were syncing before the restart: give them the sync timeout to come back.
                self._last_sync[p.user_id] = now
        self._task = asyncio.create_task(self._run(), name="presence timeouts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TIMER_INTERVAL_S)
            try:
                await self.handle_timeouts()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("presence timeouts failed; continuing")

    # -- reads ----------------------------------------------------------------------------------------

    async def get_state(self, user_id: str) -> UserPresence:
        """The user's presence (offline when we know nothing of them)."""
        if user_id in self._states:
            return self._states[user_id]
        stored = (await self._store.get([user_id])).get(user_id)
        return stored if stored is not None else UserPresence(user_id)

    async def may_see(self, observer: str, observed: str) -> bool:
        """CS "Presence": presence is published to the users who share a room with its user."""
        return observer == observed or await self._store.shares_a_room(observer, observed)

    # -- changes from clients -------------------------------------------------------------------------

    async def set_state(
        self, user_id: str, device_id: str | None, state: str, status_msg: str | None
    ) -> None:
        """PUT /presence/{userId}/status: the device's state; the user's is the most available of their
        devices' (as Synapse). Being online is a pro-active action (CS "Last active ago"); the status
        message is replaced (cleared when absent), as Synapse does."""
        if not self.enabled:
            return
        async with self._lock:
            now = self._clock_ms()
            old = await self.get_state(user_id)
            combined = self._set_device(user_id, device_id, state)
            new = replace(old, state=combined, status_msg=status_msg)
            if combined == ONLINE:
                new = replace(new, last_active_ts=now, currently_active=True)
            else:
                new = replace(new, currently_active=False)
            await self._apply([(old, new)], now, force=True)

    def _set_device(self, user_id: str, device_id: str | None, state: str) -> str:
        devices = self._devices.setdefault(user_id, {})
        devices[device_id] = state
        return max(devices.values(), key=_RANK.__getitem__)

    async def bump_active(self, user_id: str) -> None:
        """The user did something (sent an event): last active now, online again if idle."""
        if not self.enabled or not self.is_local(user_id):
            return
        async with self._lock:
            now = self._clock_ms()
            old = await self.get_state(user_id)
            if old.state == OFFLINE:
                return  # activity without a client syncing or setting presence does not bring them online
            await self._apply([(old, active(old, now))], now)

    @contextlib.asynccontextmanager
    async def syncing(
        self, user_id: str, device_id: str | None, set_presence: str | None
    ) -> AsyncIterator[None]:
        """Around a /sync request: the device's stated state is ``set_presence`` (default online), the
        user's the most available of their devices'; while a sync runs, and for the sync timeout after it
        ends, the user is not timed out to offline. ``set_presence=offline`` leaves presence alone (CS
        "/sync": the client is then not marked as being online when it uses this API)."""
        wanted = set_presence or ONLINE
        if not self.enabled or wanted == OFFLINE:
            yield
            return
        self._syncing[user_id] = self._syncing.get(user_id, 0) + 1
        try:
            async with self._lock:
                now = self._clock_ms()
                old = await self.get_state(user_id)
                stated = self._devices.get(user_id, {}).get(device_id)
                combined = self._set_device(user_id, device_id, wanted)
                if old.state == OFFLINE or stated != wanted:
                    # The client says something new (or the user was offline): "changing presence
                    # state to online" is a pro-active event (CS "Last active ago"). Polling on with the
                    # same set_presence is not: an idle user stays unavailable until they act. (Synapse
                    # counts every sync as activity, against the spec as its own comment says.)
                    new = replace(old, state=combined, currently_active=combined == ONLINE)
                    if combined == ONLINE:
                        new = replace(new, last_active_ts=now)
                    await self._apply([(old, new)], now)
            yield
        finally:
            count = self._syncing.get(user_id, 1) - 1
            if count > 0:
                self._syncing[user_id] = count
            else:
                self._syncing.pop(user_id, None)
            self._last_sync[user_id] = self._clock_ms()

    # -- the timer ------------------------------------------------------------------------------------

    async def handle_timeouts(self) -> None:
        """Move on the states whose timeouts have passed, and resend local states that other servers
        have not heard of for ``federation_ping_ms``."""
        if not self.enabled:
            return
        async with self._lock:
            now = self._clock_ms()
            changes = []
            for user_id, p in list(self._states.items()):
                local = self.is_local(user_id)
                new = timed_out(
                    p,
                    now,
                    self.timeouts,
                    local=local,
                    syncing=user_id in self._syncing,
                    last_sync_ts=self._last_sync.get(user_id, 0),
                )
                if new != p:
                    changes.append((p, new))
            await self._apply(changes, now)
            stale = [
                p
                for p in self._states.values()
                if self.is_local(p.user_id)
                and now - p.last_federation_update_ts > self.timeouts.federation_ping_ms
            ]
            await self._send(stale, now)

    # -- over federation ------------------------------------------------------------------------------

    async def on_edu(self, origin: str, content: dict[str, Any]) -> None:
        """An incoming ``m.presence`` EDU: updates of users of the sending server (S2S "Presence"). Not
        limited to users already in a room with us, as Synapse: a server announces its users' presence
        when we join their room, often before our join has stored the room's members. Who may read a
        state is decided when it is read (shared rooms)."""
        if not self.enabled:
            return
        push = content.get("push")
        if not isinstance(push, list):
            return
        async with self._lock:
            now = self._clock_ms()
            changes = []
            for item in push:
                new = from_edu_item(item, origin, now)
                if new is None or self.is_local(new.user_id):
                    continue
                try:
                    if server_of(new.user_id) != origin:
                        continue
                except InvalidIdentifier:
                    continue
                changes.append((await self.get_state(new.user_id), new))
            await self._apply(changes, now, force=True)

    async def on_persisted(self, room_id: str, batch: Sequence[Any]) -> None:
        """The persister's listener: a local sender is active; on a join, the new member's server hears
        of the local users in the room, and a local user who joined is announced to the room's servers."""
        if not self.enabled:
            return
        now = self._clock_ms()
        for item in batch:
            pdu = item.pdu
            if item.outlier or item.rejected_reason is not None or item.soft_failed:
                continue
            if self.is_local(pdu.sender) and pdu.sender in self._states:
                await self.bump_active(pdu.sender)  # CS "Last active ago": sending an event is activity
            if self._sender is None or self._state_store is None:
                continue
            if pdu.type != "m.room.member" or pdu.membership != "join" or pdu.state_key is None:
                continue
            await self.on_joined(room_id, pdu.state_key, now)

    async def on_joined(self, room_id: str, user_id: str, now: int | None = None) -> None:
        """A join of ``user_id`` to the room was persisted: the new member's server hears of the local
        users in the room, or a local user who joined is announced to the room's servers."""
        if not self.enabled or self._sender is None or self._state_store is None:
            return
        now = self._clock_ms() if now is None else now
        if self.is_local(user_id):
            p = self._states.get(user_id)
            if p is not None:
                servers = await self._state_store.get_joined_servers(room_id) - {self.server_name}
                await self._broadcast(servers, [p], now)
        else:
            try:
                server = server_of(user_id)
            except InvalidIdentifier:
                return
            ours = await self._local_states_in(room_id)
            await self._broadcast({server}, ours, now)

    async def _local_states_in(self, room_id: str) -> list[UserPresence]:
        """The presence of the local users joined to the room that we hold presence of. With few such
        users each one's membership is looked up, so a join into a room of 50,000 members does not read
        them all (the resident answers send_join after this)."""
        assert self._state_store is not None
        local = sorted(u for u in self._states if self.is_local(u))
        if len(local) <= FEW_LOCAL_STATES:
            ours = []
            for user_id in local:
                membership = await self._state_store.get_membership(room_id, user_id)
                if membership is not None and membership[0] == "join":
                    ours.append(self._states[user_id])
            return ours
        members = await self._state_store.get_joined_users(room_id)
        return [self._states[u] for u in local if u in members]

    async def _broadcast(self, servers: Iterable[str], states: Sequence[UserPresence], now: int) -> None:
        destinations = sorted(set(servers) - {self.server_name})
        if not destinations or not states or self._sender is None:
            return
        for p in states:
            await self._sender.broadcast_edu(destinations, presence_edu(edu_push_item(p, now)))

    async def _send(self, states: Sequence[UserPresence], now: int, *, touch: bool = True) -> None:
        """Send local users' states to the servers sharing a room with each; with ``touch``, record the
        time (``_apply`` stores it with the states instead)."""
        if not states:
            return
        if self._sender is not None:
            for p in states:
                servers = await self._store.servers_sharing_a_room(p.user_id)
                await self._broadcast(servers, [p], now)
        if not touch:
            return
        sent = [p.user_id for p in states]
        await self._store.touch_federation_update(sent, now)
        for user_id in sent:
            if user_id in self._states:
                self._states[user_id] = replace(self._states[user_id], last_federation_update_ts=now)

    # -- applying changes -----------------------------------------------------------------------------

    async def _apply(
        self, changes: Sequence[tuple[UserPresence, UserPresence]], now: int, *, force: bool = False
    ) -> None:
        """Keep the new states; store (and tell /sync, the appservices and other servers) those worth
        telling, or all of them with ``force`` (an explicit PUT, an update from another server)."""
        told = {new.user_id for old, new in changes if force or worth_telling(old, new)}
        kept: list[UserPresence] = []
        for _, new in changes:
            if new.user_id in told and self.is_local(new.user_id):
                new = replace(new, last_federation_update_ts=now)  # sent below
            kept.append(new)
            if new.state == OFFLINE:
                self._states.pop(new.user_id, None)
                self._devices.pop(new.user_id, None)
            else:
                self._states[new.user_id] = new
        stored = [p for p in kept if p.user_id in told]
        if not stored:
            return
        await self._store.put(stored)
        if self._notify is not None:
            self._notify()
        await self._send([p for p in stored if self.is_local(p.user_id)], now, touch=False)


__all__ = ["OFFLINE", "ONLINE", "UNAVAILABLE", "PresenceService"]
