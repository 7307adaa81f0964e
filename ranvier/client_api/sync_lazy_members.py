"""Which member events a device has been sent by lazy-loading /sync (CS "Lazy-loading room members").

With ``lazy_load_members`` a room's ``state`` carries only the member events of the timeline's senders
(and the syncing user's own). The spec lets the server skip those "redundant" member events a device has
already been sent, unless the filter sets ``include_redundant_members``. As Synapse does, this is kept in
memory and bounded: forgetting an entry only means a member event is sent again (allowed: "it is valid
for the server to send redundant membership events"), never that one is missed. An initial /sync (no
``since``) starts the device afresh: the client has nothing yet.

Bounds: the most recently syncing ``MAX_DEVICES`` (user, device) pairs, and for each room of a device the
``MAX_MEMBERS_PER_ROOM`` members most recently sent.
"""

from __future__ import annotations

from collections import OrderedDict

MAX_DEVICES = 1024
MAX_MEMBERS_PER_ROOM = 1000


class DeviceMembers:
    """Per room of one device: member user id -> the member event id last sent, oldest first."""

    def __init__(self) -> None:
        self.rooms: dict[str, OrderedDict[str, str]] = {}

    def sent(self, room_id: str, user_id: str) -> str | None:
        members = self.rooms.get(room_id)
        return None if members is None else members.get(user_id)

    def record(self, room_id: str, user_id: str, event_id: str) -> None:
        members = self.rooms.setdefault(room_id, OrderedDict())
        members[user_id] = event_id
        members.move_to_end(user_id)
        while len(members) > MAX_MEMBERS_PER_ROOM:
            members.popitem(last=False)


class LazyMembersSent:
    def __init__(self, max_devices: int = MAX_DEVICES) -> None:
        self._max_devices = max_devices
        self._devices: OrderedDict[tuple[str, str | None], DeviceMembers] = OrderedDict()

    def device(self, user_id: str, device_id: str | None, fresh: bool) -> DeviceMembers:
        """The device's record; ``fresh`` (an initial /sync) forgets what it was sent before."""
        key = (user_id, device_id)
        found = None if fresh else self._devices.get(key)
        if found is None:
            found = DeviceMembers()
            self._devices[key] = found
        self._devices.move_to_end(key)
        while len(self._devices) > self._max_devices:
            self._devices.popitem(last=False)
        return found
