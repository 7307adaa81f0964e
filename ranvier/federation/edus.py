"""The EDUs we send, built as the S2S spec's schemas have them, each with the key under which a newer one
replaces an older one still queued (see ``OutboxStore.enqueue_edu``): only the latest typing state of a
user in a room, and only the latest receipt of one type per user, room and thread, is worth sending.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class OutboundEdu:
    edu_type: str
    content: dict[str, Any]
    coalesce_key: str | None = None


def typing_edu(room_id: str, user_id: str, typing: bool) -> OutboundEdu:
    """S2S "Typing Notifications": ``m.typing`` with ``room_id``, ``user_id`` and ``typing``."""
    return OutboundEdu(
        "m.typing",
        {"room_id": room_id, "user_id": user_id, "typing": typing},
        coalesce_key=_key(room_id, user_id),
    )


def receipt_edu(
    room_id: str,
    user_id: str,
    event_id: str,
    ts: int,
    *,
    receipt_type: str = "m.read",
    thread_id: str | None = None,
) -> OutboundEdu:
    """S2S "Receipts": ``m.receipt`` content is ``{room_id: {receipt_type: {user_id: {event_ids, data}}}}``,
    with exactly one event id per user (``maxItems: 1``) and ``thread_id`` in ``data`` (since v1.4)."""
    data: dict[str, Any] = {"ts": ts}
    if thread_id is not None:
        data["thread_id"] = thread_id
    content = {room_id: {receipt_type: {user_id: {"event_ids": [event_id], "data": data}}}}
    return OutboundEdu(
        "m.receipt", content, coalesce_key=_key(room_id, receipt_type, user_id, thread_id or "")
    )


def _key(*parts: str) -> str:
    """An unambiguous coalesce key without NUL characters, which PostgreSQL text cannot hold (a key joined
    with NUL made every typing notification and receipt in a room with remote servers a 500 there)."""
    return json.dumps(parts)


def presence_edu(item: dict[str, Any]) -> OutboundEdu:
    """S2S "Presence": ``m.presence`` with one ``push`` entry (``user_id``, ``presence``,
    ``last_active_ago``, ...); a newer state of the same user replaces one still queued."""
    return OutboundEdu("m.presence", {"push": [item]}, coalesce_key=_key(str(item["user_id"])))
