"""Invites carrying ``third_party_invite`` (rule 5.3.1 in v1-v7, 4.4.1 in v8-v11, 5.4.1 in v12), with a
``signed`` block really signed by an identity server's ed25519 key; and the m.room.third_party_invite rule."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ranvier.protocol.signing import SigningKey, sign_json

from .helpers import ALICE, BOB, CAROL, CORE_VERSIONS, Room, accepts, new_room, rejects

IS_KEY = SigningKey.from_seed("0", b"identity-server-seed-0123456789a"[:32])
OTHER_KEY = SigningKey.from_seed("0", b"some-other-identity-key-98765432"[:32])
TOKEN = "abc123token"


def _room(version: str, public_keys: list[str] | None = None, single: str | None = None) -> Room:
    room = new_room(version, join_rule="invite", members=(CAROL,))
    content: dict[str, Any] = {"display_name": "b...@example.com"}
    if single is not None or public_keys is None:
        content["public_key"] = single if single is not None else IS_KEY.public_key_base64
        content["key_validity_url"] = "https://id.example/_matrix/identity/v2/pubkey/isvalid"
    if public_keys is not None:
        content["public_keys"] = [{"public_key": k} for k in public_keys]
    room.send(ALICE, "m.room.third_party_invite", content, TOKEN)
    return room


def _signed(mxid: str = BOB, token: str = TOKEN, key: SigningKey = IS_KEY) -> dict[str, Any]:
    return sign_json({"mxid": mxid, "token": token, "sender": ALICE}, "id.example", key)


def _invite(room: Room, signed: Any, sender: str = ALICE, target: str = BOB) -> Any:
    tpi: dict[str, Any] = {"display_name": "b...@example.com"}
    if signed is not None:
        tpi["signed"] = signed
    return room.member(sender, target, "invite", third_party_invite=tpi)


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_signed_invite_accepted(version: str) -> None:
    room = _room(version)
    accepts(_invite(room, _signed()), room.state)


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_key_from_public_keys_list_accepted(version: str) -> None:
    # the single key is malformed; the list holds an unrelated key and then the right one
    room = _room(version, public_keys=[OTHER_KEY.public_key_base64, IS_KEY.public_key_base64], single="!!")
    accepts(_invite(room, _signed()), room.state)


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_target_banned_rejected(version: str) -> None:
    room = _room(version)
    room.set_member(ALICE, BOB, "ban")
    rejects(_invite(room, _signed()), room.state, "member", "invite", "third_party", "target_banned")


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_no_signed_block_rejected(version: str) -> None:
    room = _room(version)
    rejects(_invite(room, None), room.state, "member", "invite", "third_party", "signed")
    rejects(_invite(room, "signed"), room.state, "member", "invite", "third_party", "signed")


@pytest.mark.parametrize("version", CORE_VERSIONS)
@pytest.mark.parametrize("missing", ["mxid", "token"])
def test_signed_without_mxid_or_token_rejected(version: str, missing: str) -> None:
    room = _room(version)
    signed = {k: v for k, v in _signed().items() if k != missing}
    rejects(_invite(room, signed), room.state, "member", "invite", "third_party", "mxid_token")


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_mxid_not_target_rejected(version: str) -> None:
    room = _room(version)
    event = _invite(room, _signed(mxid="@mallory:m.example"))
    rejects(event, room.state, "member", "invite", "third_party", "mxid")


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_no_matching_third_party_invite_event_rejected(version: str) -> None:
    room = _room(version)
    event = _invite(room, _signed(token="another-token"))
    rejects(event, room.state, "member", "invite", "third_party", "invite_event")


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_sender_not_the_inviter_rejected(version: str) -> None:
    room = _room(version)
    event = _invite(room, _signed(), sender=CAROL)  # CAROL is joined, but ALICE issued the 3pid invite
    rejects(event, room.state, "member", "invite", "third_party", "invite_sender")


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_signature_by_unknown_key_rejected(version: str) -> None:
    room = _room(version)
    rejects(_invite(room, _signed(key=OTHER_KEY)), room.state, "member", "invite", "third_party", "otherwise")


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_tampered_signed_block_rejected(version: str) -> None:
    room = _room(version)
    signed = copy.deepcopy(_signed())
    signed["sender"] = CAROL  # not what the identity server signed
    rejects(_invite(room, signed), room.state, "member", "invite", "third_party", "otherwise")
    unsigned = {k: v for k, v in _signed().items() if k != "signatures"}
    rejects(_invite(room, unsigned), room.state, "member", "invite", "third_party", "otherwise")


# -- the m.room.third_party_invite event itself (rule 7; 6 in v6-v11) -----------------------------------


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_third_party_invite_event_needs_invite_level(version: str) -> None:
    room = Room(version)
    room = new_room(version, power_levels=room.default_power_levels(invite=10), members=(BOB,))
    content = {"display_name": "x", "public_key": IS_KEY.public_key_base64}
    accepts(room.make(ALICE, "m.room.third_party_invite", content, "t1"), room.state)
    rejects(
        room.make(BOB, "m.room.third_party_invite", content, "t1"), room.state, "third_party_invite", "only"
    )


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_third_party_invite_event_by_non_member_rejected(version: str) -> None:
    room = new_room(version)
    content = {"display_name": "x", "public_key": IS_KEY.public_key_base64}
    rejects(room.make(BOB, "m.room.third_party_invite", content, "t1"), room.state, "sender_joined")
