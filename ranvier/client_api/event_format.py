"""PDUs as clients see them (CS "Room event format", ``ClientEvent``)."""

from __future__ import annotations

from typing import Any

from ..protocol.events import Pdu


def format_client_event(
    pdu: Pdu,
    now_ms: int,
    *,
    include_room_id: bool = True,
    transaction_id: str | None = None,
    relations: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``relations``: the event's bundled aggregations (``unsigned.m.relations``, client_api.bundled)."""
    event: dict[str, Any] = {
        "event_id": pdu.event_id,
        "type": pdu.type,
        "sender": pdu.sender,
        "content": pdu.content,
        "origin_server_ts": pdu.origin_server_ts,
    }
    if include_room_id:
        event["room_id"] = pdu.room_id
    if pdu.state_key is not None:
        event["state_key"] = pdu.state_key
    redacts = pdu.redacts
    if redacts is not None:
        event["redacts"] = redacts  # clients of v11+ rooms also read it from content
    unsigned: dict[str, Any] = {"age": max(0, now_ms - pdu.origin_server_ts)}
    source_unsigned = pdu.unsigned
    for key in (
        "redacted_because",
        "prev_content",
        "replaces_state",
        "invite_room_state",
        "knock_room_state",
    ):
        if key in source_unsigned:
            unsigned[key] = source_unsigned[key]
    if transaction_id is not None:
        unsigned["transaction_id"] = transaction_id
    if relations:
        unsigned["m.relations"] = relations
    event["unsigned"] = unsigned
    return event


def stripped_state_event(pdu: Pdu) -> dict[str, Any]:
    """CS "Stripped state": what invitees and knockers see of a room."""
    return {"type": pdu.type, "state_key": pdu.state_key or "", "content": pdu.content, "sender": pdu.sender}
