"""EDU forgeries: typing, receipts, device lists, cross-signing keys and to-device messages claimed for users
of another server (ours included), for rooms the user is not in, or malformed. The transaction is answered
200 (EDUs have no per-EDU answer) and the forgery has no effect; a genuine EDU of the same kind, sent as a
control, does. Then the room works for its members.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from .fed_harness import HostileRoom, Outcome, Peer, record, start_hostile_room

pytestmark = pytest.mark.asyncio(loop_scope="module")

CATEGORY = "EDU forgeries"


@dataclass
class ERoom:
    room: HostileRoom
    other: Peer
    other_room: str  # a room of alice's that the peer's users are not in
    message_id: str  # an event of the room, for receipts
    carol_since: str | None = None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def er(
    tmp_path_factory: pytest.TempPathFactory, fed_session: aiohttp.ClientSession
) -> AsyncIterator[ERoom]:
    tmp = tmp_path_factory.mktemp("edus")
    room = await start_hostile_room(tmp, fed_session)
    try:
        other = await room.add_peer(tmp / "other")
        status, body = await room.alice.call(
            "POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"}
        )
        assert status == 200, body
        msg = await room.message("receipt target")
        assert (await room.send_txn([msg])).body["pdus"] == {msg.event_id: {}}
        e = ERoom(room, other, body["room_id"], msg.event_id)
        await carol_to_device(e)  # the first sync: later ones see only what is new
        yield e
    finally:
        await room.close()


# -- observations ----------------------------------------------------------------------------------------


def typing_users(er: ERoom, room_id: str | None = None) -> list[str]:
    typing = er.room.hs.inbound_transactions.edus.typing
    return list(typing.typing_users(room_id or er.room.room_id))


async def receipts_of(er: ERoom, user_id: str, room_id: str | None = None) -> list[Any]:
    found = await er.room.hs.storage.receipts.receipts_for_room(room_id or er.room.room_id)
    return [r for r in found if r.user_id == user_id]


async def carol_to_device(er: ERoom) -> list[dict[str, Any]]:
    """carol's to-device messages since her last sync."""
    query = "?timeout=0" + (f"&since={er.carol_since}" if er.carol_since else "")
    status, body = await er.room.carol.call("GET", f"/_matrix/client/v3/sync{query}")
    assert status == 200, body
    er.carol_since = body["next_batch"]
    events: list[dict[str, Any]] = body.get("to_device", {}).get("events", [])
    return events


async def remote_device_list(er: ERoom, user_id: str) -> Any:
    return await er.room.hs.storage.device_lists.get_remote_list(user_id)


async def cross_signing(er: ERoom, user_id: str) -> dict[str, Any]:
    keys: dict[str, Any] = await er.room.hs.storage.e2e_keys.get_cross_signing_keys(user_id)
    return keys


# -- cases -----------------------------------------------------------------------------------------------


def typing(user_id: str, room_id: str, value: Any = True) -> dict[str, Any]:
    return {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": user_id, "typing": value}}


def receipt(user_id: str, room_id: str, event_id: Any) -> dict[str, Any]:
    return {
        "edu_type": "m.receipt",
        "content": {room_id: {"m.read": {user_id: {"event_ids": [event_id], "data": {"ts": 1}}}}},
    }


def to_device(sender: str, target: str, marker: str, message_id: str | None = None) -> dict[str, Any]:
    return {
        "edu_type": "m.direct_to_device",
        "content": {
            "sender": sender,
            "type": "org.example.hostile",
            "message_id": message_id or secrets.token_hex(8),
            "messages": {target: {"*": {"marker": marker}}},
        },
    }


def device_list(user_id: str, stream_id: Any = 1, **extra: Any) -> dict[str, Any]:
    return {
        "edu_type": "m.device_list_update",
        "content": {"user_id": user_id, "device_id": "EVIL", "stream_id": stream_id, "prev_id": [], **extra},
    }


def signing_keys(user_id: str) -> dict[str, Any]:
    key = {"user_id": user_id, "usage": ["master"], "keys": {"ed25519:evil": "evilkey"}}
    return {"edu_type": "m.signing_key_update", "content": {"user_id": user_id, "master_key": key}}


@dataclass(frozen=True)
class EduCase:
    name: str
    edus: Callable[[ERoom, str], list[Any]]  # (room, marker) -> the EDUs to send
    took_effect: Callable[[ERoom, str], Awaitable[bool]]
    expect: Outcome  # accepted: takes effect (controls); refused: no effect


def _alice(er: ERoom) -> str:
    return er.room.alice.user_id


async def _alice_typing(er: ERoom, marker: str) -> bool:
    return _alice(er) in typing_users(er)


async def _olive_typing(er: ERoom, marker: str) -> bool:
    return er.other.user("olive") in typing_users(er)


async def _mallory_typing(er: ERoom, marker: str) -> bool:
    return er.room.peer.user("mallory") in typing_users(er)


async def _bob_typing_other_room(er: ERoom, marker: str) -> bool:
    return er.room.bob in typing_users(er, er.other_room)


async def _bob_typing(er: ERoom, marker: str) -> bool:
    found = er.room.bob in typing_users(er)
    er.room.hs.inbound_transactions.edus.typing.set_typing(er.room.room_id, er.room.bob, False)
    return found


async def _alice_receipt(er: ERoom, marker: str) -> bool:
    return any(r.event_id == er.message_id for r in await receipts_of(er, _alice(er)))


async def _olive_receipt(er: ERoom, marker: str) -> bool:
    return bool(await receipts_of(er, er.other.user("olive")))


async def _mallory_receipt(er: ERoom, marker: str) -> bool:
    return bool(await receipts_of(er, er.room.peer.user("mallory")))


async def _bob_receipt_other_room(er: ERoom, marker: str) -> bool:
    return bool(await receipts_of(er, er.room.bob, er.other_room))


async def _bob_receipt(er: ERoom, marker: str) -> bool:
    return any(r.event_id == er.message_id for r in await receipts_of(er, er.room.bob))


async def _carol_got(er: ERoom, marker: str) -> bool:
    return any(e.get("content", {}).get("marker") == marker for e in await carol_to_device(er))


async def _alice_remote_list(er: ERoom, marker: str) -> bool:
    return await remote_device_list(er, _alice(er)) is not None


async def _olive_remote_list(er: ERoom, marker: str) -> bool:
    return await remote_device_list(er, er.other.user("olive")) is not None


async def _alice_cross_signing(er: ERoom, marker: str) -> bool:
    return bool(await cross_signing(er, _alice(er)))


async def _olive_cross_signing(er: ERoom, marker: str) -> bool:
    return bool(await cross_signing(er, er.other.user("olive")))


async def _bob_cross_signing(er: ERoom, marker: str) -> bool:
    return bool(await cross_signing(er, er.room.bob))


async def _nothing_visible(er: ERoom, marker: str) -> bool:
    # Malformed EDUs: nobody types, no new receipts, carol gets nothing.
    return bool(typing_users(er)) or bool(await carol_to_device(er))


CASES = [
    # typing
    EduCase(
        "typing_for_our_user", lambda er, m: [typing(_alice(er), er.room.room_id)], _alice_typing, "refused"
    ),
    EduCase(
        "typing_for_other_servers_user",
        lambda er, m: [typing(er.other.user("olive"), er.room.room_id)],
        _olive_typing,
        "refused",
    ),
    EduCase(
        "typing_for_non_member",
        lambda er, m: [typing(er.room.peer.user("mallory"), er.room.room_id)],
        _mallory_typing,
        "refused",
    ),
    EduCase(
        "typing_in_room_user_is_not_in",
        lambda er, m: [typing(er.room.bob, er.other_room)],
        _bob_typing_other_room,
        "refused",
    ),
    EduCase(
        "typing_value_not_bool",
        lambda er, m: [typing(er.room.bob, er.room.room_id, "yes")],
        _bob_typing,
        "refused",
    ),
    EduCase("typing_control", lambda er, m: [typing(er.room.bob, er.room.room_id)], _bob_typing, "accepted"),
    # receipts
    EduCase(
        "receipt_for_our_user",
        lambda er, m: [receipt(_alice(er), er.room.room_id, er.message_id)],
        _alice_receipt,
        "refused",
    ),
    EduCase(
        "receipt_for_other_servers_user",
        lambda er, m: [receipt(er.other.user("olive"), er.room.room_id, er.message_id)],
        _olive_receipt,
        "refused",
    ),
    EduCase(
        "receipt_for_non_member",
        lambda er, m: [receipt(er.room.peer.user("mallory"), er.room.room_id, er.message_id)],
        _mallory_receipt,
        "refused",
    ),
    EduCase(
        "receipt_in_room_user_is_not_in",
        lambda er, m: [receipt(er.room.bob, er.other_room, er.message_id)],
        _bob_receipt_other_room,
        "refused",
    ),
    EduCase(
        "receipt_event_ids_not_strings",
        lambda er, m: [receipt(er.room.bob, er.room.room_id, 5)],
        _bob_receipt,
        "refused",
    ),
    EduCase(
        "receipt_control",
        lambda er, m: [receipt(er.room.bob, er.room.room_id, er.message_id)],
        _bob_receipt,
        "accepted",
    ),
    # to-device
    EduCase(
        "to_device_sender_our_user",
        lambda er, m: [to_device(_alice(er), er.room.carol.user_id, m)],
        _carol_got,
        "refused",
    ),
    EduCase(
        "to_device_sender_other_server",
        lambda er, m: [to_device(er.other.user("olive"), er.room.carol.user_id, m)],
        _carol_got,
        "refused",
    ),
    EduCase(
        "to_device_sender_not_a_user_id",
        lambda er, m: [to_device("olive", er.room.carol.user_id, m)],
        _carol_got,
        "refused",
    ),
    EduCase(
        "to_device_messages_not_object",
        lambda er, m: [{**to_device(er.room.bob, er.room.carol.user_id, m), "content": {"messages": []}}],
        _carol_got,
        "refused",
    ),
    EduCase(
        "to_device_control",
        lambda er, m: [to_device(er.room.bob, er.room.carol.user_id, m)],
        _carol_got,
        "accepted",
    ),
    # device lists and cross-signing keys
    EduCase(
        "device_list_update_for_our_user",
        lambda er, m: [device_list(_alice(er))],
        _alice_remote_list,
        "refused",
    ),
    EduCase(
        "device_list_update_for_other_servers_user",
        lambda er, m: [device_list(er.other.user("olive"))],
        _olive_remote_list,
        "refused",
    ),
    EduCase(
        "device_list_update_stream_id_string",
        lambda er, m: [device_list(er.other.user("olive"), stream_id="1")],
        _olive_remote_list,
        "refused",
    ),
    EduCase(
        "signing_key_update_for_our_user",
        lambda er, m: [signing_keys(_alice(er))],
        _alice_cross_signing,
        "refused",
    ),
    EduCase(
        "signing_key_update_for_other_servers_user",
        lambda er, m: [signing_keys(er.other.user("olive"))],
        _olive_cross_signing,
        "refused",
    ),
    EduCase(
        "signing_key_update_control",
        lambda er, m: [signing_keys(er.room.bob)],
        _bob_cross_signing,
        "accepted",
    ),
    # malformed
    EduCase("edu_a_string", lambda er, m: ["m.typing"], _nothing_visible, "refused"),
    EduCase("edu_null", lambda er, m: [None], _nothing_visible, "refused"),
    EduCase("edu_without_content", lambda er, m: [{"edu_type": "m.typing"}], _nothing_visible, "refused"),
    EduCase(
        "edu_content_a_list",
        lambda er, m: [{"edu_type": "m.typing", "content": [1]}],
        _nothing_visible,
        "refused",
    ),
    EduCase(
        "edu_type_not_string",
        lambda er, m: [{"edu_type": 7, "content": {}}],
        _nothing_visible,
        "refused",
    ),
    EduCase(
        "edu_unknown_type",
        lambda er, m: [{"edu_type": "org.example.unknown", "content": {"x": 1}}],
        _nothing_visible,
        "refused",
    ),
    EduCase(
        "presence_for_our_user",
        lambda er, m: [
            {"edu_type": "m.presence", "content": {"push": [{"user_id": _alice(er), "presence": "offline"}]}}
        ],
        _nothing_visible,
        "refused",
    ),
    EduCase(
        "receipt_content_garbage",
        lambda er, m: [{"edu_type": "m.receipt", "content": {"x": 1, "y": {"m.read": []}}}],
        _nothing_visible,
        "refused",
    ),
    EduCase(
        "typing_room_id_not_string",
        lambda er, m: [
            {"edu_type": "m.typing", "content": {"room_id": 1, "user_id": er.room.bob, "typing": True}}
        ],
        _nothing_visible,
        "refused",
    ),
    EduCase(
        "hundred_forgeries_at_once",
        lambda er, m: (
            [typing(_alice(er), er.room.room_id)] * 50
            + [to_device(_alice(er), er.room.carol.user_id, m)] * 50
        ),
        _nothing_visible,
        "refused",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_edu_forgery(er: ERoom, case: EduCase) -> None:
    marker = secrets.token_hex(6)
    reply = await er.room.send_txn([], case.edus(er, marker))
    if reply.status >= 500:
        record(CATEGORY, "5xx")
    assert reply.status == 200 and reply.body == {"pdus": {}}, reply
    effect = await case.took_effect(er, marker)
    record(CATEGORY, "accepted" if effect else "refused")
    assert effect == (case.expect == "accepted"), f"{case.name}: took effect: {effect}"
    await er.room.assert_works()


async def test_edus_of_a_server_denied_by_the_acl_are_ignored(er: ERoom) -> None:
    """Last (it changes the room's state): once the ACL denies the peer, its typing is ignored too."""
    room = er.room
    status, body = await room.alice.call(
        "PUT",
        f"/_matrix/client/v3/rooms/{room.room_id}/state/m.room.server_acl/",
        # ACLs match host names without the port (S2S "Server Access Control Lists"): every peer of
        # this test is 127.0.0.1, and our own server's local members are not subject to the ACL.
        {"allow": ["*"], "deny": ["127.0.0.1"]},
    )
    assert status == 200, body
    reply = await room.send_txn([], [typing(room.bob, room.room_id)])
    assert reply.status == 200
    effect = room.bob in typing_users(er)
    record(CATEGORY, "accepted" if effect else "refused")
    assert not effect
    # The members that remain still use the room; the denied peer's own PDUs are refused one by one.
    pdu = await room.message("denied")
    reply = await room.send_txn([pdu])
    assert reply.status == 200 and "error" in reply.body["pdus"][pdu.event_id], reply
    status, body = await room.carol.call(
        "PUT",
        f"/_matrix/client/v3/rooms/{room.room_id}/send/m.room.message/acl1",
        {"msgtype": "m.text", "body": "ok"},
    )
    assert status == 200, body
    assert "ok" in await room.recent_bodies()
