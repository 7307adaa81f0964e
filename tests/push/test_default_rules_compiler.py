"""The compiled server-default rules of a user with no rules of their own, made from one template
(DefaultRulesCompiler), are the rules compile_ruleset(merged_ruleset(user, None)) gives, condition by
condition, and evaluate alike (the first event into a room of 50,000 local members compiled each member's
defaults from scratch: about a millisecond each)."""

from __future__ import annotations

from ranvier.push.evaluator import (
    CompiledRuleset,
    DefaultRulesCompiler,
    EventFacts,
    compile_ruleset,
    evaluate,
)
from ranvier.push.rules import USER_PLACEHOLDER, merged_ruleset


def _shape(ruleset: CompiledRuleset) -> list[object]:
    return [
        (r.outcome, r.room_id, r.sender, [(c.spec, c.per_user) for c in r.conditions]) for r in ruleset.rules
    ] + [ruleset.uses_display_name]


def test_template_rules_equal_the_compiled_defaults() -> None:
    compiler = DefaultRulesCompiler(USER_PLACEHOLDER, merged_ruleset(USER_PLACEHOLDER, None))
    for user in ("@alice:example.org", "@bob.smith:host:8448", "@x:[::1]"):
        assert _shape(compiler.for_user(user)) == _shape(compile_ruleset(merged_ruleset(user, None)))


def test_template_rules_evaluate_alike() -> None:
    compiler = DefaultRulesCompiler(USER_PLACEHOLDER, merged_ruleset(USER_PLACEHOLDER, None))
    events = [
        {"type": "m.room.message", "content": {"body": "hi", "m.mentions": {"user_ids": ["@alice:h"]}}},
        {"type": "m.room.member", "state_key": "@alice:h", "content": {"membership": "invite"}},
        {"type": "m.room.member", "state_key": "@bob:h", "content": {"membership": "join"}},
        {"type": "m.room.message", "content": {"body": "plain"}},
    ]
    for user in ("@alice:h", "@bob:h"):
        for event in events:
            full = {"event_id": "$e", "room_id": "!r:h", "sender": "@carol:h", **event}
            got = evaluate(compiler.for_user(user), EventFacts(full, 3, 0, {"room": 50}), user, None)
            want = evaluate(
                compile_ruleset(merged_ruleset(user, None)), EventFacts(full, 3, 0, {"room": 50}), user, None
            )
            assert (got.rule_id if got else None) == (want.rule_id if want else None), (user, event)
    # the mention and the invite are personal: alice is highlighted/notified, bob is not
    alice_mention = evaluate(
        compiler.for_user("@alice:h"),
        EventFacts({"event_id": "$e", "room_id": "!r:h", "sender": "@c:h", **events[0]}, 3, 0, {"room": 50}),
        "@alice:h",
        None,
    )
    assert alice_mention is not None and alice_mention.rule_id == ".m.rule.is_user_mention"
