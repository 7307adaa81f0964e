"""Event relationships as the server reads them (CS "Forming relationships between events").

Pure: content in, a ``Relation`` (or None) out. A relationship that does not match the ``m.relates_to``
schema is "simply ignored", so anything malformed gives None rather than an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

THREAD = "m.thread"
REPLACE = "m.replace"
REFERENCE = "m.reference"
ANNOTATION = "m.annotation"
# The relationship types whose children the server bundles (CS "Aggregations of child events"; annotations
# are not aggregated by the server, CS "Server-side aggregation of m.annotation relationships").
AGGREGATED = (THREAD, REPLACE, REFERENCE)
# Event ids are at most 255 bytes (appendices, "Event IDs"); longer "ids" cannot name an event, and keeping
# them out keeps the relations index within PostgreSQL's b-tree entry limit.
MAX_ID_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Relation:
    parent_id: str
    rel_type: str
    key: str | None = None  # m.annotation's aggregation key


def _usable(value: Any, limit: int = MAX_ID_LENGTH) -> bool:
    # NUL cannot be stored in PostgreSQL text, and the ids are looked up by equality only.
    return isinstance(value, str) and 0 < len(value) <= limit and "\x00" not in value


def relation_of(content: Mapping[str, Any]) -> Relation | None:
    """The relationship ``content`` declares with ``rel_type`` (rich replies have none: not here)."""
    relates_to = content.get("m.relates_to")
    if not isinstance(relates_to, Mapping):
        return None
    parent, rel_type = relates_to.get("event_id"), relates_to.get("rel_type")
    if not _usable(parent) or not _usable(rel_type) or not str(parent).startswith("$"):
        return None
    key = relates_to.get("key")
    if rel_type == ANNOTATION and not _usable(key, 65_536):
        return None  # an annotation "should contain a key": without one there is nothing to annotate with
    return Relation(str(parent), str(rel_type), str(key) if rel_type == ANNOTATION else None)


def is_valid_replacement(original: Mapping[str, Any], replacement: Mapping[str, Any]) -> bool:
    """CS "Validity of replacement events", for the fields of the two events as served (dicts with
    ``type``, ``sender``, ``content`` and maybe ``state_key``). Same room is checked by the caller."""
    if original.get("sender") != replacement.get("sender") or original.get("type") != replacement.get("type"):
        return False
    if "state_key" in original or "state_key" in replacement:
        return False
    own = relation_of(original.get("content") or {})
    if own is not None and own.rel_type == REPLACE:
        return False  # an edit cannot be edited
    content = replacement.get("content") or {}
    # The m.new_content of an encrypted replacement is in its ciphertext, where the server cannot look.
    return replacement.get("type") == "m.room.encrypted" or isinstance(content.get("m.new_content"), Mapping)
