"""The user directory's rows and search on SQLite and PostgreSQL: profiles from join events (not from
backfilled ones), who may find whom (a shared room, a public room), leaves, local users' own profiles,
deactivated users, search_all_users, and migration 611's backfill."""

from __future__ import annotations

from ranvier.storage.interfaces import EventToPersist
from ranvier.storage.sql import RoomStorage
from ranvier.storage.sql.engine import Database
from ranvier.storage.sql.migrate import migrate
from ranvier.storage.sql.user_directory import UserDirectoryStore, query_words
from ranvier.storage.sql.users import UserStore
from tests.storage.conftest import ALICE

from .test_search_storage import Room

BOB = "@bob:remote.example"
CAROL = "@carol:remote.example"
DAVE = "@dave:example.org"


async def _found(store: UserDirectoryStore, searcher: str, term: str, all_users: bool = False) -> list[str]:
    return [e.user_id for e in await store.search(searcher, query_words(term), 10, all_users=all_users)]


async def _join(room: Room, user: str, name: str | None = None) -> None:
    content = {"membership": "join"} | ({"displayname": name} if name else {})
    await room.add("m.room.member", content, state_key=user, sender=user)


async def test_shared_and_public_rooms(db: Database, storage: RoomStorage) -> None:
    store = UserDirectoryStore(db)
    private = await Room.create(storage)
    await _join(private, ALICE, "Alice")
    await _join(private, BOB, "Bobby Tables")
    public = await Room.create(storage)
    await _join(public, CAROL, "Carol Singer")
    # Bob shares a room with Alice: found by a prefix of his display name or his user id, any case.
    assert await _found(store, ALICE, "bob") == [BOB]
    assert await _found(store, ALICE, "TAB") == [BOB]
    assert await _found(store, ALICE, "remote.example bobby") == [BOB]
    assert await _found(store, ALICE, "obby") == []  # a word's start only
    # Rank: a name that starts with the word first, then one where a later word does.
    # (@aaron sorts before @alice: only the rank puts Alice first.)
    await _join(private, "@aaron:example.org", "Aaron Alison")
    assert await _found(store, BOB, "ali") == [ALICE, "@aaron:example.org"]
    assert await _found(store, BOB, "aaron ali") == ["@aaron:example.org"]
    # Carol's room is not public (yet): nobody outside it finds her.
    assert await _found(store, ALICE, "carol") == []
    await public.add("m.room.join_rules", {"join_rule": "public"}, state_key="")
    assert await _found(store, ALICE, "carol") == [CAROL]
    assert await _found(store, DAVE, "singer") == [CAROL]  # anyone, even without a room
    # A world_readable history makes a room public too; an invite-only rule again does not.
    await public.add("m.room.join_rules", {"join_rule": "invite"}, state_key="")
    assert await _found(store, ALICE, "carol") == []
    await public.add("m.room.history_visibility", {"history_visibility": "world_readable"}, state_key="")
    assert await _found(store, ALICE, "carol") == [CAROL]
    # A profile change (a new join event) is searchable; the old name is not.
    await _join(private, BOB, "Robert")
    assert await _found(store, ALICE, "robert") == [BOB]
    assert await _found(store, ALICE, "tables") == []
    # A backfilled old join does not bring the old name back.
    old = private.dag.add("old", [private.last], etype="m.room.member", state_key=BOB, sender=BOB,
                          content={"membership": "join", "displayname": "Old Name"})  # fmt: skip
    await storage.events.persist_events(
        private.dag.room_id, [EventToPersist(old, state_before=dict(private.state), backfilled=True)]
    )
    assert await _found(store, ALICE, "old") == []
    # After leaving, Bob shares nothing with Alice any more.
    await private.add("m.room.member", {"membership": "leave"}, state_key=BOB, sender=BOB)
    assert await _found(store, ALICE, "robert") == []


async def test_local_users_profiles_deactivation_and_all_users(db: Database, storage: RoomStorage) -> None:
    store = UserDirectoryStore(db)
    users = UserStore(db)
    await users.create_user(ALICE, None)
    await users.create_user(DAVE, None, displayname="Dave Grohl")
    room = await Room.create(storage)
    await _join(room, ALICE, "Alice")
    await _join(room, "@erin:example.org", "Erin")
    await users.create_user("@erin:example.org", None, displayname="Erin Brockovich")
    # A local user's own profile is what is searched (their member event may lag behind it).
    assert await _found(store, ALICE, "brock") == ["@erin:example.org"]
    # Dave is in no room: found only when every local user may be.
    assert await _found(store, ALICE, "grohl") == []
    assert await _found(store, ALICE, "grohl", all_users=True) == [DAVE]
    await users.deactivate("@erin:example.org")
    assert await _found(store, ALICE, "erin") == []


async def test_migration_fills_the_directory(db: Database, storage: RoomStorage) -> None:
    room = await Room.create(storage)
    await _join(room, ALICE, "Alice")
    await _join(room, BOB, "Bobby Tables")
    await room.add("m.room.join_rules", {"join_rule": "public"}, state_key="")
    await db.execute("DROP TABLE user_directory")
    await db.execute("DROP TABLE user_directory_public_rooms")
    await db.execute("DELETE FROM schema_migrations WHERE version = 611")
    await migrate(db)
    store = UserDirectoryStore(db)
    assert await _found(store, "@someone:else.example", "tables") == [BOB]
