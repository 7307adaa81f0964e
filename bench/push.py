"""Push-rule evaluation throughput for a room of N local members (default 1,000).

Each event is evaluated against every member's rules (all but its sender), as the persist hook does:
the spec's default rules, merged once per user; a tenth of the users also carry three keyword (content)
rules and a room rule. The events are a mix: plain messages, a message mentioning one member, an edit,
a notice, a reaction, a message in a thread. Pure evaluation only (ranvier/push/evaluator.py, including
building the per-event facts; rule sets merged and compiled beforehand, as the hook caches them): no
database, so this is the CPU bound on the persist hook's evaluation.

Prints events/s (each event for every member) and user-evaluations/s, min / median / max of several runs.

Usage: python3 -m bench push [--members 1000] [--events 200] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from ranvier.push.evaluator import CompiledRuleset, EventFacts, compile_ruleset, evaluate
from ranvier.push.rules import Ruleset, merged_ruleset, put_rule

ROOM = "!bench:bench.example.org"


def _rulesets(members: list[str]) -> dict[str, CompiledRuleset]:
    out: dict[str, CompiledRuleset] = {}
    for i, user in enumerate(members):
        rules: Ruleset = merged_ruleset(user, None)
        if i % 10 == 0:
            for word in ("lunch", "deploy", "outage"):
                rules = put_rule(rules, "content", word, {"pattern": word, "actions": ["notify"]})
            rules = put_rule(rules, "room", ROOM, {"actions": ["notify"]})
        out[user] = compile_ruleset(rules)
    return out


def _events(members: list[str], n: int) -> list[dict[str, Any]]:
    kinds: list[dict[str, Any]] = [
        {"type": "m.room.message", "content": {"msgtype": "m.text", "body": "hello there, how is it going"}},
        {
            "type": "m.room.message",
            "content": {"msgtype": "m.text", "body": "ping", "m.mentions": {"user_ids": [members[7]]}},
        },
        {
            "type": "m.room.message",
            "content": {
                "msgtype": "m.text",
                "body": "* fixed",
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$x"},
            },
        },
        {"type": "m.room.message", "content": {"msgtype": "m.notice", "body": "bot says lunch"}},
        {"type": "m.reaction", "content": {"m.relates_to": {"rel_type": "m.annotation", "key": "+1"}}},
        {
            "type": "m.room.message",
            "content": {
                "msgtype": "m.text",
                "body": "the deploy is done",
                "m.relates_to": {"rel_type": "m.thread", "event_id": "$root"},
            },
        },
    ]
    return [
        {"room_id": ROOM, "sender": members[i % len(members)], "event_id": f"$e{i}", **kinds[i % len(kinds)]}
        for i in range(n)
    ]


def _run(
    members: list[str], rulesets: dict[str, CompiledRuleset], events: list[dict[str, Any]]
) -> tuple[float, int]:
    notified = 0
    start = time.perf_counter()
    for event in events:
        facts = EventFacts(event, len(members), 0, {"room": 50})
        for user in members:
            if user == event["sender"]:
                continue
            outcome = evaluate(rulesets[user], facts, user, None)
            if outcome is not None and outcome.notify:
                notified += 1
    return time.perf_counter() - start, notified


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench push")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    members = [f"@user{i}:bench.example.org" for i in range(args.members)]
    rulesets = _rulesets(members)
    events = _events(members, args.events)
    _run(members, rulesets, events[: max(1, len(events) // 10)])  # warm-up (regex and path caches)
    times: list[float] = []
    notified = 0
    for _ in range(args.runs):
        elapsed, notified = _run(members, rulesets, events)
        times.append(elapsed)
    rates = sorted(len(events) / t for t in times)
    per_user = [r * (len(members) - 1) for r in rates]
    print(f"push evaluation, room of {args.members} local members, {len(events)} events x {args.runs} runs")
    print(
        f"  events/s (each for every member): min {rates[0]:,.0f}  median {statistics.median(rates):,.0f}"
        f"  max {rates[-1]:,.0f}"
    )
    print(f"  user evaluations/s: median {statistics.median(per_user):,.0f}")
    print(f"  notifying (user, event) pairs per run: {notified:,}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
