"""The extensions of simplified sliding sync (MSC4186 "Extensions": MSC3885 to-device, MSC3884 E2EE,
MSC3959 account data, MSC3960 receipts, MSC3961 typing), read from the same sources and positions as
/sync: the to-device inbox, ranvier/devices/sync_section.py for keys and device lists, and
``SyncExtras`` for account data, receipts and typing since the connection's token.

An extension's ``lists`` and ``rooms`` choose the rooms it covers: the rooms of the named lists' ranges
and the named room subscriptions, ``*`` meaning all of them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from .changes import SyncExtras, SyncToken
from .sliding_request import ExtensionParams, SlidingRequest


@dataclass(frozen=True, slots=True)
class ExtensionRooms:
    """The rooms of the response: per list, the rooms in its ranges; the subscribed rooms."""

    by_list: Mapping[str, Collection[str]]
    subscribed: Collection[str]

    def for_extension(self, ext: ExtensionParams) -> set[str]:
        rooms: set[str] = set()
        for name in self.by_list if "*" in ext.lists else ext.lists:
            rooms.update(self.by_list.get(name, ()))
        rooms.update(self.subscribed if "*" in ext.rooms else set(ext.rooms) & set(self.subscribed))
        return rooms


class SlidingExtensions:
    def __init__(self, extras: SyncExtras, e2ee: Any = None, to_device: Any = None) -> None:
        self._extras = extras
        # ranvier.devices.sync_section.E2eeSync and ranvier.devices.to_device.ToDeviceService.
        self._e2ee = e2ee
        self._to_device = to_device

    async def collect(
        self,
        request: SlidingRequest,
        user_id: str,
        device_id: str,
        since: SyncToken | None,
        upto: SyncToken,
        rooms: ExtensionRooms,
        joined: Collection[str],
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        to_device = request.extension("to_device")
        if to_device is not None and self._to_device is not None:
            batch = await self._to_device.for_sync(
                user_id, device_id, to_device.since, upto.to_device, to_device.limit
            )
            out["to_device"] = {"next_batch": str(batch.position), "events": batch.events}
        if request.extension("e2ee") is not None and self._e2ee is not None:
            # Counts always; device_lists on an incremental response only (as Synapse).
            out["e2ee"] = await self._e2ee.keys_and_lists(user_id, device_id, since, upto)

        account_data = request.extension("account_data")
        receipts = request.extension("receipts")
        typing = request.extension("typing")
        if account_data is None and receipts is None and typing is None:
            return out
        joined_set = set(joined)
        wanted: dict[str, set[str]] = {
            name: rooms.for_extension(ext) & joined_set
            for name, ext in (("account_data", account_data), ("receipts", receipts), ("typing", typing))
            if ext is not None
        }
        everything = set().union(*wanted.values())
        extras = await self._extras.collect(user_id, everything, since, upto)
        if account_data is not None:
            data = {r: e for r, e in extras.room_account_data.items() if r in wanted["account_data"]}
            if since is None:
                # An initial response lists every room it covers, those without account data too (as
                # Synapse's does), so the client knows it has them all.
                data = {r: data.get(r, []) for r in sorted(rooms.for_extension(account_data))}
            out["account_data"] = {"global": extras.account_data, "rooms": data}
        for name, event_type in (("receipts", "m.receipt"), ("typing", "m.typing")):
            if name not in wanted:
                continue
            by_room: dict[str, Any] = {}
            for room_id, events in extras.ephemeral.items():
                if room_id not in wanted[name]:
                    continue
                for event in events:
                    if event["type"] == event_type:
                        by_room[room_id] = event
            out[name] = {"rooms": by_room}
        return out


def has_news(extensions: Mapping[str, Any]) -> bool:
    """Whether the extensions carry anything a long-poll should return for (the key counts alone do
    not: they are in every response)."""
    if extensions.get("to_device", {}).get("events"):
        return True
    lists = extensions.get("e2ee", {}).get("device_lists", {})
    if lists.get("changed") or lists.get("left"):
        return True
    account_data = extensions.get("account_data", {})
    if account_data.get("global") or account_data.get("rooms"):
        return True
    return any(extensions.get(name, {}).get("rooms") for name in ("receipts", "typing"))
