"""Content hashes, reference hashes, event ids and room v12 room ids (S2S "Signing Events")."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from unpaddedbase64 import encode_base64

from .canonical_json import encode_canonical_json
from .errors import HashMismatch
from .identifiers import EventId, RoomId
from .redaction import redact_event
from .room_versions import EventIdFormat, RoomVersion

_NOT_HASHED = ("unsigned", "signatures", "hashes")
_NOT_REFERENCED = ("signatures", "age_ts", "unsigned")


def compute_content_hash(event: Mapping[str, Any], room_version: RoomVersion) -> bytes:
    """sha256 of the canonical JSON of the event without ``unsigned``, ``signatures`` and ``hashes``."""
    body = {k: v for k, v in event.items() if k not in _NOT_HASHED}
    return hashlib.sha256(encode_canonical_json(body, room_version.strict_canonical_json)).digest()


def add_content_hash(event: dict[str, Any], room_version: RoomVersion) -> dict[str, Any]:
    event["hashes"] = {"sha256": encode_base64(compute_content_hash(event, room_version))}
    return event


def check_content_hash(event: Mapping[str, Any], room_version: RoomVersion) -> None:
    """Raise HashMismatch if the event's ``hashes.sha256`` does not match its content.

    Per S2S "Validating hashes and signatures on received events", a mismatch means the event must be
    redacted before use, not dropped; the caller decides that.
    """
    hashes = event.get("hashes")
    expected = hashes.get("sha256") if isinstance(hashes, dict) else None
    if not isinstance(expected, str):
        raise HashMismatch("event has no sha256 content hash")
    actual = encode_base64(compute_content_hash(event, room_version))
    if actual != expected:
        raise HashMismatch("content hash does not match the event")


def compute_reference_hash(event: Mapping[str, Any], room_version: RoomVersion) -> bytes:
    """sha256 of the redacted event without ``signatures``, ``age_ts`` and ``unsigned``."""
    redacted = redact_event(event, room_version)
    for key in _NOT_REFERENCED:
        redacted.pop(key, None)
    return hashlib.sha256(encode_canonical_json(redacted, room_version.strict_canonical_json)).digest()


def compute_event_id(event: Mapping[str, Any], room_version: RoomVersion) -> EventId:
    """The event id of a v3+ event, derived from its reference hash.

    For v1-v2 the event id is chosen by the origin and carried in the PDU, so it cannot be computed.
    """
    fmt = room_version.event_id_format
    if fmt is EventIdFormat.DOMAIN:
        raise ValueError("room versions 1 and 2 carry their event ids in the PDU")
    digest = compute_reference_hash(event, room_version)
    return EventId("$" + encode_base64(digest, urlsafe=fmt is EventIdFormat.URLSAFE_BASE64))


def compute_room_id_from_create(create_event: Mapping[str, Any], room_version: RoomVersion) -> RoomId:
    """Room v12: the room id is the create event's event id with ``!`` for ``$`` (MSC4291)."""
    return RoomId("!" + compute_event_id(create_event, room_version)[1:])
