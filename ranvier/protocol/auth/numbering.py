"""The spec's numbering of the authorization rules, per room version.

The rules are renumbered as versions add and remove rules (v6 drops the m.room.aliases rule 4, v8 inserts
the ``join_authorised_via_users_server`` signature rule, v12 inserts "room id is the create event" as rule 2,
and so on). Code names a rule by a path of stable names, e.g. ``("member", "join", "banned")``, and this
module turns it into the number the spec page of that version shows ("5.2.3" in v1, "4.3.3" in v10,
"5.3.3" in v12), so an ``AuthRejected.rule`` can be looked up in the spec directly.

Numbers are those of the rendered pages: Markdown numbers list items sequentially whatever the source says
(v12's source repeats "10." and skips "4." in rule 3; the rendered list is 3.4 and 10.10, 10.11).
"""

from __future__ import annotations

from functools import lru_cache

from ..room_versions import RoomVersion


def _children(rv: RoomVersion, parent: tuple[str, ...]) -> tuple[str, ...]:
    """The names of the rules directly under ``parent``, in spec order, for room version ``rv``."""
    match parent:
        case ():
            names = ["create"]
            if rv.room_id_from_create_event:
                names.append("room_id")  # since v12: rule 2, the room id is the create event's id
            names += ["auth_events", "federate"]
            if rv.special_case_aliases_auth:
                names.append("aliases")  # v1-v5 only: rule 4
            names += [
                "member",
                "sender_joined",
                "third_party_invite",
                "required_power",
                "state_key",
                "power_levels",
            ]
            if not rv.deferred_redaction_check:
                names.append("redaction")  # v1-v2 only: rule 11; v3+ checks redactions when applying them
            names.append("allow")
        case ("create",):
            names = ["prev_events", "room_id", "room_version"]
            if not rv.implicit_room_creator:
                names.append("creator")  # v1-v10: content.creator is required
            if rv.privileged_creators:
                names.append("additional_creators")  # since v12
            names.append("allow")
        case ("auth_events",):
            names = ["duplicates", "selection", "rejected"]
            if not rv.room_id_from_create_event:
                names.append("no_create")  # v1-v11; v12 implies the create event by the room id
            names.append("room_id")
        case ("aliases",):
            names = ["state_key", "domain", "allow"]
        case ("member",):
            names = ["fields"]
            if rv.restricted_join_rule:
                names.append("authorised_via_signed")  # since v8
            names += ["join", "invite", "leave", "ban"]
            if rv.knock_join_rule:
                names.append("knock")  # since v7
            names.append("unknown")
        case ("member", "join"):
            names = ["creator_first_join", "sender_is_target", "banned", "invite_rule"]
            if rv.restricted_join_rule:
                names.append("restricted")  # since v8 (and knock_restricted since v10)
            names += ["public", "otherwise"]
        case ("member", "join", "restricted"):
            names = ["already_member", "authoriser", "allow"]
        case ("member", "invite"):
            names = ["third_party", "sender_joined", "target_state", "power", "otherwise"]
        case ("member", "invite", "third_party"):
            names = [
                "target_banned",
                "signed",
                "mxid_token",
                "mxid",
                "invite_event",
                "invite_sender",
                "signature",
                "otherwise",
            ]
        case ("member", "leave"):
            names = ["self", "sender_joined", "unban", "kick", "otherwise"]
        case ("member", "ban"):
            names = ["sender_joined", "power", "otherwise"]
        case ("member", "knock"):
            names = ["join_rule", "sender_is_target", "membership", "otherwise"]
        case ("power_levels", "levels"):
            names = ["old", "new"]
        case (
            ("third_party_invite",)
            | ("member", "authorised_via_signed")
            | ("power_levels", "events_old" | "events_new" | "users_old" | "users_new")
        ):
            names = ["only"]
        case ("power_levels",):
            names = []
            if rv.integer_power_levels:
                names += ["level_ints", "maps_ints"]  # since v10
            names.append("users")
            if rv.privileged_creators:
                names.append("creators")  # since v12
            names += ["no_previous", "levels", "events_old", "events_new", "users_old", "users_new", "allow"]
        case ("redaction",):
            names = ["redact_level", "same_domain", "otherwise"]
        case _:
            names = []
    return tuple(names)


@lru_cache(maxsize=1024)
def rule_number(rv: RoomVersion, *path: str) -> str:
    """The spec number of the rule at ``path`` in room version ``rv`` (e.g. ``"4.3.5.2"``).

    Raises ``KeyError`` if the rule does not exist in that version: asking for it is a bug.
    """
    numbers: list[str] = []
    for depth, name in enumerate(path):
        siblings = _children(rv, path[:depth])
        if name not in siblings:
            raise KeyError(f"rule {'/'.join(path)} does not exist in room version {rv.identifier}")
        numbers.append(str(siblings.index(name) + 1))
    return ".".join(numbers)
