"""Connects tracing and request ids to the parts of a running homeserver (as metrics_wiring does for
metrics): spans for persisting, state resolution and each received PDU's checks, and the event origins
that let the federation sender and /sync act as the request an event came from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..storage.interfaces import EventToPersist
from .tracing import EventOrigins

if TYPE_CHECKING:
    from ..app import Homeserver


def wire_tracing(hs: Homeserver) -> EventOrigins:
    """Sets the parts' tracing hooks; returns the event origins (for /sync, wired with the client app)."""
    origins = EventOrigins(hs.tracing)

    async def remember(room_id: str, batch: Sequence[EventToPersist]) -> None:
        # Runs in the persisting request's context: its request id and trace are the events' origin.
        origins.remember(item.pdu.event_id for item in batch)

    hs.persister.add_listener(remember)
    hs.persister.tracing = hs.tracing
    hs.state.tracing = hs.tracing
    if hs.config.federation.enabled:
        hs.federation_sender.origins = origins
        hs.incoming_pdus.tracing = hs.tracing
    return origins
