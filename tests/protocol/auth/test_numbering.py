"""The rule numbers we report are the spec's: checked against the spec pages of every room version.

The spec's nested Markdown list of rules is parsed (numbered as rendered: sequentially) and, for each rule
name we use, the text at the number ``rule_number`` gives must say what the rule is about.
"""

from __future__ import annotations

import re

import pytest

from ranvier.protocol.auth import rule_number
from ranvier.protocol.room_versions import KNOWN_ROOM_VERSIONS, get_room_version
from tests.spec_path import SPEC

SPEC_ROOMS = SPEC / "content" / "rooms"

# Where each version's rules live (INDEX.md "Authorization rules per room version").
_SOURCES = {
    "1": "fragments/v1-auth-rules.md",
    "2": "fragments/v1-auth-rules.md",
    "3": "fragments/v3-auth-rules.md",
    "4": "fragments/v3-auth-rules.md",
    "5": "fragments/v3-auth-rules.md",
    "6": "v6.md",
    "7": "v7.md",
    "8": "fragments/v8-auth-rules.md",
    "9": "fragments/v8-auth-rules.md",
    "10": "v10.md",
    "11": "v11.md",
    "12": "v12.md",
}

_ITEM = re.compile(r"^( *)(\d+)\.\s+(.*)$")


def _spec_rules(version: str) -> dict[str, str]:
    """Number -> text of every rule of ``version``, numbered as the rendered page shows them."""
    text = (SPEC_ROOMS / _SOURCES[version]).read_text()
    if not _SOURCES[version].startswith("fragments/"):
        text = text[text.index("### Authorisation rules") :]
    start = re.search(r"The (complete list of )?rules(, as of room version 3,)? (are|is) as follows:", text)
    assert start is not None
    lines = text[start.end() :].splitlines()
    rules: dict[str, str] = {}
    stack: list[tuple[int, int]] = []  # (indent, sequential number) per open level
    current: str | None = None
    for line in lines:
        if line.startswith("{{% boxes/note") or line.startswith("#"):
            break
        m = _ITEM.match(line)
        if m:
            indent = len(m.group(1))
            while stack and stack[-1][0] > indent:
                stack.pop()
            if stack and stack[-1][0] == indent:
                stack[-1] = (indent, stack[-1][1] + 1)
            else:
                stack.append((indent, 1))
            current = ".".join(str(n) for _, n in stack)
            rules[current] = m.group(3)
        elif current is not None and line.strip():
            rules[current] += " " + line.strip()
    return {k: re.sub(r"\s+", " ", v) for k, v in rules.items()}


# (rule path, a phrase the spec text of that rule contains)
_EXPECTED: list[tuple[tuple[str, ...], str]] = [
    (("create",), "If type is `m.room.create`"),
    (("create", "prev_events"), "any `prev_events`"),
    (("create", "room_id"), "`room_id`"),
    (("create", "room_version"), "`content.room_version` is present"),
    (("create", "creator"), "no `creator` property"),
    (("create", "additional_creators"), "`additional_creators` is present"),
    (("create", "allow"), "Otherwise, allow"),
    (("room_id",), "is not an event ID for an accepted"),
    (("auth_events",), "Considering the event's `auth_events`"),
    (("auth_events", "duplicates"), "duplicate entries"),
    (("auth_events", "selection"), "auth events selection"),
    (("auth_events", "rejected"), "themselves rejected"),
    (("auth_events", "no_create"), "no `m.room.create` event among"),
    (("auth_events", "room_id"), "has a `room_id` which does not match"),
    (("federate",), "`m.federate` set to `false`"),
    (("aliases",), "If type is `m.room.aliases`"),
    (("aliases", "state_key"), "no `state_key`"),
    (("aliases", "domain"), "domain doesn't match `state_key`"),
    (("aliases", "allow"), "Otherwise, allow"),
    (("member",), "If type is `m.room.member`"),
    (("member", "fields"), "no `membership` property"),
    (("member", "authorised_via_signed"), "`join_authorised_via_users_server`"),
    (("member", "authorised_via_signed", "only"), "validly signed by the homeserver"),
    (("member", "join"), "If `membership` is `join`"),
    (("member", "join", "creator_first_join"), "only previous event is an `m.room.create`"),
    (("member", "join", "sender_is_target"), "`sender` does not match `state_key`"),
    (("member", "join", "banned"), "`sender` is banned"),
    (("member", "join", "invite_rule"), "`join_rule` is `invite`"),
    (("member", "join", "restricted"), "`join_rule` is `restricted`"),
    (("member", "join", "restricted", "already_member"), "membership state is `join` or `invite`, allow"),
    (("member", "join", "restricted", "authoriser"), "sufficient permission to invite"),
    (("member", "join", "restricted", "allow"), "Otherwise, allow"),
    (("member", "join", "public"), "`join_rule` is `public`, allow"),
    (("member", "join", "otherwise"), "Otherwise, reject"),
    (("member", "invite"), "If `membership` is `invite`"),
    (("member", "invite", "third_party"), "`third_party_invite` property"),
    (("member", "invite", "third_party", "target_banned"), "*target user* is banned"),
    (("member", "invite", "third_party", "signed"), "does not have a `signed` property"),
    (("member", "invite", "third_party", "mxid_token"), "`mxid` and `token` properties"),
    (("member", "invite", "third_party", "mxid"), "`mxid` does not match `state_key`"),
    (("member", "invite", "third_party", "invite_event"), "no `m.room.third_party_invite` event"),
    (("member", "invite", "third_party", "invite_sender"), "`sender` of the `m.room.third_party_invite`"),
    (("member", "invite", "third_party", "signature"), "any signature in `signed` matches"),
    (("member", "invite", "third_party", "otherwise"), "Otherwise, reject"),
    (("member", "invite", "sender_joined"), "current membership state is not `join`"),
    (("member", "invite", "target_state"), "current membership state is `join` or `ban`"),
    (("member", "invite", "power"), "the *invite level*, allow"),
    (("member", "invite", "otherwise"), "Otherwise, reject"),
    (("member", "leave"), "If `membership` is `leave`"),
    (("member", "leave", "self"), "`sender` matches `state_key`"),
    (("member", "leave", "sender_joined"), "current membership state is not `join`"),
    (("member", "leave", "unban"), "less than the *ban level*"),
    (("member", "leave", "kick"), "the *kick level*"),
    (("member", "leave", "otherwise"), "Otherwise, reject"),
    (("member", "ban"), "If `membership` is `ban`"),
    (("member", "ban", "sender_joined"), "current membership state is not `join`"),
    (("member", "ban", "power"), "the *ban level*"),
    (("member", "ban", "otherwise"), "Otherwise, reject"),
    (("member", "knock"), "If `membership` is `knock`"),
    (("member", "knock", "join_rule"), "anything other than `knock`"),
    (("member", "knock", "sender_is_target"), "`sender` does not match `state_key`"),
    (("member", "knock", "membership"), "is not `ban`, `invite`, or `join`, allow"),
    (("member", "knock", "otherwise"), "Otherwise, reject"),
    (("member", "unknown"), "the membership is unknown"),
    (("sender_joined",), "`sender`'s current membership state is not `join`, reject"),
    (("third_party_invite",), "If type is `m.room.third_party_invite`"),
    (("third_party_invite", "only"), "the *invite level*"),
    (("required_power",), "*required power level*"),
    (("state_key",), "starts with an `@`"),
    (("power_levels",), "If type is `m.room.power_levels`"),
    (("power_levels", "level_ints"), "present and not an integer"),
    (("power_levels", "maps_ints"), "not an object with values that are integers"),
    (("power_levels", "users"), "`users` property in `content` is not an object"),
    (("power_levels", "creators"), "contains the `sender` of the `m.room.create` event"),
    (("power_levels", "no_previous"), "no previous `m.room.power_levels`"),
    (("power_levels", "levels"), "check if they were added, changed or removed"),
    (("power_levels", "levels", "old"), "If the current value is"),
    (("power_levels", "levels", "new"), "If the new value is"),
    (("power_levels", "events_old"), "being changed in, or removed from, the `events`"),
    (("power_levels", "events_old", "only"), "current value is greater than the `sender`'s"),
    (("power_levels", "events_new", "only"), "new value is greater than the `sender`'s"),
    (("power_levels", "users_old", "only"), "greater than or equal to the `sender`'s"),
    (("power_levels", "users_new", "only"), "new value is greater than the `sender`'s"),
    (("power_levels", "events_new"), "being added to, or changed in"),
    (("power_levels", "users_old"), "removed from, the `users` property"),
    (("power_levels", "users_new"), "added to, or changed in, the `users` property"),
    (("power_levels", "allow"), "Otherwise, allow"),
    (("redaction",), "If type is `m.room.redaction`"),
    (("redaction", "redact_level"), "the *redact level*, allow"),
    (("redaction", "same_domain"), "domain of the `event_id`"),
    (("redaction", "otherwise"), "Otherwise, reject"),
    (("allow",), "Otherwise, allow"),
]


@pytest.mark.skipif(not SPEC_ROOMS.is_dir(), reason="the spec copy is not on this machine")
@pytest.mark.parametrize("version", list(KNOWN_ROOM_VERSIONS))
def test_rule_numbers_match_the_spec_text(version: str) -> None:
    rv = get_room_version(version)
    spec = _spec_rules(version)
    used = set()
    for path, phrase in _EXPECTED:
        try:
            number = rule_number(rv, *path)
        except KeyError:
            continue  # the rule does not exist in this version
        used.add(number)
        assert number in spec, f"v{version}: {path} -> {number}, not a rule of the spec"
        assert phrase in spec[number], f"v{version}: {path} -> {number}: {spec[number]!r}"
    # every spec rule is one we name (apart from list items that are not rules: the public key forms)
    unnamed = {n for n in spec if n not in used and not spec[n].startswith("A ")}
    assert not unnamed, f"v{version}: spec rules without a name here: {sorted(unnamed)}"


@pytest.mark.parametrize(
    ("version", "path", "number"),
    [
        ("1", ("member", "join", "banned"), "5.2.3"),
        ("6", ("member", "join", "banned"), "4.2.3"),
        ("10", ("member", "join", "banned"), "4.3.3"),
        ("12", ("member", "join", "banned"), "5.3.3"),
        ("1", ("redaction", "otherwise"), "11.3"),
        ("3", ("allow",), "11"),
        ("10", ("power_levels", "users"), "9.3"),
        ("12", ("power_levels", "creators"), "10.4"),
        ("12", ("power_levels", "users_new"), "10.10"),
        ("12", ("auth_events", "room_id"), "3.4"),
        ("11", ("auth_events", "room_id"), "2.5"),
        ("10", ("member", "join", "restricted", "authoriser"), "4.3.5.2"),
    ],
)
def test_known_rule_numbers(version: str, path: tuple[str, ...], number: str) -> None:
    assert rule_number(get_room_version(version), *path) == number


def test_rules_missing_from_a_version_raise() -> None:
    with pytest.raises(KeyError):
        rule_number(get_room_version("6"), "aliases")
    with pytest.raises(KeyError):
        rule_number(get_room_version("11"), "room_id")
