"""The compiled server-default rules of a user with no rules of their own, made from one template
(DefaultRulesCompiler), are the rules compile_ruleset(merged_ruleset(user, None)) gives, condition by
condition, and evaluate alike (the first event into a room of 50,000 local members compiled each member's
defaults from scratch: about a millisecond each)."""

from __future__ import annotations

from typing import Any, cast

from ranvier.protocol.events import Pdu, build_event
from ranvier.protocol.room_versions import get_room_version
from ranvier.protocol.signing import SigningKey
from ranvier.push.actions import PushActionsHook, Recipient, evaluate_for_recipients, event_facts
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


def _event(sender: str, etype: str, content: dict[str, Any], state_key: str | None = None) -> Pdu:
    return build_event(
        room_version=get_room_version("10"),
        room_id="!r:h",
        sender=sender,
        event_type=etype,
        content=content,
        prev_events=["$prev"],
        auth_events=["$create"],
        depth=5,
        origin_server_ts=1,
        server_name="h",
        signing_key=KEY,
        state_key=state_key,
    )


KEY = SigningKey.generate("k")


def test_members_with_default_rules_evaluated_once_get_the_same_rows() -> None:
    """The push hook evaluates the default rules once per event for every member they apply to alike;
    the rows are those of evaluating each member's own rules: mentions, invites, an upper-case or glob
    id, the sender, a notice, a plain message and a join, each alone and all in one batch."""
    hook = PushActionsHook("h", cast(Any, None))
    users = {f"@m{i}:h" for i in range(20)} | {"@Upper:h", "@st*r:h", "@q?:h", "@mentioned:h", "@invited:h"}
    events = [
        _event("@m0:h", "m.room.message", {"msgtype": "m.text", "body": "hello"}),
        _event("@m1:h", "m.room.message", {"body": "hi", "m.mentions": {"user_ids": ["@mentioned:h"]}}),
        _event("@m2:h", "m.room.message", {"msgtype": "m.notice", "body": "notice"}),
        _event("@other:x", "m.room.member", {"membership": "invite"}, "@INVITED:h"),
        _event("@other:x", "m.room.member", {"membership": "join"}, "@other:x"),
        _event("@m3:h", "m.room.member", {"membership": "invite"}, "@upper:h"),
    ]
    batches = [[e] for e in events] + [events]
    seen = []
    for batch in batches:
        jobs = [
            (pdu, n, event_facts(pdu, len(users), {}, pdu.room_version), "main")
            for n, pdu in enumerate(batch)
        ]
        every = [Recipient(u, hook._ruleset(u, None), None, frozenset(), False) for u in sorted(users)]
        want = evaluate_for_recipients("!r:h", jobs, every)
        generic = hook._generic_users(users, {}, set(), batch)
        assert generic and not {"@Upper:h", "@st*r:h", "@q?:h"} & set(generic)
        rest = [r for r in every if r.user_id not in generic]
        got = evaluate_for_recipients("!r:h", jobs, rest, generic, hook._generic_ruleset)
        assert sorted(got, key=repr) == sorted(want, key=repr)
        seen += want
    # the comparisons were not all of empty lists: messages notify, the mention highlights
    assert any(r.notify for r in seen) and any(r.highlight for r in seen)
