"""The redaction algorithm, per room version: exactly the spec's keys survive, and it is idempotent.

Sources: rooms/fragments/v1-redactions.md (v1-v5), v6-redactions.md (v6-v7), rooms/v8.md "Redactions" (v8),
v9-redactions.md (v9-v10), v11-redactions.md (v11-v12).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ranvier.protocol.redaction import redact_event
from ranvier.protocol.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version

ALL_VERSIONS = list(KNOWN_ROOM_VERSIONS.values())

TOP_V1 = {
    "event_id",
    "type",
    "room_id",
    "sender",
    "state_key",
    "content",
    "hashes",
    "signatures",
    "depth",
    "prev_events",
    "prev_state",
    "auth_events",
    "origin",
    "origin_server_ts",
    "membership",
}
TOP_V11 = TOP_V1 - {"origin", "membership", "prev_state"}

# Every content key any version keeps for some event type, plus some that no version keeps.
CONTENT_KEYS = {
    "membership",
    "join_authorised_via_users_server",
    "third_party_invite",
    "creator",
    "room_version",
    "m.federate",
    "additional_creators",
    "predecessor",
    "join_rule",
    "allow",
    "ban",
    "events",
    "events_default",
    "invite",
    "kick",
    "redact",
    "state_default",
    "users",
    "users_default",
    "notifications",
    "aliases",
    "history_visibility",
    "redacts",
    "body",
    "displayname",
    "avatar_url",
    "reason",
}

_PL = {"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"}
_V1_CONTENT = {
    "m.room.member": {"membership"},
    "m.room.create": {"creator"},
    "m.room.join_rules": {"join_rule"},
    "m.room.power_levels": _PL,
    "m.room.aliases": {"aliases"},
    "m.room.history_visibility": {"history_visibility"},
}
_V6_CONTENT = {k: v for k, v in _V1_CONTENT.items() if k != "m.room.aliases"}
_V8_CONTENT = {**_V6_CONTENT, "m.room.join_rules": {"join_rule", "allow"}}
_V9_CONTENT = {**_V8_CONTENT, "m.room.member": {"membership", "join_authorised_via_users_server"}}
_V11_CONTENT = {
    # the member event also keeps third_party_invite, reduced to its "signed" key (checked separately)
    "m.room.member": {"membership", "join_authorised_via_users_server", "third_party_invite"},
    "m.room.create": CONTENT_KEYS,  # all keys
    "m.room.join_rules": {"join_rule", "allow"},
    "m.room.power_levels": _PL | {"invite"},
    "m.room.history_visibility": {"history_visibility"},
    "m.room.redaction": {"redacts"},
}
EXPECTED: dict[str, tuple[set[str], dict[str, set[str]]]] = {
    **{v: (TOP_V1, _V1_CONTENT) for v in ("1", "2", "3", "4", "5")},
    "6": (TOP_V1, _V6_CONTENT),
    "7": (TOP_V1, _V6_CONTENT),
    "8": (TOP_V1, _V8_CONTENT),
    "9": (TOP_V1, _V9_CONTENT),
    "10": (TOP_V1, _V9_CONTENT),
    "11": (TOP_V11, _V11_CONTENT),
    "12": (TOP_V11, _V11_CONTENT),
}
EVENT_TYPES = [
    "m.room.member",
    "m.room.create",
    "m.room.join_rules",
    "m.room.power_levels",
    "m.room.aliases",
    "m.room.history_visibility",
    "m.room.redaction",
    "m.room.message",
    "m.room.name",
    "org.example.custom",
]
EXTRA_TOP_KEYS = {"unsigned", "redacts", "age_ts", "outlier", "destinations", "org.example.field"}


def _kitchen_sink(event_type: str) -> dict[str, Any]:
    event: dict[str, Any] = {key: f"top-{key}" for key in TOP_V1 | EXTRA_TOP_KEYS}
    event["type"] = event_type
    event["content"] = {key: f"content-{key}" for key in CONTENT_KEYS}
    event["content"]["third_party_invite"] = {"signed": {"token": "t"}, "display_name": "Bob"}
    return event


def test_every_version_has_expectations() -> None:
    assert set(EXPECTED) == set(KNOWN_ROOM_VERSIONS)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
@pytest.mark.parametrize("identifier", list(KNOWN_ROOM_VERSIONS))
def test_exact_keys_kept(identifier: str, event_type: str) -> None:
    top, content_rules = EXPECTED[identifier]
    redacted = redact_event(_kitchen_sink(event_type), get_room_version(identifier))
    assert set(redacted) == top
    assert set(redacted["content"]) == content_rules.get(event_type, set())
    # kept values are kept unchanged (but for v11's third_party_invite, reduced to "signed")
    for key, value in redacted["content"].items():
        if key != "third_party_invite":
            assert value == f"content-{key}"


@pytest.mark.parametrize("identifier", ["11", "12"])
def test_v11_member_keeps_only_signed_of_third_party_invite(identifier: str) -> None:
    redacted = redact_event(_kitchen_sink("m.room.member"), get_room_version(identifier))
    assert redacted["content"]["third_party_invite"] == {"signed": {"token": "t"}}
    # with no "signed" inside, nothing of third_party_invite survives
    event = _kitchen_sink("m.room.member")
    event["content"]["third_party_invite"] = {"display_name": "Bob"}
    assert "third_party_invite" not in redact_event(event, get_room_version(identifier))["content"]


def test_redaction_leaves_its_input_alone() -> None:
    event = _kitchen_sink("m.room.member")
    before = repr(event)
    redact_event(event, get_room_version("11"))
    assert repr(event) == before


@pytest.mark.parametrize("content", [None, "string", [1, 2], 5])
def test_non_object_content_becomes_empty(content: Any) -> None:
    redacted = redact_event({"type": "m.room.member", "content": content}, get_room_version("10"))
    assert redacted["content"] == {}


def test_missing_content_becomes_empty() -> None:
    assert redact_event({"type": "m.room.message"}, get_room_version("1")) == {
        "type": "m.room.message",
        "content": {},
    }


_json_leaf = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=8)
_json = st.recursive(
    _json_leaf,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=10,
)
_keys = st.sampled_from(sorted(TOP_V1 | EXTRA_TOP_KEYS | CONTENT_KEYS)) | st.text(max_size=6)
events = st.fixed_dictionaries(
    {
        "type": st.sampled_from(EVENT_TYPES),
        "content": st.dictionaries(
            st.sampled_from(sorted(CONTENT_KEYS)) | st.text(max_size=6), _json, max_size=8
        ),
    },
    optional={k: _json for k in ("sender", "unsigned", "origin", "membership", "prev_state", "state_key")},
).flatmap(lambda base: st.dictionaries(_keys, _json, max_size=6).map(lambda extra: {**extra, **base}))


@given(events, st.sampled_from(ALL_VERSIONS))
def test_redaction_is_idempotent(event: dict[str, Any], version: RoomVersion) -> None:
    once = redact_event(event, version)
    assert redact_event(once, version) == once
    top, content_rules = EXPECTED[version.identifier]
    assert set(once) <= top
    if version.identifier in ("11", "12") and event["type"] == "m.room.create":
        assert once["content"] == event["content"]  # since v11 the create event keeps all its content
    else:
        assert set(once["content"]) <= content_rules.get(event["type"], set())
