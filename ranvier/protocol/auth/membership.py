"""The m.room.member rule: rule 5 in v1-v5 and v12, rule 4 in v6-v11.

Sub-rules by membership: join, invite (with the third-party branch in ``third_party``), leave, ban, knock
(since v7), and the restricted joins of v8 (``restricted``) and v10 (``knock_restricted``), authorised by a
member named in ``join_authorised_via_users_server``.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import AuthRejected
from ..events import Pdu, StateKey
from ..identifiers import is_valid_user_id, server_of
from ..room_versions import RoomVersion
from .numbering import rule_number
from .power_levels import CREATE_KEY, get_named_level, get_user_power_level
from .third_party import check_third_party_invite


def membership_of(user_id: str, auth_events: Mapping[StateKey, Pdu]) -> str:
    """A user's current membership state; no member event means "leave" (never joined)."""
    member = auth_events.get(("m.room.member", user_id))
    if member is None:
        return "leave"
    return member.membership or "leave"


def join_rule_of(auth_events: Mapping[StateKey, Pdu]) -> str:
    """The current join rule.

    Without an m.room.join_rules event (or with a malformed one) the room is treated as "invite": the
    spec names no default, and this is what deployed servers do, so rooms agree across implementations.
    """
    event = auth_events.get(("m.room.join_rules", ""))
    rule = event.content.get("join_rule") if event is not None else None
    return rule if isinstance(rule, str) else "invite"


def _reject(rv: RoomVersion, *path: str, reason: str) -> AuthRejected:
    return AuthRejected(rule_number(rv, "member", *path), reason)


def check_member_event(event: Pdu, auth_events: Mapping[StateKey, Pdu]) -> None:
    """Allow (return) or reject (raise) an m.room.member event."""
    rv = event.room_version
    target = event.state_key
    membership = event.content.get("membership")
    if target is None or "membership" not in event.content:
        raise _reject(rv, "fields", reason="member event without state_key or content.membership")

    authoriser = event.content.get("join_authorised_via_users_server")
    if rv.restricted_join_rule and "join_authorised_via_users_server" in event.content:
        # since v8, x.2: the authorising user's server must have signed the event. The signature itself
        # is verified in the signature step (Pdu.check_signatures); a pure check can only insist that the
        # signature is there, as other servers do.
        if not isinstance(authoriser, str) or not is_valid_user_id(authoriser):
            raise _reject(
                rv, "authorised_via_signed", "only", reason="join_authorised_via_users_server is invalid"
            )
        if server_of(authoriser) not in event.signatures:
            raise _reject(
                rv, "authorised_via_signed", "only", reason=f"event is not signed by {server_of(authoriser)}"
            )

    sender_membership = membership_of(event.sender, auth_events)
    target_membership = membership_of(target, auth_events)

    if membership == "join":
        _check_join(event, auth_events, target, sender_membership)
        return
    if membership == "invite":
        _check_invite(event, auth_events, target, sender_membership, target_membership)
        return
    if membership == "leave":
        _check_leave(event, auth_events, target, sender_membership, target_membership)
        return
    if membership == "ban":
        if sender_membership != "join":
            raise _reject(rv, "ban", "sender_joined", reason=f"{event.sender} is not joined")
        sender_level = get_user_power_level(event.sender, auth_events, rv)
        target_level = get_user_power_level(target, auth_events, rv)
        if sender_level >= get_named_level(auth_events, "ban") and target_level < sender_level:
            return
        raise _reject(rv, "ban", "otherwise", reason=f"{event.sender} may not ban {target}")
    if membership == "knock" and rv.knock_join_rule:
        _check_knock(event, auth_events, target, sender_membership)
        return
    raise _reject(rv, "unknown", reason=f"unknown membership {membership!r}")


def _check_join(event: Pdu, auth_events: Mapping[StateKey, Pdu], target: str, sender_membership: str) -> None:
    rv = event.room_version

    # x.1: the creator's own first join, right after the create event. "The creator" is content.creator
    # in v1-v10 and the create event's sender since v11 (not the v12 additional creators).
    create = auth_events.get(CREATE_KEY)
    if create is not None and event.prev_event_ids == (create.event_id,):
        creator = create.sender if rv.implicit_room_creator else create.content.get("creator")
        if target == creator:
            return

    if event.sender != target:
        raise _reject(rv, "join", "sender_is_target", reason="cannot join on behalf of another user")
    if sender_membership == "ban":
        raise _reject(rv, "join", "banned", reason=f"{event.sender} is banned")

    join_rule = join_rule_of(auth_events)
    invite_rules = {"invite", "knock"} if rv.knock_join_rule else {"invite"}  # knock since v7
    if join_rule in invite_rules:
        if sender_membership in ("invite", "join"):
            return
    elif _is_restricted(rv, join_rule):
        # since v8 ("restricted") and v10 ("knock_restricted")
        if sender_membership in ("invite", "join"):
            return
        authoriser = event.content.get("join_authorised_via_users_server")
        if not isinstance(authoriser, str) or membership_of(authoriser, auth_events) != "join":
            raise _reject(
                rv, "join", "restricted", "authoriser", reason="join not authorised by a joined member"
            )
        authoriser_level = get_user_power_level(authoriser, auth_events, rv)
        if authoriser_level < get_named_level(auth_events, "invite"):
            raise _reject(
                rv,
                "join",
                "restricted",
                "authoriser",
                reason=f"{authoriser} may not invite, so cannot authorise",
            )
        return
    elif join_rule == "public":
        return
    raise _reject(rv, "join", "otherwise", reason=f"join rule {join_rule!r} does not let {event.sender} join")


def _is_restricted(rv: RoomVersion, join_rule: str) -> bool:
    return (join_rule == "restricted" and rv.restricted_join_rule) or (
        join_rule == "knock_restricted" and rv.knock_restricted_join_rule
    )


def _check_invite(
    event: Pdu,
    auth_events: Mapping[StateKey, Pdu],
    target: str,
    sender_membership: str,
    target_membership: str,
) -> None:
    rv = event.room_version
    if "third_party_invite" in event.content:
        check_third_party_invite(event, auth_events, target_banned=target_membership == "ban")
        return
    if sender_membership != "join":
        raise _reject(rv, "invite", "sender_joined", reason=f"{event.sender} is not joined")
    if target_membership in ("join", "ban"):
        raise _reject(rv, "invite", "target_state", reason=f"{target} is {target_membership}")
    if get_user_power_level(event.sender, auth_events, rv) >= get_named_level(auth_events, "invite"):
        return
    raise _reject(rv, "invite", "otherwise", reason=f"{event.sender} is below the invite level")


def _check_leave(
    event: Pdu,
    auth_events: Mapping[StateKey, Pdu],
    target: str,
    sender_membership: str,
    target_membership: str,
) -> None:
    rv = event.room_version
    if event.sender == target:
        # x.1: leaving (or rejecting an invite, or since v7 rescinding a knock)
        may_leave = {"invite", "join", "knock"} if rv.knock_join_rule else {"invite", "join"}
        if sender_membership in may_leave:
            return
        raise _reject(rv, "leave", "self", reason=f"cannot leave from membership {sender_membership!r}")
    if sender_membership != "join":
        raise _reject(rv, "leave", "sender_joined", reason=f"{event.sender} is not joined")
    sender_level = get_user_power_level(event.sender, auth_events, rv)
    if target_membership == "ban" and sender_level < get_named_level(auth_events, "ban"):
        raise _reject(rv, "leave", "unban", reason=f"{event.sender} may not unban")
    target_level = get_user_power_level(target, auth_events, rv)
    if sender_level >= get_named_level(auth_events, "kick") and target_level < sender_level:
        return
    raise _reject(rv, "leave", "otherwise", reason=f"{event.sender} may not kick {target}")


def _check_knock(
    event: Pdu, auth_events: Mapping[StateKey, Pdu], target: str, sender_membership: str
) -> None:
    rv = event.room_version
    join_rule = join_rule_of(auth_events)
    knock_rules = {"knock", "knock_restricted"} if rv.knock_restricted_join_rule else {"knock"}
    if join_rule not in knock_rules:
        raise _reject(rv, "knock", "join_rule", reason=f"join rule {join_rule!r} does not allow knocking")
    if event.sender != target:
        raise _reject(rv, "knock", "sender_is_target", reason="cannot knock on behalf of another user")
    if sender_membership not in ("ban", "invite", "join"):
        return
    raise _reject(rv, "knock", "otherwise", reason=f"cannot knock from membership {sender_membership!r}")
