"""room_server_members (migration 740): per room and server, the joined and invited members, kept by every
write of the membership index, always equal to what a scan of the index counts; on both databases.

Random membership histories (seeded: a failure names its seed) of users on three servers: joins, invites,
knocks, leaves, kicks and bans as deltas, state resets as full maps (members dropped, members set back to an
older event), the partial-state resync's rewrite of the current state, then the room's purge. The counts
are compared with the scan after every step, and the readers (joined servers, whether a server is joined,
the member counts) with what the scan says.
"""

from __future__ import annotations

import random

import pytest

from ranvier.protocol.events import StateKey
from ranvier.storage.interfaces import EventToPersist, StateDelta
from ranvier.storage.sql import RoomStorage
from ranvier.storage.sql import state as state_module
from ranvier.storage.sql.engine import Database
from ranvier.storage.sql.migrate import load_migrations, migrate
from ranvier.storage.sql.purge import purge_room

from .conftest import ALICE
from .test_events import new_room

SERVERS = ("example.org", "other.org", "third.org:8448")
USERS = [f"@u{i}:{server}" for server in SERVERS for i in range(4)]
MEMBERSHIPS = ("join", "join", "invite", "leave", "ban", "knock")
MEMBER = "m.room.member"


async def counted(db: Database, room_id: str) -> dict[str, tuple[int, int]]:
    rows = await db.fetchall(
        "SELECT server_name, joined, invited FROM room_server_members WHERE room_id = ?", (room_id,)
    )
    return {server: (int(j), int(i)) for server, j, i in rows}


async def scanned(db: Database, room_id: str) -> dict[str, tuple[int, int]]:
    rows = await db.fetchall(
        "SELECT server_name, SUM(CASE WHEN membership = 'join' THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN membership = 'invite' THEN 1 ELSE 0 END) FROM room_memberships"
        " WHERE room_id = ? AND membership IN ('join', 'invite') GROUP BY server_name",
        (room_id,),
    )
    return {server: (int(j), int(i)) for server, j, i in rows}


async def check(storage: RoomStorage, room_id: str) -> None:
    scan = await scanned(storage.db, room_id)
    assert await counted(storage.db, room_id) == scan
    joined = {server for server, (j, _) in scan.items() if j}
    assert await storage.state.get_joined_servers(room_id) == joined
    for server in SERVERS:
        assert await storage.state.is_server_joined(room_id, server) == (server in joined)
    assert await storage.state.get_member_counts(room_id) == (
        sum(j for j, _ in scan.values()),
        sum(i for _, i in scan.values()),
    )


@pytest.mark.parametrize("seed", range(3))
async def test_counts_equal_the_scan_through_any_membership_history(storage: RoomStorage, seed: int) -> None:
    rng = random.Random(seed)
    dag, state = await new_room(storage)
    room = dag.room_id
    current: dict[StateKey, str] = dict(state)
    history: dict[str, list[str]] = {}  # user -> their member events, oldest first
    tip = "create"
    for step in range(60):
        kind = rng.random()
        if kind < 0.75 or not history:
            # A batch of one to three membership changes, as a delta.
            batch, changed = [], {}
            for user in rng.sample(USERS, rng.randint(1, 3)):
                membership = rng.choice(MEMBERSHIPS)
                sender = rng.choice([user, ALICE]) if membership in ("leave", "ban") else user
                name = f"s{step}{user}"
                dag.member(name, user, membership, [tip], sender=sender)
                batch.append(EventToPersist(dag.by_name[name], state_before=dict(current)))
                changed[(MEMBER, user)] = dag.id(name)
                history.setdefault(user, []).append(dag.id(name))
                tip = name
            await storage.events.persist_events(room, batch, new_current_state=StateDelta(changed=changed))
            current.update(changed)
        elif kind < 0.9:
            # A state reset: a full map where some members are gone and others are back at an older event.
            reset = dict(current)
            for user in rng.sample(sorted(history), min(len(history), 3)):
                if rng.random() < 0.5:
                    reset.pop((MEMBER, user), None)
                else:
                    reset[(MEMBER, user)] = rng.choice(history[user])
            await storage.events.persist_events(room, [], new_current_state=reset)
            current = reset
        else:
            # The partial-state resync: the current state replaced by the full one in rewrite_states.
            full = dict(current)
            for user in rng.sample(sorted(history), min(len(history), 2)):
                full[(MEMBER, user)] = rng.choice(history[user])

            async def nothing(txn: object, position: int) -> None:
                return None

            await storage.events.rewrite_states(room, [], full, nothing)
            current = full
        await check(storage, room)
    assert await counted(storage.db, room)  # the history left members in the room
    await purge_room(storage.db, storage, room)
    assert await counted(storage.db, room) == {}


async def test_big_writes_into_a_room_holding_few_members(
    storage: RoomStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write touching more users than the room holds (the resync of a partial-state room) reads the old
    memberships with the room's members rather than by key: the counts stay right either way."""
    monkeypatch.setattr(state_module, "SCAN_FROM", 50)  # as for 1,000 users, with fewer to build
    dag, state = await new_room(storage)
    room = dag.room_id
    users = [f"@m{i}:{SERVERS[i % 3]}" for i in range(120)]
    joins = {}
    tip = "create"
    for user in users:
        dag.member(f"j{user}", user, "join", [tip], sender=user)
        joins[(MEMBER, user)] = dag.id(f"j{user}")
        tip = f"j{user}"
    batch = [EventToPersist(dag.by_name[f"j{u}"], state_before=dict(state)) for u in users]
    await storage.events.persist_events(room, batch, new_current_state=StateDelta(changed=joins))
    await check(storage, room)  # 120 touched, none held: read with the room's
    leaves = {}
    for user in users[:110]:
        dag.member(f"l{user}", user, "leave", [tip], sender=user)
        leaves[(MEMBER, user)] = dag.id(f"l{user}")
        tip = f"l{user}"
    batch = [EventToPersist(dag.by_name[f"l{u}"], state_before=dict(state)) for u in users[:110]]
    await storage.events.persist_events(room, batch, new_current_state=StateDelta(changed=leaves))
    await check(storage, room)  # 110 touched, 120 held: by key
    assert await counted(storage.db, room) == {s: (3, 0) for s in SERVERS} | {SERVERS[2]: (4, 0)}
    # A state reset puts the 110 back at their joins and drops the 10 others: 120 touched, 10 held.
    reset = {**state, **{key: joins[key] for key in list(joins)[:110]}}
    await storage.events.persist_events(room, [], new_current_state=reset)
    await check(storage, room)
    assert await counted(storage.db, room) == {SERVERS[0]: (37, 0), SERVERS[1]: (37, 0), SERVERS[2]: (36, 0)}


async def test_migration_counts_the_memberships_already_held(raw_db: Database) -> None:
    """A database with rooms before 740 gets its counts from the index as it stands."""
    older = [m for m in load_migrations(raw_db.dialect) if m.version < 740]
    await migrate(raw_db, older)
    rows = [
        ("!a:x", "@u1:x", "x", "join"),
        ("!a:x", "@u2:x", "x", "join"),
        ("!a:x", "@u3:x", "x", "invite"),
        ("!a:x", "@v1:y", "y", "leave"),
        ("!a:x", "@v2:y", "y", "invite"),
        ("!b:x", "@w1:z", "z", "ban"),
    ]
    async with raw_db.transaction() as txn:
        await txn.executemany(
            "INSERT INTO room_memberships (room_id, user_id, server_name, membership, event_id)"
            " VALUES (?, ?, ?, ?, ?)",
            [(*row, f"$e{i}") for i, row in enumerate(rows)],
        )
    await migrate(raw_db)
    assert await counted(raw_db, "!a:x") == {"x": (2, 1), "y": (0, 1)}
    assert await counted(raw_db, "!b:x") == {}
