"""The state a server shows of a room to someone not in it: invitees and knockers (CS "Stripped state").

Over federation (S2S "Inviting to a room", "Knocking upon a room", v1.16) the entries are full PDUs of the
room, the ``m.room.create`` event among them; the receiving server strips them for its clients.
"""

from __future__ import annotations

from typing import Any

from ..storage.protocols.composite import HasState

# CS "Stripped state": the state events an invitee (or knocker) is shown of a room it is not in.
STRIPPED_STATE_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.join_rules",
    "m.room.canonical_alias",
    "m.room.encryption",
)


async def room_state_for_remote(storage: HasState, room_id: str) -> list[dict[str, Any]]:
    """The room's current stripped-state events as full PDUs (without ``unsigned``), for another server."""
    out = []
    for event_type in STRIPPED_STATE_TYPES:
        ev = await storage.state.get_current_state_event(room_id, event_type, "")
        if ev is not None:
            out.append({k: v for k, v in ev.to_federation().items() if k != "unsigned"})
    return out
