"""Our membership event built from a resident's template (S2S make_join, make_knock, make_leave): the
template's prev and auth events and depth, our content, our signature. Each caller checks first that the
template is for its own membership."""

from __future__ import annotations

from typing import Any

from ..clock import now_ms
from ..protocol.events import Pdu, build_event
from ..protocol.room_versions import RoomVersion
from ..protocol.signing import SigningKey


def event_ids(value: Any) -> list[str]:
    """A template's prev/auth events: ids, or [id, hashes] pairs in room versions 1 and 2."""
    items = value if isinstance(value, list) else []
    out = [item[0] if isinstance(item, list) and item else item for item in items]
    return [i for i in out if isinstance(i, str)]


def sign_membership_template(
    rv: RoomVersion,
    template: dict[str, Any],
    *,
    room_id: Any,
    user_id: str,
    content: dict[str, Any],
    server_name: str,
    signing_key: SigningKey,
) -> Pdu:
    depth = template.get("depth")
    return build_event(
        room_version=rv,
        room_id=room_id,
        sender=user_id,
        event_type="m.room.member",
        state_key=user_id,
        content=content,
        prev_events=event_ids(template.get("prev_events")),
        auth_events=event_ids(template.get("auth_events")),
        depth=depth if isinstance(depth, int) else 1,
        origin_server_ts=now_ms(),
        server_name=server_name,
        signing_key=signing_key,
    )
