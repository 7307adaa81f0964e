"""Steps 1-3 of S2S "Checks performed on receipt of a PDU": format, signatures, content hash.

These need no room state, so a whole transaction is checked at once, before any room lock is taken: the
caller parses every PDU (step 1), asks the keyring once for every key the signatures name, then verifies
all of them in one worker thread (PyNaCl releases the GIL inside ed25519 verification, and the canonical
JSON work in between is short), keeping the event loop free for other requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..protocol.errors import HashMismatch, ProtocolError
from ..protocol.events import KeyLookup, Pdu
from ..protocol.hashes import compute_event_id
from ..protocol.room_versions import EventIdFormat, RoomVersion
from ..protocol.signing import signature_key_ids


@dataclass(frozen=True, slots=True)
class Dropped:
    """A PDU refused before it reached the DAG (steps 1-2): never stored, never served."""

    event_id: str | None
    reason: str


def parse_pdu(raw: object, room_version: RoomVersion) -> Pdu | Dropped:
    """Step 1: "Is a valid event, otherwise it is dropped" (the Pdu constructor is the format check)."""
    if not isinstance(raw, Mapping):
        return Dropped(None, "a PDU must be a JSON object")
    try:
        return Pdu(_without_foreign_unsigned(raw), room_version)
    except ProtocolError as e:
        return Dropped(_event_id_of(raw, room_version), f"invalid event: {e.message}")


def _without_foreign_unsigned(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """``unsigned`` is "not covered by signatures": what another server puts there is not to be believed
    (a forged ``redacted_because``, ``prev_content`` or ``transaction_id`` would reach our clients). Keep
    only ``age`` and, on membership events, the stripped state of an invite or knock (as Synapse does);
    an ``unsigned`` that is not an object is dropped rather than failing the event."""
    unsigned = raw.get("unsigned")
    if unsigned is None:
        return raw
    keep = _UNSIGNED_KEPT_MEMBER if raw.get("type") == "m.room.member" else _UNSIGNED_KEPT
    d = dict(raw)
    if isinstance(unsigned, Mapping) and any(k in unsigned for k in keep):
        d["unsigned"] = {k: v for k, v in unsigned.items() if k in keep}
    else:
        del d["unsigned"]
    return d


_UNSIGNED_KEPT = frozenset({"age"})
_UNSIGNED_KEPT_MEMBER = frozenset({"age", "invite_room_state", "knock_room_state"})


def _event_id_of(raw: Mapping[str, Any], room_version: RoomVersion) -> str | None:
    """The event id of an invalid PDU, so that its error can be reported under it in the /send answer:
    the ``event_id`` it carries (v1-v2), or its reference hash, computed without canonical JSON's number
    limits (from v3 an id is the hash of the event, valid or not; a float must not hide which PDU it was)."""
    if room_version.event_id_format is EventIdFormat.DOMAIN:
        event_id = raw.get("event_id")
        return event_id if isinstance(event_id, str) else None
    try:
        return compute_event_id(raw, dataclasses.replace(room_version, strict_canonical_json=False))
    except (ProtocolError, TypeError, ValueError, AttributeError, RecursionError):
        return None  # not even hashable (e.g. a lone surrogate): there is no id to report it under


def key_requests(pdus: Iterable[Pdu]) -> set[tuple[str, str]]:
    """Every (server, key id) the required signatures of ``pdus`` name: what to prefetch in one go."""
    wanted: set[tuple[str, str]] = set()
    for pdu in pdus:
        try:
            signers = pdu.required_signers()
        except ProtocolError:
            continue  # verify_pdu reports it
        for server in signers:
            wanted.update((server, key_id) for key_id in signature_key_ids(pdu.json, server))
    return wanted


def verify_pdu(pdu: Pdu, lookup: KeyLookup) -> Pdu | Dropped:
    """Steps 2 and 3: drop an event without valid signatures of its required signers (the sender's
    server, plus the event id's server in v1-v2 and a restricted join's authoriser); use the redacted
    copy of one whose content hash does not match ("it is redacted before being processed further")."""
    try:
        pdu.check_signatures(lookup)
    except ProtocolError as e:
        return Dropped(pdu.event_id, f"signature check failed: {e.message}")
    try:
        pdu.check_content_hash()
    except HashMismatch:
        try:
            return pdu.redacted()
        except ProtocolError as e:
            return Dropped(
                pdu.event_id, f"content hash mismatch and the redacted copy is invalid: {e.message}"
            )
    return pdu


def verify_all(pdus: Sequence[Pdu], lookup: KeyLookup) -> list[Pdu | Dropped]:
    return [verify_pdu(p, lookup) for p in pdus]


async def verify_in_thread(pdus: Sequence[Pdu], lookup: KeyLookup) -> list[Pdu | Dropped]:
    """``verify_all`` in a worker thread (one hop per batch: the per-event work is ~0.1 ms)."""
    if len(pdus) <= 2:
        return verify_all(pdus, lookup)
    return await asyncio.to_thread(verify_all, pdus, lookup)


def raw_room_id(raw: Any) -> str | None:
    room_id = raw.get("room_id") if isinstance(raw, Mapping) else None
    return room_id if isinstance(room_id, str) else None
