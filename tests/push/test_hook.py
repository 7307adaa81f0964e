"""The persist hook straight over storage (SQLite and PostgreSQL): evaluation inline and in a worker
thread write the same rows; remote members, the sender and ignorers get none."""

from __future__ import annotations

from typing import Any

from ranvier.protocol.events import Pdu, build_event
from ranvier.protocol.room_versions import get_room_version
from ranvier.protocol.signing import SigningKey
from ranvier.push.actions import PushActionsHook
from ranvier.storage.interfaces import EventToPersist
from ranvier.storage.sql.engine import Database
from ranvier.storage.sql.push_counts import PushActionStore

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
