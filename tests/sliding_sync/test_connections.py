"""The connection store of ranvier/sync/connections.py, in memory (no database): positions kept (the
one a request came from and the one it answered with), expiry, the per-user bound, pos parsing."""

from __future__ import annotations

import pytest

from ranvier.sync.changes import SyncToken
from ranvier.sync.connections import (
    ConnectionStore,
    Position,
    RoomSent,
    UnknownPosition,
    decode_rooms,
    encode_rooms,
    format_pos,
    parse_pos,
)
from ranvier.sync.required_state import RequiredState

KEY = ("@a:x", "DEV", "")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def position(events: int) -> Position:
    return Position(SyncToken(events), {})


async def test_keeps_the_previous_and_the_new_position() -> None:
    store = ConnectionStore(clock_ms=Clock())
    first = await store.save(KEY, None, position(1))
    second = await store.save(KEY, first, position(2))
    assert (await store.get(KEY, first)).token.events == 1  # a retry of the request at `first`
    third = await store.save(KEY, first, position(3))  # the retry's answer replaces `second`
    with pytest.raises(UnknownPosition):
        await store.get(KEY, second)
    assert (await store.get(KEY, third)).token.events == 3
    fresh = await store.save(KEY, None, position(4))  # no pos: the connection starts again
    for gone in (first, third):
        with pytest.raises(UnknownPosition):
            await store.get(KEY, gone)
    assert (await store.get(KEY, fresh)).token.events == 4
    with pytest.raises(UnknownPosition):
        await store.get(("@a:x", "DEV", "other"), fresh)  # another conn_id
    with pytest.raises(UnknownPosition):
        await store.get(("@b:x", "DEV", ""), fresh)  # another user


async def test_expiry_and_per_user_bound() -> None:
    clock = Clock()
    store = ConnectionStore(clock_ms=clock, expiry_ms=10_000, max_per_user=2)
    old = await store.save(KEY, None, position(1))
    clock.now += 10_001
    with pytest.raises(UnknownPosition):
        await store.get(KEY, old)
    ids = []
    for i in range(3):
        clock.now += 1  # each connection used later than the one before
        ids.append(await store.save(("@a:x", "DEV", f"c{i}"), None, position(i)))
    await store.save(("@b:x", "DEV", ""), None, position(9))  # another user's: not counted
    with pytest.raises(UnknownPosition):
        await store.get(("@a:x", "DEV", "c0"), ids[0])  # the least recently used of three went
    assert (await store.get(("@a:x", "DEV", "c2"), ids[2])).token.events == 2
    assert len(store) == 3


def test_pos_and_rooms_round_trip() -> None:
    token = SyncToken(5, 1, 2, 3, 4, 6)
    assert parse_pos(format_pos(42, token)) == (42, token)
    for bad in ("", "42", "42/", "/s1", "x/s1", "42/t1_2", "42/s1/2", "-1/s1"):
        with pytest.raises(ValueError):
            parse_pos(bad)
    rooms = {
        "!r:x": RoomSent(
            7, RequiredState(frozenset({("m.room.member", "$LAZY")})), 3, frozenset({"@b:x"}), "leave"
        )
    }
    assert decode_rooms(encode_rooms(rooms)) == rooms
