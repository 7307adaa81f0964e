"""Conditions that do not depend on the user are compiled once (evaluator.make_condition): the compiled
test answers exactly what ``condition_matches`` answers, and evaluating the default rules for an event
no longer goes through ``condition_matches`` (or its regexes) for the literal ``type`` matches."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ranvier.push.evaluator as evaluator
from ranvier.push.actions import GENERIC_USER, PushActionsHook
from ranvier.push.evaluator import EventFacts, condition_matches, evaluate, make_condition

ROOM = "!room:example.org"
# Case folding is where a literal compare and a case-insensitive regex could part: the Kelvin sign and the
# long s fold to ASCII letters, the dotted capital I lower-cases to two characters.
TEXT = st.sampled_from(
    [
        "m.room.message",
        "M.Room.Message",
        "m.room.messagE ",
        "k",
        "K",
        "\u212a",
        "s",
        "\u017f",
        "i",
        "\u0130",
        "",
    ]
) | st.text(max_size=6)
KEYS = st.sampled_from(
    ["type", "state_key", "content.body", "content.msgtype", "content.n", "content.a\\.b", "x"]
)
SIMPLE = st.none() | st.booleans() | st.integers(-(2**54), 2**54) | TEXT
PATTERNS = TEXT | st.builds(lambda a, w, b: a + w + b, TEXT, st.sampled_from(["*", "?", "*?"]), TEXT)
VALUES: Any = SIMPLE | st.lists(SIMPLE, max_size=3) | st.dictionaries(TEXT, SIMPLE, max_size=2)


@st.composite
def conditions(draw: Any) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(
            [
                "event_match",
                "event_property_is",
                "event_property_contains",
                "room_member_count",
                "sender_notification_permission",
                "unknown",
            ]
        )
    )
    cond: dict[str, Any] = {"kind": kind}
    if draw(st.booleans()):
        cond["key"] = draw(KEYS | st.integers())
    if kind == "event_match" and draw(st.booleans()):
        cond["pattern"] = draw(PATTERNS | st.integers())
    if kind.startswith("event_property") and draw(st.booleans()):
        cond["value"] = draw(VALUES)
    if kind == "room_member_count":
        cond["is"] = draw(st.sampled_from(["2", "<3", ">=10", "==x", "", 2]) | TEXT)
    return cond


@st.composite
def events(draw: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"room_id": ROOM, "sender": "@a:example.org", "type": draw(TEXT)}
    if draw(st.booleans()):
        event["state_key"] = draw(TEXT)
    content = draw(st.dictionaries(st.sampled_from(["body", "msgtype", "n", "a.b", "a"]), VALUES, max_size=4))
    event["content"] = content
    return event


@settings(max_examples=600, deadline=None)
@given(conditions(), events(), st.integers(0, 20), st.sampled_from([0, 50, 100]))
def test_a_compiled_condition_answers_as_condition_matches(
    cond: dict[str, Any], event: dict[str, Any], members: int, level: int
) -> None:
    facts = EventFacts(event, members, level, {"room": 50, "x": 10})
    compiled = make_condition(cond)
    assert compiled.test is not None
    assert compiled.test(facts) is condition_matches(cond, facts, "@me:example.org", None), (cond, event)


def test_contains_display_name_stays_per_user() -> None:
    assert make_condition({"kind": "contains_display_name"}).test is None


@pytest.mark.parametrize("event_type", ["m.room.message", "m.room.encrypted", "m.reaction"])
def test_the_default_rules_evaluate_an_event_without_condition_matches(
    event_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cost that every remote event pays once per room for the local members with the default rules:
    none of the default rules' conditions goes through the general matcher (11 calls for an m.room.message
    on the old code, 7 of them a case-insensitive regex search of the type)."""
    calls: list[Any] = []
    general = evaluator.condition_matches

    def counting(*args: Any) -> bool:
        calls.append(args[0])
        return general(*args)

    monkeypatch.setattr(evaluator, "condition_matches", counting)
    ruleset = PushActionsHook("example.org", None)._generic_ruleset  # type: ignore[arg-type]
    content = {"msgtype": "m.text", "body": "hello"}
    event = {"room_id": ROOM, "sender": "@a:example.org", "type": event_type, "content": content}
    outcome = evaluate(ruleset, EventFacts(event, 3, 0, {"room": 50}), GENERIC_USER, None)
    assert outcome is not None
    assert calls == []
