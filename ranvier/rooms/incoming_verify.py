"""Steps 1-3 of S2S "Checks performed on receipt of a PDU": format, signatures, content hash.

These need no room state, so a whole transaction is checked at once, before any room lock is taken, in
worker threads, the transaction split over two (PyNaCl releases the GIL inside ed25519 verification, so
one thread's parsing overlaps the other's verifying), keeping the event loop free for other requests:
every PDU is parsed (step 1) and, when the keys its signatures name are known, checked at once (steps
2-3); the keyring is then asked once for the keys the others name, and those are checked.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..protocol.errors import HashMismatch, ProtocolError
from ..protocol.events import KeyLookup, Pdu
from ..protocol.hashes import compute_event_id
from ..protocol.room_versions import EventIdFormat, RoomVersion
from ..protocol.signing import signature_key_ids

T = TypeVar("T")
R = TypeVar("R")


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


# Worker threads a batch is split over: PyNaCl releases the GIL inside ed25519 verification (~40 us of the
# ~55 us a PDU costs), so with two, one thread's Python (parsing, holding the GIL) runs while the other
# verifies; more threads could only add waiting for the GIL (``python3 -m bench protocol``'s "verify x2
# threads" row shows what two give on a given machine).
VERIFY_THREADS = 2
# Below this many PDUs per thread a slice is not worth a thread hop of its own (a guess, not measured).
MIN_PER_THREAD = 8


async def verify_in_thread(pdus: Sequence[Pdu], lookup: KeyLookup) -> list[Pdu | Dropped]:
    """``verify_all`` off the event loop, the batch split over worker threads (``_in_threads``)."""
    return await _in_threads(verify_all, pdus, lookup)


@dataclass(frozen=True, slots=True)
class Unverified:
    """A parsed PDU naming a signing key not known yet: verified once the keys are fetched."""

    pdu: Pdu


def intake(
    items: Sequence[tuple[object, str, RoomVersion]], lookup: KeyLookup
) -> list[Pdu | Dropped | Unverified]:
    """Steps 1-3 for PDUs given with the room they were filed under and its version: parse each (a PDU
    of another room than its ``room_id`` said is dropped), and check the signatures and content hash of
    each whose keys ``lookup`` knows already (the usual case: a peer signs with the key it signed with
    before). Pure CPU work, for a worker thread."""
    out: list[Pdu | Dropped | Unverified] = []
    for raw, room_id, rv in items:
        p = parse_pdu(raw, rv)
        if isinstance(p, Dropped):
            out.append(p)
        elif p.room_id != room_id:
            out.append(Dropped(p.event_id, "room_id mismatch"))
        elif all(lookup(server, key_id) is not None for server, key_id in key_requests([p])):
            out.append(verify_pdu(p, lookup))
        else:
            out.append(Unverified(p))
    return out


async def intake_in_threads(
    items: Sequence[tuple[object, str, RoomVersion]], lookup: KeyLookup
) -> list[Pdu | Dropped | Unverified]:
    """``intake`` off the event loop: parsing (Python, holding the GIL) in one thread overlaps the
    ed25519 verification (PyNaCl, without it) in the other."""
    return await _in_threads(intake, items, lookup)


async def _in_threads(
    work: Callable[[Sequence[T], KeyLookup], list[R]], items: Sequence[T], lookup: KeyLookup
) -> list[R]:
    """``work`` over ``items`` in worker threads: one hop per slice, the slices at once (in the default
    executor's threads), the results in the order of ``items``. Two items or fewer: on the caller's
    thread (a deferred PDU tried again), where the hop would cost more than the work."""
    if len(items) <= 2:
        return work(items, lookup)
    parts = max(1, min(VERIFY_THREADS, len(items) // MIN_PER_THREAD))
    size = -(-len(items) // parts)
    slices = [items[i : i + size] for i in range(0, len(items), size)]
    results = await asyncio.gather(*(asyncio.to_thread(work, s, lookup) for s in slices))
    return [r for part in results for r in part]


def raw_room_id(raw: Any) -> str | None:
    room_id = raw.get("room_id") if isinstance(raw, Mapping) else None
    return room_id if isinstance(room_id, str) else None
