"""Push-rule evaluation throughput for a room of N local members (default 1,000).

Each event is evaluated against every member's rules (all but its sender), as the persist hook does:
the spec's default rules, merged once per user; a tenth of the users also carry three keyword (content)
rules and a room rule. The events are a mix: plain messages, a message mentioning one member, an edit,
a notice, a reaction, a message in a thread. Pure evaluation only (ranvier/push/evaluator.py, including
building the per-event facts; rule sets merged and compiled beforehand, as the hook caches them): no
database, so this is the CPU bound on the persist hook's evaluation.

Prints events/s (each event for every member) and user-evaluations/s, min / median / max of several runs.

``--hook`` measures instead what the persister's in-transaction hook costs per event on SQLite (a file in
a temporary directory, synchronous=NORMAL): reading the room's members, their push rules and ignore lists,
evaluating, and writing one row per notified member, one transaction per event (the event's own rows
and state are not written: this is the hook's share of a persist).

Usage: python3 -m bench push [--members 1000] [--events 200] [--runs 5] [--hook]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ranvier.protocol.events import Pdu, build_event
from ranvier.protocol.room_versions import get_room_version
from ranvier.protocol.signing import SigningKey
from ranvier.push.actions import PushActionsHook
from ranvier.push.evaluator import CompiledRuleset, EventFacts, compile_ruleset, evaluate
from ranvier.push.rules import Ruleset, merged_ruleset, put_rule
from ranvier.storage.interfaces import EventToPersist
from ranvier.storage.sql.engine import SqliteDatabase
from ranvier.storage.sql.migrate import migrate
from ranvier.storage.sql.push_counts import PushActionStore
from ranvier.storage.sql.state import recount_server_members

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


SERVER = "bench.example.org"
KEY = SigningKey.from_seed("bench", bytes(range(32)))


def _pdus(events: list[dict[str, Any]]) -> list[Pdu]:
    version = get_room_version("11")
    refs = [f"$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Z{i}" for i in range(3)]
    return [
        build_event(
            room_version=version,
            room_id=ROOM,
            sender=e["sender"],
            event_type=e["type"],
            content=e["content"],
            prev_events=refs[:1],
            auth_events=refs[1:],
            depth=10 + i,
            origin_server_ts=1_700_000_000_000 + i,
            server_name=SERVER,
            signing_key=KEY,
        )
        for i, e in enumerate(events)
    ]


async def _hook_run(members: list[str], events: list[dict[str, Any]], runs: int) -> list[float]:
    pdus = _pdus(events)
    rates: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = await SqliteDatabase.open(Path(tmp) / "bench.db", synchronous="NORMAL")
        try:
            await migrate(db)
            async with db.transaction() as txn:
                await txn.executemany(
                    "INSERT INTO room_memberships (room_id, user_id, server_name, membership, event_id)"
                    " VALUES (?, ?, ?, 'join', ?)",
                    [(ROOM, m, SERVER, f"$join{i}") for i, m in enumerate(members)],
                )
                await recount_server_members(txn, ROOM)  # the index was written here, not by a persist
            hook = PushActionsHook(SERVER, PushActionStore(db))
            ordering = 0
            for run in range(runs + 1):  # the first run warms the caches and is not counted
                start = time.perf_counter()
                for pdu in pdus:
                    ordering += 1
                    async with db.transaction() as txn:
                        await hook.in_txn(txn, ROOM, [(EventToPersist(pdu=pdu), ordering)])
                if run:
                    rates.append(len(pdus) / (time.perf_counter() - start))
        finally:
            await db.close()
    return sorted(rates)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench push")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--hook", action="store_true", help="the persist hook on SQLite, not evaluation alone"
    )
    args = parser.parse_args(argv)
    members = [f"@user{i}:bench.example.org" for i in range(args.members)]
    if args.hook:
        rates = asyncio.run(_hook_run(members, _events(members, args.events), args.runs))
        print(
            f"push hook on SQLite, room of {args.members} local members,"
            f" {args.events} events x {args.runs} runs"
        )
        print(
            f"  events/s (one transaction each): min {rates[0]:,.0f}  median {statistics.median(rates):,.0f}"
            f"  max {rates[-1]:,.0f}"
        )
        return
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
