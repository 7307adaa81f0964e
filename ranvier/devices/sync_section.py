"""What /sync carries for end-to-end encryption (CS "Extensions to /sync" of the E2EE and to-device
modules): ``to_device``, ``device_lists``, ``device_one_time_keys_count`` and
``device_unused_fallback_key_types``, all read from storage for the syncing device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..storage.protocols.composite import HasDeviceLists, HasE2eKeys, HasToDevice
from .device_lists import DeviceLists
from .to_device import ToDeviceService


class SyncSectionStorage(HasE2eKeys, HasDeviceLists, HasToDevice, Protocol):
    """What devices/sync_section.py asks of storage."""


class Token(Protocol):
    @property
    def events(self) -> int: ...
    @property
    def to_device(self) -> int: ...
    @property
    def device_lists(self) -> int: ...


@dataclass(frozen=True, slots=True)
class E2eeSection:
    body: dict[str, Any]
    to_device_position: int

    def has_news(self) -> bool:
        lists = self.body.get("device_lists", {})
        return bool(self.body["to_device"]["events"] or lists.get("changed") or lists.get("left"))


class E2eeSync:
    def __init__(
        self, storage: SyncSectionStorage, device_lists: DeviceLists, to_device: ToDeviceService
    ) -> None:
        self._storage = storage
        self._lists = device_lists
        self._to_device = to_device

    async def positions(self) -> tuple[int, int]:
        """(to-device, device lists) stream positions for a new token."""
        return await self._storage.to_device.max_position(), await self._storage.device_lists.max_position()

    async def collect(self, user_id: str, device_id: str, since: Token | None, upto: Token) -> E2eeSection:
        inbox = await self._to_device.for_sync(
            user_id, device_id, since.to_device if since is not None else None, upto.to_device
        )
        body: dict[str, Any] = {"to_device": {"events": inbox.events}}
        body.update(await self.keys_and_lists(user_id, device_id, since, upto))
        # CS "GET /sync": device_lists is only for incremental syncs.
        body.setdefault("device_lists", {"changed": [], "left": []})
        return E2eeSection(body, inbox.position)

    async def keys_and_lists(
        self, user_id: str, device_id: str, since: Token | None, upto: Token
    ) -> dict[str, Any]:
        """The key counts, and on an incremental sync the device list changes; the to-device inbox is
        left alone (simplified sliding sync has it in an extension of its own)."""
        keys = self._storage.e2e_keys
        counts = await keys.count_one_time_keys(user_id, device_id)
        counts.setdefault("signed_curve25519", 0)
        body: dict[str, Any] = {
            "device_one_time_keys_count": counts,
            "device_unused_fallback_key_types": await keys.unused_fallback_key_types(user_id, device_id),
        }
        if since is not None:
            delta = await self._lists.delta(
                user_id, since.device_lists, upto.device_lists, since.events, upto.events
            )
            body["device_lists"] = {"changed": sorted(delta.changed), "left": sorted(delta.left)}
        return body
