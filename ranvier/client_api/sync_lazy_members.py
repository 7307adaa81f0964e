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


class _Record:
    """Per room of one device: member user id -> (the member event id last sent, the stream position of
    the /sync answer that carried it), oldest first."""

    def __init__(self) -> None:
        self.rooms: dict[str, OrderedDict[str, tuple[str, int]]] = {}


class DeviceMembers:
    """One /sync's view of its device's record. A member event counts as the client's only once the
    client syncs from a token at or past the answer that carried it: a client retrying an older token
    (the answer lost on the way) is sent it again."""

    def __init__(self, record: _Record, since: int | None, position: int) -> None:
        self._record = record
        self._since = since
        self._position = position

    def sent(self, room_id: str, user_id: str) -> str | None:
        """The member event id the client holds for ``user_id`` in the room, if known."""
        members = self._record.rooms.get(room_id)
        found = None if members is None else members.get(user_id)
        if found is None or self._since is None or found[1] > self._since:
            return None
        return found[0]

    def record(self, room_id: str, user_id: str, event_id: str) -> None:
        """This answer carries the member event."""
        members = self._record.rooms.setdefault(room_id, OrderedDict())
        members[user_id] = (event_id, self._position)
        members.move_to_end(user_id)
        while len(members) > MAX_MEMBERS_PER_ROOM:
            members.popitem(last=False)


class LazyMembersSent:
    def __init__(self, max_devices: int = MAX_DEVICES) -> None:
        self._max_devices = max_devices
        self._devices: OrderedDict[tuple[str, str | None], _Record] = OrderedDict()

    def device(self, user_id: str, device_id: str | None, since: int | None, position: int) -> DeviceMembers:
        """The device's record as seen by a /sync from ``since`` (None: an initial sync, which forgets
        what the device was sent before) answering up to stream ``position``."""
        key = (user_id, device_id)
        found = None if since is None else self._devices.get(key)
        if found is None:
            found = _Record()
            self._devices[key] = found
        self._devices.move_to_end(key)
        while len(self._devices) > self._max_devices:
            self._devices.popitem(last=False)
        return DeviceMembers(found, since, position)
