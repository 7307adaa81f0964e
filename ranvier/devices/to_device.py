"""Send-to-device messaging (CS "Send-to-Device messaging", S2S "Send-to-device messaging").

A message for a local device goes into its inbox; messages for another server's users become one
``m.direct_to_device`` EDU per server, queued in the durable outbox in the same transaction as the inbox
rows and the sender's transaction id, so a message acknowledged with 200 is delivered once, across
restarts. Incoming EDUs are de-duplicated by ``(origin, message_id)``.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..protocol.errors import InvalidIdentifier
from ..protocol.identifiers import parse_user_id, server_of
from ..storage.protocols.composite import HasDevices, HasToDevice
from ..storage.sql.e2ee_streams import ToDeviceMessage

logger = logging.getLogger(__name__)

# CS "GET /sync": the server may limit to-device messages per response; Synapse sends 100.
MAX_PER_SYNC = 100
# One m.direct_to_device EDU carries about this much message JSON at most; more becomes several EDUs (a
# room key shared with hundreds of devices would otherwise make one transaction too big for a peer).
MAX_EDU_MESSAGE_BYTES = 60_000
# The de-duplication records (sendToDevice txn ids, incoming message ids) are expired every so many sends.
EXPIRE_EVERY = 1000


class ToDeviceServiceStorage(HasDevices, HasToDevice, Protocol):
    """What devices/to_device.py asks of storage."""


class InvalidMessages(Exception):
    pass


@dataclass(frozen=True, slots=True)
class InboxBatch:
    events: list[dict[str, Any]]
    position: int  # the to-device part of next_batch: the last delivered position, or the token's end


class ToDeviceService:
    def __init__(
        self,
        storage: ToDeviceServiceStorage,
        server_name: str,
        *,
        sender: Any = None,
        notify: Callable[[], None] | None = None,
    ) -> None:
        self._storage = storage
        self._server_name = server_name
        self._sender = sender  # FederationSender, to wake destinations after the commit
        self._notify = notify
        self._sent = 0

    async def _expand(
        self, user_id: str, targets: dict[str, Any], event_type: str, sender: str
    ) -> list[ToDeviceMessage]:
        """A local user's messages, with ``*`` meaning every one of their devices; a device the user
        does not have gets nothing (its inbox would never be read)."""
        out: list[ToDeviceMessage] = []
        devices = {d.device_id for d in await self._storage.devices.list_devices(user_id)}
        for device_id, content in targets.items():
            if not isinstance(content, dict):
                continue
            event = {"type": event_type, "sender": sender, "content": content}
            if device_id == "*":
                out += [ToDeviceMessage(user_id, d, event) for d in sorted(devices)]
            elif device_id in devices:
                out.append(ToDeviceMessage(user_id, device_id, event))
        return out

    async def send(
        self, sender: str, sender_device: str, event_type: str, txn_id: str, messages: Any
    ) -> None:
        """``PUT /sendToDevice/{eventType}/{txnId}``; idempotent per (sender device, txn id)."""
        if not isinstance(messages, dict):
            raise InvalidMessages("messages must be an object")
        local: list[ToDeviceMessage] = []
        remote: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for user_id, targets in messages.items():
            try:
                parse_user_id(user_id)
            except InvalidIdentifier:
                raise InvalidMessages(f"invalid user id {user_id!r}") from None
            if not isinstance(targets, dict):
                raise InvalidMessages(f"messages[{user_id}] must be an object")
            server = server_of(user_id)
            if server == self._server_name:
                local += await self._expand(user_id, targets, event_type, sender)
            else:
                devices = {d: c for d, c in targets.items() if isinstance(c, dict)}
                remote.setdefault(server, []).append((user_id, devices))
        edus = [
            (destination, content)
            for destination, per_user in sorted(remote.items())
            for content in _direct_to_device_edus(sender, event_type, per_user)
        ]
        if not await self._storage.to_device.send(sender, sender_device, txn_id, local, edus):
            return  # a retry of a transaction already handled
        self._sent += 1
        if self._sent % EXPIRE_EVERY == 0:
            await self._storage.to_device.expire_dedup()
        if local and self._notify is not None:
            self._notify()
        if self._sender is not None:
            for destination in remote:
                self._sender.wake(destination)

    async def on_direct_to_device(self, origin: str, content: dict[str, Any]) -> None:
        """An incoming ``m.direct_to_device`` EDU: the sender must belong to the origin."""
        sender, event_type = content.get("sender"), content.get("type")
        message_id, messages = content.get("message_id"), content.get("messages")
        if not isinstance(sender, str) or not isinstance(event_type, str) or not isinstance(message_id, str):
            return
        if not isinstance(messages, dict):
            return
        try:
            if server_of(parse_user_id(sender)) != origin:
                return
        except InvalidIdentifier:
            return
        local: list[ToDeviceMessage] = []
        for user_id, targets in messages.items():
            try:
                if server_of(parse_user_id(user_id)) != self._server_name or not isinstance(targets, dict):
                    continue
            except InvalidIdentifier:
                continue
            local += await self._expand(user_id, targets, event_type, sender)
        if (
            await self._storage.to_device.receive_remote(origin, message_id, local)
            and self._notify is not None
        ):
            self._notify()

    async def for_sync(
        self, user_id: str, device_id: str, since: int | None, upto: int, limit: int = MAX_PER_SYNC
    ) -> InboxBatch:
        """The device's inbox after ``since`` (deleting what ``since`` acknowledges), at most ``limit``
        messages (never more than ``MAX_PER_SYNC``); the position covers only what was delivered."""
        store = self._storage.to_device
        if since is not None and since > 0:
            await store.acknowledge(user_id, device_id, since)
        limit = max(1, min(limit, MAX_PER_SYNC))
        rows = await store.inbox(user_id, device_id, since or 0, upto, limit)
        position = rows[-1][0] if len(rows) == limit else upto
        return InboxBatch([message for _, message in rows], position)


def _direct_to_device_edus(
    sender: str, event_type: str, per_user: list[tuple[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """S2S "Send-to-device messaging": ``m.direct_to_device`` contents for one destination, each with
    its own ``message_id`` (the receiver's de-duplication key), split by size between users."""
    edus: list[dict[str, Any]] = []
    size = MAX_EDU_MESSAGE_BYTES
    for user_id, devices in per_user:
        length = len(json.dumps(devices))
        if not edus or size + length > MAX_EDU_MESSAGE_BYTES:
            edus.append(
                {
                    "sender": sender,
                    "type": event_type,
                    "message_id": secrets.token_urlsafe(16),
                    "messages": {},
                }
            )
            size = 0
        edus[-1]["messages"][user_id] = devices
        size += length
    return edus
