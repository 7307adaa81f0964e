"""The unread counts of PushActionStore against a plain model, on SQLite and PostgreSQL: random sequences
of notifying events (main timeline and threads, some highlights) and read receipts (unthreaded public and
private, threaded, some pointing at older events), in several rooms."""

from __future__ import annotations

import random

import pytest

from ranvier.storage.sql.engine import Database
from ranvier.storage.sql.push_counts import MAIN_THREAD, PushActionRow, PushActionStore
from ranvier.storage.sql.receipts import ReceiptStore

# The storage suite's database fixtures, parametrized over both engines.
from tests.storage.conftest import db, db_spec, raw_db  # noqa: F401

ME = "@me:example.org"
ROOMS = ["!a:example.org", "!b:example.org", "!c:example.org"]
THREADS = [MAIN_THREAD, "$root1", "$root2"]


async def _event(db: Database, room_id: str, ordering: int) -> str:  # noqa: F811
    event_id = f"$e{ordering}"
    await db.execute(
        "INSERT INTO events (event_id, room_id, stream_ordering, depth, type, sender, origin_server_ts,"
        " outlier, soft_failed, room_version, json)"
        " VALUES (?, ?, ?, ?, 'm.room.message', ?, 0, ?, ?, '11', '{}')",
        (event_id, room_id, ordering, ordering, "@other:example.org", False, False),
    )
    return event_id


@pytest.mark.parametrize("seed", range(4))
async def test_counts_match_the_model(db: Database, seed: int) -> None:  # noqa: F811
    rng = random.Random(seed)
    store, receipts = PushActionStore(db), ReceiptStore(db)
    for room_id in ROOMS:
        await db.execute(
            "INSERT INTO rooms (room_id, room_version, creator) VALUES (?, '11', ?)", (room_id, ME)
        )
    ordering = 0
    # model: room -> list of (ordering, thread, highlight); receipts: (room, type, thread) -> ordering
    events: dict[str, list[tuple[int, str, bool]]] = {r: [] for r in ROOMS}
    read: dict[tuple[str, str, str], int] = {}
    joined_at: dict[str, int] = {}
    for room_id in ROOMS:
        ordering += 1
        join_id = await _event(db, room_id, ordering)
        await db.execute(
            "INSERT INTO room_memberships (room_id, user_id, server_name, membership, event_id)"
            " VALUES (?, ?, 'example.org', 'join', ?)",
            (room_id, ME, join_id),
        )
        joined_at[room_id] = ordering
    for _ in range(60):
        room_id = rng.choice(ROOMS)
        if rng.random() < 0.7 or not events[room_id]:
            ordering += 1
            event_id = await _event(db, room_id, ordering)
            thread, highlight = rng.choice(THREADS), rng.random() < 0.3
            row = PushActionRow(ME, room_id, ordering, event_id, thread, True, highlight, ["notify"])
            async with db.transaction() as txn:
                await store.insert_txn(txn, [row])
            events[room_id].append((ordering, thread, highlight))
        else:
            at, _, _ = rng.choice(events[room_id])
            receipt_type = rng.choice(["m.read", "m.read.private"])
            receipt_thread = rng.choice([None, *THREADS])
            await receipts.put_receipt(
                room_id, receipt_type, ME, f"$e{at}", {"ts": 1}, thread_id=receipt_thread
            )
            read[(room_id, receipt_type, receipt_thread or "")] = at

        got = await store.unread_counts(ME, ROOMS)
        for room_id in ROOMS:
            expected: dict[str, list[int]] = {}
            for at, thread, highlight in events[room_id]:
                start = max(
                    [joined_at[room_id]]
                    + [pos for (r, _, t), pos in read.items() if r == room_id and t in ("", thread)]
                )
                if at > start:
                    counts = expected.setdefault(thread, [0, 0])
                    counts[0] += 1
                    counts[1] += int(highlight)
            actual = {
                t: [c.notification_count, c.highlight_count]
                for t, c in (got[room_id].threads.items() if room_id in got else [])
            }
            assert actual == expected, (seed, room_id)
