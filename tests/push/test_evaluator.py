"""Push rule evaluation against the spec's examples and the server-default rules (CS "Push Rules")."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ranvier.push.evaluator import EventFacts, condition_matches, evaluate, glob_matches, split_path
from ranvier.push.rules import default_ruleset, merged_ruleset, put_rule

ME = "@me:example.org"
OTHER = "@other:example.org"
ROOM = "!room:example.org"


def facts(
    event: dict[str, Any], members: int = 3, sender_level: float = 0, room_level: int = 50
) -> EventFacts:
    return EventFacts(
        {"room_id": ROOM, "sender": OTHER, **event}, members, sender_level, {"room": room_level}
    )


def message(body: str = "hello", **content: Any) -> dict[str, Any]:
    return {"type": "m.room.message", "content": {"msgtype": "m.text", "body": body, **content}}


def outcome(event: dict[str, Any], members: int = 3, rules: Any = None, **kw: Any) -> tuple[str, bool, bool]:
    result = evaluate(rules or default_ruleset(ME), facts(event, members, **kw), ME, "Me Myself")
    assert result is not None
    return result.rule_id, result.notify, result.highlight


# -- the spec's examples -------------------------------------------------------------------------------


def test_event_match_topic_example() -> None:
    cond = {"kind": "event_match", "key": "content.topic", "pattern": "lunc?*"}
    for topic, hit in [
        ("Lunch plans", True),
        ("LUNCH", True),
        (" lunch", False),
        ("lunc", False),
        (None, False),
    ]:
        f = facts({"type": "m.room.topic", "state_key": "", "content": {"topic": topic}})
        assert condition_matches(cond, f, ME, None) is hit, topic


def test_event_match_body_word_boundary_example() -> None:
    cond = {"kind": "event_match", "key": "content.body", "pattern": "ex*ple"}
    for body, hit in [
        ("An example event.", True),
        ("exple", True),
        ("An exciting triple-whammy", True),
        ("examples", False),
        ("counterexample", False),
    ]:
        assert condition_matches(cond, facts(message(body)), ME, None) is hit, body


def test_event_match_star_needs_a_string() -> None:
    cond = {"kind": "event_match", "key": "content.n", "pattern": "*"}
    assert not condition_matches(cond, facts({"type": "x", "content": {"n": 1}}), ME, None)
    assert not condition_matches(cond, facts({"type": "x", "content": {}}), ME, None)
    assert condition_matches(cond, facts({"type": "x", "content": {"n": ""}}), ME, None)


def test_event_property_is_federate_example() -> None:
    cond = {"kind": "event_property_is", "key": "content.m\\.federate", "value": True}
    for value, hit in [(True, True), ("true", False), (1, False), (False, False)]:
        f = facts({"type": "m.room.create", "state_key": "", "content": {"m.federate": value}})
        assert condition_matches(cond, f, ME, None) is hit, value
    one = {"kind": "event_property_is", "key": "content.n", "value": 1}
    assert not condition_matches(one, facts({"type": "x", "content": {"n": True}}), ME, None)


def test_event_property_contains_alt_aliases_example() -> None:
    cond = {"kind": "event_property_contains", "key": "content.alt_aliases", "value": "#myroom:example.com"}
    content = {"alt_aliases": ["#somewhere:example.org", "#myroom:example.com"]}
    assert condition_matches(cond, facts({"type": "m.room.canonical_alias", "content": content}), ME, None)
    partial = {**cond, "value": ":example.com"}
    assert not condition_matches(partial, facts({"type": "x", "content": content}), ME, None)
    not_list = facts({"type": "x", "content": {"alt_aliases": "#myroom:example.com"}})
    assert not condition_matches(cond, not_list, ME, None)


@pytest.mark.parametrize(
    ("spec", "count", "hit"),
    [
        ("2", 2, True),
        ("2", 3, False),
        ("==2", 2, True),
        ("<10", 9, True),
        ("<10", 10, False),
        (">2", 3, True),
        (">=2", 2, True),
        ("<=2", 3, False),
        ("abc", 2, False),
        ("=2", 2, False),
    ],
)
def test_room_member_count(spec: str, count: int, hit: bool) -> None:
    cond = {"kind": "room_member_count", "is": spec}
    assert condition_matches(cond, facts(message(), members=count), ME, None) is hit


def test_unknown_condition_disables_the_rule() -> None:
    rules = put_rule(
        default_ruleset(ME), "override", "x", {"conditions": [{"kind": "nope"}], "actions": ["notify"]}
    )
    assert outcome(message(), rules=rules)[0] == ".m.rule.message"


def test_split_path_escapes() -> None:
    assert split_path("content.m\\.mentions.user_ids") == ("content", "m.mentions", "user_ids")
    assert split_path("a\\\\.b") == ("a\\", "b")
    assert split_path("a\\b") == ("a\\b",)


# -- the server-default rules --------------------------------------------------------------------------


def test_plain_message_in_a_group_notifies_without_highlight() -> None:
    assert outcome(message()) == (".m.rule.message", True, False)


def test_one_to_one_rooms() -> None:
    assert outcome(message(), members=2) == (".m.rule.room_one_to_one", True, False)
    encrypted = {"type": "m.room.encrypted", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
    assert outcome(encrypted, members=2) == (".m.rule.encrypted_room_one_to_one", True, False)
    assert outcome(encrypted, members=5) == (".m.rule.encrypted", True, False)


def test_user_mention_highlights() -> None:
    event = message("hi", **{"m.mentions": {"user_ids": [ME]}})
    assert outcome(event) == (".m.rule.is_user_mention", True, True)
    other = message("hi", **{"m.mentions": {"user_ids": [OTHER]}})
    assert outcome(other) == (".m.rule.message", True, False)


def test_room_mention_needs_the_notification_power_level() -> None:
    event = message("@room", **{"m.mentions": {"room": True}})
    assert outcome(event, sender_level=50) == (".m.rule.is_room_mention", True, True)
    assert outcome(event, sender_level=49) == (".m.rule.message", True, False)
    assert outcome(event, sender_level=10, room_level=0) == (".m.rule.is_room_mention", True, True)


def test_edits_notices_reactions_and_members_are_silent() -> None:
    edit = message("* fixed", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$e"}})
    assert outcome(edit) == (".m.rule.suppress_edits", False, False)
    assert outcome({"type": "m.room.message", "content": {"msgtype": "m.notice", "body": "bot"}})[1:] == (
        False,
        False,
    )
    assert outcome({"type": "m.reaction", "content": {}})[0] == ".m.rule.reaction"
    join = {"type": "m.room.member", "state_key": OTHER, "content": {"membership": "join"}}
    assert outcome(join) == (".m.rule.member_event", False, False)


def test_invite_for_me_and_tombstone() -> None:
    invite = {"type": "m.room.member", "state_key": ME, "content": {"membership": "invite"}}
    assert outcome(invite) == (".m.rule.invite_for_me", True, False)
    tomb = {"type": "m.room.tombstone", "state_key": "", "content": {"body": "moved"}}
    assert outcome(tomb) == (".m.rule.tombstone", True, True)


def test_master_rule_enabled_silences_everything() -> None:
    rules = merged_ruleset(ME, {"global": {"override": [{"rule_id": ".m.rule.master", "enabled": True}]}})
    assert outcome(message("x", **{"m.mentions": {"user_ids": [ME]}}), rules=rules) == (
        ".m.rule.master",
        False,
        False,
    )


def test_unmatched_event_has_no_outcome() -> None:
    assert evaluate(default_ruleset(ME), facts({"type": "m.room.name", "content": {}}), ME, None) is None


# -- user rules: content keywords, room and sender rules, display name -----------------------------------


def test_content_keyword_rule() -> None:
    rules = put_rule(
        default_ruleset(ME),
        "content",
        "lunch",
        {"pattern": "lunch", "actions": ["notify", {"set_tweak": "highlight"}]},
    )
    assert outcome(message("Lunch today?"), rules=rules) == ("lunch", True, True)
    assert outcome(message("lunchtime"), rules=rules) == (".m.rule.message", True, False)


def test_room_and_sender_rules_and_their_order() -> None:
    rules = put_rule(default_ruleset(ME), "room", ROOM, {"actions": []})
    assert outcome(message(), rules=rules) == (ROOM, False, False)
    rules = put_rule(rules, "sender", OTHER, {"actions": ["notify", {"set_tweak": "highlight"}]})
    # room rules come before sender rules
    assert outcome(message(), rules=rules)[0] == ROOM
    # a content rule comes before both
    rules = put_rule(rules, "content", "kw", {"pattern": "hello", "actions": ["notify"]})
    assert outcome(message("hello"), rules=rules)[0] == "kw"


def test_contains_display_name_condition() -> None:
    cond = {"kind": "contains_display_name"}
    assert condition_matches(cond, facts(message("ping me myself!")), ME, "Me Myself")
    assert not condition_matches(cond, facts(message("ping memyself")), ME, "Me Myself")
    assert not condition_matches(cond, facts(message("ping")), ME, None)


# -- properties ----------------------------------------------------------------------------------------

_word = st.text(alphabet="abcdefghij", min_size=1, max_size=8)


@given(_word, _word, _word)
def test_a_literal_word_matches_the_body_containing_it_as_a_word(before: str, word: str, after: str) -> None:
    assert glob_matches(word, f"{before} {word.upper()} {after}", word_boundary=True)
    assert not glob_matches(word, f"{before}{word}_", word_boundary=True)


@given(st.text(max_size=20))
def test_star_matches_every_string_and_a_literal_matches_itself(value: str) -> None:
    assert glob_matches("*", value)
    assert glob_matches(value.replace("*", "").replace("?", ""), value.replace("*", "").replace("?", ""))
