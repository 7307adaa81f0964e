"""The persist hook straight over storage (SQLite and PostgreSQL): evaluation inline and in a worker
thread write the same rows; remote members, the sender and ignorers get none."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ranvier.protocol.events import Pdu, build_event
from ranvier.protocol.room_versions import get_room_version
from ranvier.protocol.signing import SigningKey
from ranvier.push.actions import PushActionsHook
from ranvier.storage.interfaces import EventToPersist
from ranvier.storage.sql.engine import Database
from ranvier.storage.sql.push_counts import PushActionStore
from ranvier.storage.sql.state import recount_server_members

# The storage suite's database fixtures, parametrized over both engines.
from tests.storage.conftest import db, db_spec, raw_db  # noqa: F401

SERVER = "here.example.org"
ROOM = "!room:here.example.org"
KEY = SigningKey.from_seed("k", bytes(range(32)))


def _pdu(n: int, sender: str, content: dict[str, Any]) -> Pdu:
    return build_event(
        room_version=get_room_version("11"),
        room_id=ROOM,
        sender=sender,
        event_type="m.room.message",
        content=content,
        prev_events=[f"$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Z{n}"],
        auth_events=[],
        depth=10 + n,
        origin_server_ts=1_700_000_000_000 + n,
        server_name=SERVER,
        signing_key=KEY,
    )


async def test_inline_and_threaded_evaluation_agree(db: Database) -> None:  # noqa: F811
    local = [f"@u{i}:{SERVER}" for i in range(30)]
    remote = [f"@r{i}:elsewhere.example.org" for i in range(5)]
    async with db.transaction() as txn:
        await txn.executemany(
            "INSERT INTO room_memberships (room_id, user_id, server_name, membership, event_id)"
            " VALUES (?, ?, ?, 'join', ?)",
            [(ROOM, u, u.split(":", 1)[1], f"$j{u}") for u in local + remote],
        )
        await txn.execute(
            "INSERT INTO account_data (user_id, room_id, data_type, content, stream_pos)"
            " VALUES (?, '', 'm.ignored_user_list', ?, 1)",
            (local[3], '{"ignored_users": {"@u0:here.example.org": {}}}'),
        )
        await recount_server_members(txn, ROOM)  # the index was written here, not by a persist
    sender = local[0]
    pdus = [
        _pdu(1, sender, {"msgtype": "m.text", "body": "hello"}),
        _pdu(2, sender, {"msgtype": "m.text", "body": "hi", "m.mentions": {"user_ids": [local[5]]}}),
        _pdu(3, sender, {"msgtype": "m.notice", "body": "bot"}),
    ]
    results = []
    for threshold, base in ((10**9, 100), (0, 200)):
        store = PushActionStore(db)
        hook = PushActionsHook(SERVER, store, thread_threshold=threshold)
        async with db.transaction() as txn:
            await hook.in_txn(txn, ROOM, [(EventToPersist(pdu=p), base + i) for i, p in enumerate(pdus)])
        rows = await db.fetchall(
            "SELECT user_id, stream_ordering - ?, notify, highlight FROM event_push_actions"
            " WHERE stream_ordering >= ? AND stream_ordering < ? ORDER BY stream_ordering, user_id",
            (base, base, base + 100),
        )
        results.append([tuple(r) for r in rows])
    inline, threaded = results
    assert inline == threaded
    notified = {(u, i) for u, i, _, _ in inline}
    # every local member but the sender and the one ignoring them, for the two messages; not the notice
    expected = {(u, i) for i in (0, 1) for u in local if u not in (sender, local[3])}
    assert notified == expected
    assert [(u, i) for u, i, _, h in inline if h] == [(local[5], 1)]


def _event(
    n: int, sender: str, event_type: str, content: dict[str, Any], state_key: str | None = None
) -> Pdu:
    return build_event(
        room_version=get_room_version("11"),
        room_id=ROOM,
        sender=sender,
        event_type=event_type,
        content=content,
        prev_events=[f"$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Z{n}"],
        auth_events=[],
        depth=10 + n,
        origin_server_ts=1_700_000_000_000 + n,
        server_name=sender.split(":", 1)[1],
        signing_key=KEY,
        state_key=state_key,
    )


async def test_batches_silent_for_default_rules_skip_the_members_and_write_the_same_rows(
    db: Database,  # noqa: F811
) -> None:
    """A batch that notifies no member with the default rules (a join, a leave, a reaction) is evaluated
    for the members with rules of their own and the mentioned only, without reading the room's members
    (issue 19: a join into a room of 10,000 local members read each); it writes exactly the rows the
    evaluation of every member writes. Invites and messages still take the full path."""
    local = [f"@u{i}:{SERVER}" for i in range(30)]
    remote = [f"@r{i}:elsewhere.example.org" for i in range(5)]
    # u2 is told of every membership change (the default dont_notify rule for them disabled); u3 ignores u0.
    rules = {
        "global": {
            "override": [
                {"rule_id": ".m.rule.member_event", "enabled": False},
                {
                    "rule_id": "members",
                    "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.member"}],
                    "actions": ["notify"],
                },
            ]
        }
    }
    async with db.transaction() as txn:
        await txn.executemany(
            "INSERT INTO room_memberships (room_id, user_id, server_name, membership, event_id)"
            " VALUES (?, ?, ?, 'join', ?)",
            [(ROOM, u, u.split(":", 1)[1], f"$j{u}") for u in local + remote],
        )
        await txn.executemany(
            "INSERT INTO account_data (user_id, room_id, data_type, content, stream_pos)"
            " VALUES (?, '', ?, ?, 1)",
            [
                (local[2], "m.push_rules", json.dumps(rules)),
                (local[3], "m.ignored_user_list", '{"ignored_users": {"@u0:here.example.org": {}}}'),
            ],
        )
        await recount_server_members(txn, ROOM)
    mention = {"m.mentions": {"user_ids": [local[7], local[3]]}}
    reaction = {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x", "key": "+1"}, **mention}
    batches = {
        "join": [
            _event(
                1, "@new:here.example.org", "m.room.member", {"membership": "join"}, "@new:here.example.org"
            )
        ],
        "remote leave": [_event(2, remote[0], "m.room.member", {"membership": "leave"}, remote[0])],
        "reaction": [_event(3, local[0], "m.reaction", reaction)],
        "invite": [_event(4, local[0], "m.room.member", {"membership": "invite"}, "@inv:here.example.org")],
        "message": [_event(5, local[0], "m.room.message", {"msgtype": "m.text", "body": "hi", **mention})],
    }
    expected_quiet = {"join", "remote leave", "reaction"}
    store = PushActionStore(db)
    members_read: list[str] = []
    read_members = store.local_members_txn

    async def counting(
        txn: Any, room_id: str, server_name: str, data_types: Sequence[str]
    ) -> tuple[list[str], dict[tuple[str, str], str]]:
        members_read.append(room_id)
        return await read_members(txn, room_id, server_name, data_types)

    store.local_members_txn = counting  # type: ignore[method-assign]
    outcomes = {}
    for n, (name, pdus) in enumerate(batches.items()):
        results = []
        for full, base in ((False, 1000 * n), (True, 1000 * n + 500)):
            hook = PushActionsHook(SERVER, store)
            if full:  # every member evaluated, as before the shortcut
                hook._generic_is_quiet = lambda *args: False  # type: ignore[method-assign]
            members_read.clear()
            async with db.transaction() as txn:
                await hook.in_txn(txn, ROOM, [(EventToPersist(pdu=p), base + i) for i, p in enumerate(pdus)])
            assert bool(members_read) == (full or name not in expected_quiet), name
            rows = await db.fetchall(
                "SELECT user_id, stream_ordering - ?, notify, highlight FROM event_push_actions"
                " WHERE stream_ordering >= ? AND stream_ordering < ? ORDER BY stream_ordering, user_id",
                (base, base, base + 500),
            )
            results.append([tuple(r) for r in rows])
        shortcut, everyone = results
        assert shortcut == everyone, name
        outcomes[name] = {(u, bool(h)) for u, _, _, h in shortcut}
    assert outcomes["join"] == {(local[2], False)}
    assert outcomes["remote leave"] == {(local[2], False)}
    assert outcomes["reaction"] == {(local[7], True)}  # u3, mentioned too, ignores the sender
    assert len(outcomes["message"]) == 28  # every local member but the sender and the one ignoring them
