"""Device lists: who must hear of a change, what /sync and /keys/changes report, and the federation side
(S2S "Device Management"): ``m.device_list_update`` EDUs out and in, with ``prev_id`` chains and a resync
through ``GET /user/devices/{userId}`` when a gap is seen.

A local change (new device keys, a deleted device, a new display name, a new signature) is one row of the
device list stream (storage ``device_list_changes``) written with the change itself; ``on_local_change``
then tells the other servers that share a room with the user, through the durable outbox. A remote
user's list is cached only while they share a room with one of our users; until then, or when a gap was
seen (``stale``), ``/keys/query`` asks their server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..federation.client import FederationError, path_segment
from ..federation.edus import OutboundEdu
from ..protocol.errors import InvalidIdentifier
from ..protocol.identifiers import parse_user_id, server_of
from ..storage.protocols.composite import HasDeviceLists, HasDevices, HasE2eKeys, HasState
from ..storage.sql.e2ee_streams import RemoteDevice

logger = logging.getLogger(__name__)


class DeviceListsStorage(HasState, HasDevices, HasE2eKeys, HasDeviceLists, Protocol):
    """What devices/device_lists.py asks of storage."""


@dataclass
class DeviceListDelta:
    changed: set[str] = field(default_factory=set)
    left: set[str] = field(default_factory=set)


def _server(user_id: str) -> str | None:
    try:
        parse_user_id(user_id)
        return server_of(user_id)
    except InvalidIdentifier:
        return None


class DeviceLists:
    def __init__(
        self,
        storage: DeviceListsStorage,
        server_name: str,
        *,
        federation_client: Any = None,
        sender: Any = None,
        notify: Callable[[], None] | None = None,
        share_device_names: bool = False,
    ) -> None:
        self._storage = storage
        # Device display names go to other servers only when the operator allows it (config
        # federation.allow_device_name_lookup_over_federation).
        self.share_device_names = share_device_names
        self._server_name = server_name
        self._client = federation_client
        self._sender = sender
        self._notify = notify
        self._resyncs: dict[str, asyncio.Task[bool]] = {}

    def is_local(self, user_id: str) -> bool:
        return _server(user_id) == self._server_name

    def wake(self) -> None:
        if self._notify is not None:
            self._notify()

    # -- who shares a room with whom ------------------------------------------------------------------

    async def users_sharing_rooms(self, user_id: str) -> set[str]:
        """The users joined to a room the user is joined to (the user included)."""
        users: set[str] = await self._storage.device_lists.users_sharing_rooms(user_id)
        return users | {user_id}

    async def servers_sharing_rooms(self, user_id: str) -> set[str]:
        servers: set[str] = await self._storage.device_lists.servers_sharing_rooms(user_id)
        servers.discard(self._server_name)
        return servers

    async def shares_room_with_local_user(self, user_id: str) -> bool:
        return bool(await self._storage.device_lists.shares_room_with_server(user_id, self._server_name))

    # -- what a client is told ------------------------------------------------------------------------

    async def delta(
        self, user_id: str, since_lists: int, upto_lists: int, since_events: int, upto_events: int
    ) -> DeviceListDelta:
        """CS "Tracking the device list for a user": ``changed`` holds the users sharing a room with
        ``user_id`` whose devices changed, and those who began to share one (a join on either side);
        ``left`` those who no longer share any room since a leave in the window."""
        out = DeviceListDelta()
        sharing = await self.users_sharing_rooms(user_id)
        out.changed = await self._storage.device_lists.changed_between(since_lists, upto_lists) & sharing
        rooms = await self._storage.state.get_rooms_for_user(user_id)
        changes = await self._storage.device_lists.membership_changes(rooms, since_events, upto_events)
        for room_id, member, membership in changes:
            if member == user_id:
                if membership == "join" and rooms.get(room_id) == "join":
                    out.changed |= await self._storage.state.get_joined_users(room_id)
                elif membership in ("leave", "ban"):
                    members = await self._storage.state.get_members(room_id)
                    out.left |= {u for u, m in members.items() if m == "join" and u not in sharing}
            elif membership == "join" and member in sharing:
                out.changed.add(member)
            elif membership in ("leave", "ban") and member not in sharing:
                out.left.add(member)
        out.left -= sharing
        out.changed -= out.left
        return out

    # -- outbound -------------------------------------------------------------------------------------

    async def on_local_change(
        self,
        user_id: str,
        device_ids: Iterable[str] = (),
        *,
        deleted: bool = False,
        destinations: set[str] | None = None,
    ) -> None:
        """A local user's devices changed (already recorded in the stream): wake /sync and queue an
        ``m.device_list_update`` per device for every server that shares a room with the user (or for
        ``destinations``)."""
        self.wake()
        if self._sender is None:
            return
        if destinations is None:
            destinations = await self.servers_sharing_rooms(user_id)
        if not destinations:
            return
        for device_id in device_ids:
            content = await self._update_edu(user_id, device_id, deleted)
            await self._sender.broadcast_edu(destinations, _edu("m.device_list_update", content))

    async def on_persisted(self, room_id: str, batch: Sequence[Any]) -> None:
        """The persister's listener: a local user who joins a room with servers that shared no room
        with them so far sends those servers their devices (S2S "Device Management": updates go out
        "when that user joins a room which contains servers which are not already receiving updates")."""
        for item in batch:
            pdu = item.pdu
            if pdu.type != "m.room.member" or pdu.membership != "join" or pdu.state_key is None:
                continue
            if item.outlier or item.rejected_reason is not None or item.soft_failed:
                continue
            user_id = pdu.state_key
            if not self.is_local(user_id) or self._sender is None:
                continue
            others: set[str] = set()
            for other_room, membership in (await self._storage.state.get_rooms_for_user(user_id)).items():
                if membership == "join" and other_room != room_id:
                    others |= await self._storage.state.get_joined_servers(other_room)
            new = await self._storage.state.get_joined_servers(room_id) - others - {self._server_name}
            with_keys = (await self._storage.e2e_keys.get_devices_with_keys([user_id])).get(user_id, {})
            if new and with_keys:
                await self.on_local_change(user_id, sorted(with_keys), destinations=new)

    async def resend_unsent(self) -> int:
        """At start: local users whose last change was recorded but never sent (a crash in between).
        Their next update cites, as its prev_id, an id allocated for the lost one, so every receiver
        sees the gap and fetches the whole list (S2S "Device Management"). Returns the users handled."""
        if self._sender is None:
            return 0
        handled = 0
        for user_id in await self._storage.device_lists.users_with_unsent_changes():
            if not self.is_local(user_id):
                continue
            await self._storage.device_lists.next_outbound_id(user_id)  # the id of the lost update
            devices = [d.device_id for d in await self._storage.devices.list_devices(user_id)]
            if devices:
                await self.on_local_change(user_id, devices[:1])
            handled += 1
        return handled

    async def _update_edu(self, user_id: str, device_id: str, deleted: bool) -> dict[str, Any]:
        stream_id, prev = await self._storage.device_lists.next_outbound_id(user_id)
        content: dict[str, Any] = {
            "user_id": user_id,
            "device_id": device_id,
            "stream_id": stream_id,
            "prev_id": [prev] if prev is not None else [],
            "deleted": deleted,
        }
        if not deleted:
            device = await self._storage.devices.get_device(user_id, device_id)
            if device is not None and device.display_name is not None and self.share_device_names:
                content["device_display_name"] = device.display_name
            keys = await self._keys_with_signatures(user_id, device_id)
            if keys is not None:
                content["keys"] = keys
        return content

    async def _keys_with_signatures(self, user_id: str, device_id: str) -> dict[str, Any] | None:
        keys = await self._storage.e2e_keys.get_device_keys(user_id, device_id)
        if keys is None:
            return None
        sigs = await self._storage.e2e_keys.get_signatures([user_id])
        for signer, key_id, sig in sigs.get((user_id, device_id), []):
            keys.setdefault("signatures", {}).setdefault(signer, {})[key_id] = sig
        return keys

    async def on_local_signing_keys(self, user_id: str, keys: dict[str, dict[str, Any]]) -> None:
        """New cross-signing keys of a local user: ``m.signing_key_update`` to the servers sharing a room."""
        self.wake()
        if self._sender is None:
            return
        destinations = await self.servers_sharing_rooms(user_id)
        content: dict[str, Any] = {"user_id": user_id}
        for key_type in ("master", "self_signing"):
            if key_type in keys:
                content[f"{key_type}_key"] = keys[key_type]
        if destinations and len(content) > 1:
            await self._sender.broadcast_edu(destinations, _edu("m.signing_key_update", content))

    async def local_device_list(self, user_id: str) -> dict[str, Any]:
        """``GET /user/devices/{userId}`` for a local user (S2S "Device Management")."""
        devices = []
        keys = await self._storage.e2e_keys.get_devices_with_keys([user_id])
        sigs = await self._storage.e2e_keys.get_signatures([user_id])
        for device in await self._storage.devices.list_devices(user_id):
            entry: dict[str, Any] = {"device_id": device.device_id}
            device_keys = keys.get(user_id, {}).get(device.device_id)
            if device_keys is not None:
                device_keys.pop("unsigned", None)
                for signer, key_id, sig in sigs.get((user_id, device.device_id), []):
                    device_keys.setdefault("signatures", {}).setdefault(signer, {})[key_id] = sig
                entry["keys"] = device_keys
            if device.display_name is not None and self.share_device_names:
                entry["device_display_name"] = device.display_name
            devices.append(entry)
        answer: dict[str, Any] = {
            "user_id": user_id,
            "stream_id": await self._storage.device_lists.last_outbound_id(user_id),
            "devices": devices,
        }
        cross = await self._storage.e2e_keys.get_cross_signing_keys(user_id)
        for key_type in ("master", "self_signing"):
            if key_type in cross:
                answer[f"{key_type}_key"] = cross[key_type]
        return answer

    # -- inbound --------------------------------------------------------------------------------------

    async def on_device_list_update(self, origin: str, content: dict[str, Any]) -> None:
        user_id, device_id, stream_id = (
            content.get("user_id"),
            content.get("device_id"),
            content.get("stream_id"),
        )
        if not isinstance(user_id, str) or _server(user_id) != origin or origin == self._server_name:
            return
        if not isinstance(device_id, str) or type(stream_id) is not int:
            return
        prev_ids = content.get("prev_id") or []
        if not isinstance(prev_ids, list) or not all(type(p) is int for p in prev_ids):
            return
        if not await self.shares_room_with_local_user(user_id):
            # Not tracked: /keys/query asks their server while no room is shared, and a cache from
            # an earlier shared room is fetched again once one is shared again.
            await self._storage.device_lists.forget_remote(user_id)
            return
        lists = self._storage.device_lists
        cached = await lists.get_remote_list(user_id)
        if await lists.seen_stream_ids(user_id, [stream_id]):
            return  # a duplicate
        seen = await lists.seen_stream_ids(user_id, prev_ids)
        if cached is None or cached[1] or len(seen) < len(prev_ids):
            # Never cached, already stale, or a gap (an EDU we never got): fetch the whole list.
            await lists.mark_remote_stale(user_id)
            self.wake()
            self._start_resync(user_id)
            return
        keys = content.get("keys")
        name = content.get("device_display_name")
        device = RemoteDevice(
            device_id, name if isinstance(name, str) else None, keys if isinstance(keys, dict) else None
        )
        await lists.apply_remote_update(user_id, stream_id, device, content.get("deleted") is True)
        self.wake()

    async def on_signing_key_update(self, origin: str, content: dict[str, Any]) -> None:
        user_id = content.get("user_id")
        if not isinstance(user_id, str) or _server(user_id) != origin or origin == self._server_name:
            return
        keys = {
            key_type: content[f"{key_type}_key"]
            for key_type in ("master", "self_signing")
            if isinstance(content.get(f"{key_type}_key"), dict)
            and content[f"{key_type}_key"].get("user_id") == user_id
        }
        if keys and await self._storage.e2e_keys.set_cross_signing_keys(user_id, keys):
            self.wake()

    def _start_resync(self, user_id: str) -> asyncio.Task[bool]:
        """The resync of ``user_id`` in flight, or a new one: one at a time per user."""
        task = self._resyncs.get(user_id)
        if task is None or task.done():
            task = asyncio.create_task(self.resync(user_id), name=f"device resync {user_id}")
            self._resyncs[user_id] = task
        return task

    async def ensure_fresh(self, user_id: str, timeout_s: float) -> bool:
        """Resync ``user_id`` (joining one already in flight) and wait up to ``timeout_s``; False if it
        failed or is still running (it goes on in the background and the cache is used next time)."""
        task = self._start_resync(user_id)
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            return False

    async def resync(self, user_id: str) -> bool:
        """Fetch a remote user's whole device list (``GET /user/devices/{userId}``) and cache it."""
        server = _server(user_id)
        if self._client is None or server is None or server == self._server_name:
            return False
        try:
            answer = await self._client.request(
                "GET", server, f"/_matrix/federation/v1/user/devices/{path_segment(user_id)}"
            )
        except FederationError as e:
            logger.info("device list resync of %s failed: %s", user_id, e)
            return False
        if not isinstance(answer, dict) or answer.get("user_id") != user_id:
            return False
        stream_id = answer.get("stream_id")
        devices: list[RemoteDevice] = []
        for entry in answer.get("devices") or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("device_id"), str):
                continue
            keys = entry.get("keys")
            name = entry.get("device_display_name")
            if isinstance(keys, dict) and (
                keys.get("user_id") != user_id or keys.get("device_id") != entry["device_id"]
            ):
                keys = None
            devices.append(
                RemoteDevice(
                    entry["device_id"],
                    name if isinstance(name, str) else None,
                    keys if isinstance(keys, dict) else None,
                )
            )
        await self._storage.device_lists.replace_remote_list(
            user_id, stream_id if type(stream_id) is int else 0, devices
        )
        await self.on_signing_key_update(
            server, {k: v for k, v in answer.items() if k in ("user_id", "master_key", "self_signing_key")}
        )
        self.wake()
        return True

    async def wait_for_resyncs(self) -> None:
        tasks = [t for t in self._resyncs.values() if not t.done()]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self) -> None:
        """Cancel resyncs in flight (a list left stale is fetched again by the next /keys/query)."""
        tasks = [t for t in self._resyncs.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._resyncs.clear()


def _edu(edu_type: str, content: dict[str, Any]) -> OutboundEdu:
    return OutboundEdu(edu_type, content)
