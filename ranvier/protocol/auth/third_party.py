"""Invites by third-party identifier: the ``third_party_invite`` branch of the invite rule.

Rule 5.3.1 (v1-v7 numbering; 4.4.1 in v8-v11, 5.4.1 in v12). The ``signed`` block was signed by an identity
server; its signature must verify against one of the public keys the inviter published in the matching
``m.room.third_party_invite`` state event (``public_key`` and the ``public_keys`` list).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import AuthRejected, CanonicalJsonError, SignatureError
from ..events import Pdu, StateKey
from ..signing import ED25519, decode_verify_key, verify_json_signature
from .numbering import rule_number


def public_keys_of(invite_event: Pdu) -> list[str]:
    """The base64 public keys of an m.room.third_party_invite event, ignoring malformed entries."""
    keys: list[str] = []
    single = invite_event.content.get("public_key")
    if isinstance(single, str):
        keys.append(single)
    listed = invite_event.content.get("public_keys")
    if isinstance(listed, list):
        for entry in listed:
            if isinstance(entry, dict) and isinstance(entry.get("public_key"), str):
                keys.append(entry["public_key"])
    return keys


def signed_block_verifies(signed: Mapping[str, object], public_keys: list[str]) -> bool:
    """Whether any ed25519 signature in ``signed`` verifies with any of ``public_keys``."""
    signatures = signed.get("signatures")
    if not isinstance(signatures, dict):
        return False
    for public_key in public_keys:
        try:
            verify_key = decode_verify_key(public_key)
        except SignatureError:
            continue
        for server, by_key_id in signatures.items():
            if not isinstance(by_key_id, dict):
                continue
            for key_id in by_key_id:
                if not (isinstance(key_id, str) and key_id.startswith(ED25519 + ":")):
                    continue
                try:
                    verify_json_signature(signed, server, key_id, verify_key)
                    return True
                except (SignatureError, CanonicalJsonError):  # a block that is not canonical JSON: no match
                    continue
    return False


def check_third_party_invite(event: Pdu, auth_events: Mapping[StateKey, Pdu], target_banned: bool) -> None:
    """Allow (return) or reject (raise) an invite carrying ``content.third_party_invite``."""
    rv = event.room_version

    def reject(sub: str, reason: str) -> AuthRejected:
        return AuthRejected(rule_number(rv, "member", "invite", "third_party", sub), reason)

    if target_banned:
        raise reject("target_banned", f"{event.state_key} is banned")
    tpi = event.content["third_party_invite"]
    signed = tpi.get("signed") if isinstance(tpi, dict) else None
    if not isinstance(signed, dict):
        raise reject("signed", "third_party_invite has no 'signed' object")
    mxid, token = signed.get("mxid"), signed.get("token")
    if mxid is None or token is None:
        raise reject("mxid_token", "'signed' lacks 'mxid' or 'token'")
    if mxid != event.state_key:
        raise reject("mxid", f"signed mxid {mxid!r} is not the invited user {event.state_key}")
    invite_event = auth_events.get(("m.room.third_party_invite", token)) if isinstance(token, str) else None
    if invite_event is None:
        raise reject("invite_event", f"no m.room.third_party_invite with state_key {token!r}")
    if invite_event.sender != event.sender:
        raise reject("invite_sender", "the invite is not sent by the sender of the m.room.third_party_invite")
    if signed_block_verifies(signed, public_keys_of(invite_event)):
        return
    raise reject(
        "otherwise", "no signature in 'signed' matches a public key of the m.room.third_party_invite"
    )
