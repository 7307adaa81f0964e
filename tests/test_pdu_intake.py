"""rooms.incoming_verify: steps 1-3 of a transaction in worker threads (parse, signatures, content hash).

A PDU whose keys are known is checked where it is parsed; one naming an unknown key comes back
``Unverified`` for the caller to fetch its keys; every PDU's outcome is its own, in the order given.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import Any

from ranvier.protocol.events import Pdu, VerifyKeyInfo, build_event
from ranvier.protocol.room_versions import get_room_version
from ranvier.protocol.signing import SigningKey
from ranvier.rooms import incoming_verify
from ranvier.rooms.incoming_verify import (
    Dropped,
    Unverified,
    intake,
    intake_in_threads,
    verify_in_thread,
)

V12 = get_room_version("12")
ROOM = "!" + "R" * 43
KNOWN = SigningKey.from_seed("known", bytes(32))
UNKNOWN = SigningKey.from_seed("later", bytes(range(32)))
SERVER = "remote.example"


def lookup(server: str, key_id: str) -> VerifyKeyInfo | None:
    if server == SERVER and key_id == KNOWN.key_id:
        return VerifyKeyInfo(KNOWN.verify_key, None)
    return None


def lookup_after_fetch(server: str, key_id: str) -> VerifyKeyInfo | None:
    if server == SERVER and key_id == UNKNOWN.key_id:
        return VerifyKeyInfo(UNKNOWN.verify_key, None)
    return lookup(server, key_id)


def message(n: int, key: SigningKey = KNOWN, room_id: str = ROOM) -> dict[str, Any]:
    pdu = build_event(
        room_version=V12,
        room_id=room_id,
        sender=f"@bob:{SERVER}",
        event_type="m.room.message",
        content={"msgtype": "m.text", "body": f"message {n}"},
        prev_events=["$" + "p" * 43],
        auth_events=["$" + "a" * 43],
        depth=10 + n,
        origin_server_ts=1_700_000_000_000 + n,
        server_name=SERVER,
        signing_key=key,
    )
    return copy.deepcopy(pdu.json)


def test_each_pdu_gets_its_own_outcome_in_order() -> None:
    good = message(0)
    forged = message(1)
    forged["content"]["body"] = "changed"  # the hash no longer matches: redacted, not dropped
    forged_sig = message(2)
    forged_sig["depth"] = 99  # a signed field: the signature fails
    later = message(3, key=UNKNOWN)
    elsewhere = message(4, room_id="!" + "X" * 43)
    malformed = {**message(5), "depth": "deep"}
    raws = [good, forged, forged_sig, later, elsewhere, malformed]
    out = intake([(raw, ROOM, V12) for raw in raws], lookup)

    assert isinstance(out[0], Pdu) and out[0].content["body"] == "message 0"
    assert isinstance(out[1], Pdu) and out[1].content == {}  # redacted copy, same event id
    assert out[1].event_id == Pdu(forged, V12).event_id
    assert isinstance(out[2], Dropped) and out[2].reason.startswith("signature check failed")
    assert isinstance(out[3], Unverified) and out[3].pdu.event_id == Pdu(later, V12).event_id
    assert out[4] == Dropped(Pdu(elsewhere, V12).event_id, "room_id mismatch")
    assert isinstance(out[5], Dropped) and out[5].reason.startswith("invalid event")


async def test_unverified_pdus_are_checked_once_their_keys_are_known() -> None:
    later = [message(n, key=UNKNOWN) for n in range(3)]
    first = await intake_in_threads([(raw, ROOM, V12) for raw in later], lookup)
    assert all(isinstance(r, Unverified) for r in first)
    pdus = [r.pdu for r in first if isinstance(r, Unverified)]
    checked = await verify_in_thread(pdus, lookup_after_fetch)
    assert [p.event_id for p in checked if isinstance(p, Pdu)] == [p.event_id for p in pdus]


async def test_a_transaction_is_split_over_worker_threads_in_order(monkeypatch: Any) -> None:
    """50 PDUs: two slices, each checked in a worker thread of its own, results in the given order."""
    threads: set[int] = set()
    barrier = threading.Barrier(2, timeout=10)  # both slices must be in flight at once

    def recording_intake(items: Sequence[Any], key_lookup: Any) -> list[Any]:
        threads.add(threading.get_ident())
        barrier.wait()
        return intake(items, key_lookup)

    monkeypatch.setattr(incoming_verify, "intake", recording_intake)
    raws = [message(n) for n in range(50)]
    out = await incoming_verify.intake_in_threads([(raw, ROOM, V12) for raw in raws], lookup)
    assert len(threads) == 2 and threading.get_ident() not in threads
    assert [p.content["body"] for p in out if isinstance(p, Pdu)] == [f"message {n}" for n in range(50)]
