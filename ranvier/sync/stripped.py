"""What /sync and sliding sync show of a room the user is invited to or knocking on (CS "Stripped state")."""

from __future__ import annotations

from typing import Any, Protocol

from ..client_api.event_format import stripped_state_event
from ..rooms.stripped_state import STRIPPED_STATE_TYPES
from ..storage.protocols.composite import HasEvents, HasState


class StrippedStorage(HasEvents, HasState, Protocol):
    """What sync/stripped.py asks of storage."""


async def membership_stripped_state(
    storage: StrippedStorage, room_id: str, event_id: str, carried_key: str = "invite_room_state"
) -> list[dict[str, Any]]:
    """What the inviting (or knocked-on) server sent with the membership event under ``carried_key``, or
    for a room this server is in, the room's own stripped state; then the membership event itself."""
    event = await storage.events.get_event(event_id)
    out: list[dict[str, Any]] = []
    if event is not None:
        carried = event.unsigned.get(carried_key)
        if isinstance(carried, list):
            out.extend(e for e in carried if isinstance(e, dict))
    if not out:
        for event_type in STRIPPED_STATE_TYPES:
            pdu = await storage.state.get_current_state_event(room_id, event_type, "")
            if pdu is not None:
                out.append(stripped_state_event(pdu))
    if event is not None:
        out.append(stripped_state_event(event))
    return out
