"""The admin API's tables (storage.sql.admin) on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from ranvier.clock import now_ms
from ranvier.storage.sql.admin import AdminStore, RateLimitOverride
from ranvier.storage.sql.engine import Database
from ranvier.storage.sql.users import UserStore

# The storage suite's database fixtures (db_spec -> raw_db -> db), parametrized over both engines.
from tests.storage.conftest import db, db_spec, raw_db  # noqa: F401


async def test_list_users_filters_orders_and_counts(db: Database) -> None:  # noqa: F811
    users, store = UserStore(db), AdminStore(db)
    for name, display in (("carol", "Carol"), ("bob", "b_o%b"), ("alice", None)):
        await users.create_user(f"@{name}:x", None, displayname=display, is_admin=name == "alice")
    await users.deactivate("@carol:x")
    await store.set_shadow_banned("@bob:x", True)
    rows, total = await store.list_users(
        start=0, limit=10, name=None, deactivated=False, admins=None, order_by="name", backwards=False
    )
    assert [r[0] for r in rows] == ["@alice:x", "@bob:x"] and total == 2
    assert [bool(r[6]) for r in rows] == [False, True]
    rows, total = await store.list_users(
        start=1, limit=1, name=None, deactivated=True, admins=None, order_by="name", backwards=True
    )
    assert [r[0] for r in rows] == ["@bob:x"] and total == 3
    # LIKE wildcards in the search are literal characters.
    rows, _ = await store.list_users(
        start=0, limit=10, name="o%", deactivated=True, admins=None, order_by="name", backwards=False
    )
    assert [r[0] for r in rows] == ["@bob:x"]
    # user_id looks in user ids only.
    rows, _ = await store.list_users(
        start=0,
        limit=10,
        name=None,
        user_id="o%",
        deactivated=True,
        admins=None,
        order_by="name",
        backwards=False,
    )
    assert rows == []
    rows, _ = await store.list_users(
        start=0,
        limit=10,
        name=None,
        user_id="AR",
        deactivated=True,
        admins=None,
        order_by="name",
        backwards=False,
    )
    assert [r[0] for r in rows] == ["@carol:x"]
    rows, _ = await store.list_users(
        start=0, limit=10, name=None, deactivated=True, admins=True, order_by="shadow_banned", backwards=False
    )
    assert [r[0] for r in rows] == ["@alice:x"]


async def test_flags_overrides_blocks(db: Database) -> None:  # noqa: F811
    store = AdminStore(db)
    await store.set_shadow_banned("@a:x", True)
    await store.set_shadow_banned("@a:x", True)  # twice is once
    assert await store.shadow_banned_users() == {"@a:x"}
    await store.set_shadow_banned("@a:x", False)
    assert await store.shadow_banned_users() == set()
    await store.set_override("@a:x", RateLimitOverride(1, 2))
    await store.set_override("@a:x", RateLimitOverride(0, 0))
    assert await store.all_overrides() == {"@a:x": RateLimitOverride(0, 0)}
    await store.delete_override("@a:x")
    assert await store.all_overrides() == {}
    await store.set_room_blocked("!r:x", "@admin:x", True)
    assert await store.room_blocked_by("!r:x") == "@admin:x" and await store.blocked_rooms() == {"!r:x"}
    await store.set_room_blocked("!r:x", "@admin:x", False)
    assert await store.room_blocked_by("!r:x") is None


async def test_reports(db: Database) -> None:  # noqa: F811
    store = AdminStore(db)
    first = await store.add_report("event", "@a:x", "spam", {"reason": "spam"}, room_id="!r:x", event_id="$e")
    second = await store.add_report("room", "@b:x", None, {}, room_id="!r:x")
    third = await store.add_report("event", "@b:x", "x", {"score": -100}, room_id="!s:x", event_id="$f")
    assert len({first, second, third}) == 3
    reports, total = await store.list_reports("event", start=0, limit=10, backwards=True)
    assert [r.id for r in reports] == [third, first] and total == 2
    reports, total = await store.list_reports("event", start=0, limit=10, backwards=False, user_id="@b")
    assert [r.id for r in reports] == [third] and reports[0].content == {"score": -100}
    assert (await store.get_report(second)).kind == "room"  # type: ignore[union-attr]
    assert await store.delete_report(first) and not await store.delete_report(first)
    assert await store.get_report(first) is None


async def test_registration_tokens_are_used_atomically(db: Database) -> None:  # noqa: F811
    store = AdminStore(db)
    assert await store.create_token("t", 3, None)
    assert not await store.create_token("t", None, None)
    # Ten registrations at once against three uses: exactly three succeed.
    results = await asyncio.gather(*(store.complete_token_use("t") for _ in range(10)))
    assert results.count(True) == 3
    token = await store.get_token("t")
    assert token is not None and token.completed == 3 and not token.usable(now_ms())
    await store.update_token("t", {"uses_allowed": None})
    assert await store.complete_token_use("t")
    await store.create_token("old", None, now_ms() - 1)
    assert not await store.complete_token_use("old")
    assert [t.token for t in await store.list_tokens()] == ["old", "t"]
    assert await store.delete_token("old") and await store.get_token("old") is None


async def test_server_notice_rooms(db: Database) -> None:  # noqa: F811
    store = AdminStore(db)
    assert await store.server_notice_room("@a:x") is None
    await store.set_server_notice_room("@a:x", "!one:x")
    await store.set_server_notice_room("@a:x", "!two:x")
    assert await store.server_notice_room("@a:x") == "!two:x"
