"""Client filters (CS "Filtering"): parsing and checking what clients upload or pass inline.

A filter reaches the server three ways: the body of ``POST /user/{userId}/filter``, and the ``filter``
query parameter of ``/sync`` (a ``Filter``, or the id of an uploaded one) and of ``/messages`` (a
``RoomEventFilter``). Whatever a client sends there is answered with a 4xx, never a 500: JSON nested past
what any filter needs is refused before it can exhaust the parser's or encoder's stack, and the fields the
spec defines must have the spec's types (unknown fields are kept, as the spec allows extensions).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..protocol.canonical_json import parse_json
from ..protocol.errors import CanonicalJsonError
from .errors import MatrixError, bad_json

# The spec's deepest filter path is Filter.room.timeline.types[i]: depth 4. Room for extensions, not for
# nesting meant to crash a parser.
MAX_FILTER_NESTING = 16
# Filter ids are the decimal numbers the upload answered with; storage keeps them as 64-bit integers.
_FILTER_ID = re.compile(r"[0-9]{1,18}")

Check = Callable[[Any, str], None]


def _nesting(value: Any) -> int:
    """How deep ``value`` nests (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > MAX_FILTER_NESTING:
            return depth
        deepest = max(deepest, depth)
        stack.extend((c, depth) for c in children)
    return deepest


def _strings(value: Any, where: str) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_json(f"filter field '{where}' must be a list of strings")


def _boolean(value: Any, where: str) -> None:
    if not isinstance(value, bool):
        raise bad_json(f"filter field '{where}' must be a boolean")


def _integer(value: Any, where: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_json(f"filter field '{where}' must be an integer")


def _event_format(value: Any, where: str) -> None:
    if value not in ("client", "federation"):
        raise bad_json(f"filter field '{where}' must be 'client' or 'federation'")


def _object(fields: dict[str, Check]) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise bad_json(
                f"filter field '{where}' must be an object" if where else "filter must be an object"
            )
        for key, sub_check in fields.items():
            if value.get(key) is not None:  # null as absent: some clients write every field
                sub_check(value[key], f"{where}.{key}" if where else key)

    return check


_EVENT_FILTER_FIELDS: dict[str, Check] = {
    "limit": _integer,
    "types": _strings,
    "not_types": _strings,
    "senders": _strings,
    "not_senders": _strings,
}
_event_filter = _object(_EVENT_FILTER_FIELDS)
room_event_filter = _object(
    {
        **_EVENT_FILTER_FIELDS,
        "rooms": _strings,
        "not_rooms": _strings,
        "contains_url": _boolean,
        "lazy_load_members": _boolean,
        "include_redundant_members": _boolean,
        "unread_thread_notifications": _boolean,
    }
)
_room_filter = _object(
    {
        "rooms": _strings,
        "not_rooms": _strings,
        "include_leave": _boolean,
        "account_data": room_event_filter,
        "ephemeral": room_event_filter,
        "state": room_event_filter,
        "timeline": room_event_filter,
    }
)
user_filter = _object(
    {
        "event_fields": _strings,
        "event_format": _event_format,
        "presence": _event_filter,
        "account_data": _event_filter,
        "room": _room_filter,
    }
)


def parse_filter(raw: bytes | str, check: Check = user_filter) -> dict[str, Any]:
    """A filter's JSON text as an object checked by ``check`` (``user_filter`` for a ``Filter``,
    ``room_event_filter`` for /messages); 400 M_NOT_JSON or M_BAD_JSON otherwise."""
    try:
        value = parse_json(raw, strict=True)
    except CanonicalJsonError as e:
        if "malformed JSON" in e.message:
            raise MatrixError(400, "M_NOT_JSON", f"filter is not JSON: {e.message}") from None
        raise bad_json(f"invalid filter: {e.message}") from None
    if _nesting(value) > MAX_FILTER_NESTING:
        raise bad_json(f"filter nests deeper than {MAX_FILTER_NESTING} levels")
    check(value, "")
    return value  # type: ignore[no-any-return]


def valid_filter_id(filter_id: str) -> bool:
    """Whether ``filter_id`` could be one this server handed out (anything else is simply not found)."""
    return _FILTER_ID.fullmatch(filter_id) is not None
