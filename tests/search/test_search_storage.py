"""The full-text index and its queries on SQLite (FTS5) and PostgreSQL (tsvector): what is indexed at
persist time, prefixes, stemming, phrases, exclusion and OR, both orders and their pagination, the scope
(rooms, senders, types), membership bounds, redaction, and the migration's backfill of existing events."""

from __future__ import annotations

from typing import Any

from ranvier.search.terms import parse_search_term
from ranvier.storage.interfaces import EventToPersist, StateDelta
from ranvier.storage.sql import RoomStorage
from ranvier.storage.sql.engine import Database
from ranvier.storage.sql.migrate import migrate
from ranvier.storage.sql.search import SearchScope, SearchStore
from tests.storage.conftest import ALICE, Dag

BOB = "@bob:example.org"
CAROL = "@carol:remote.example"


class Room:
    """A room whose events are persisted one after the other, each on the previous one, with the
    membership kept in current state."""

    def __init__(self, storage: RoomStorage, dag: Dag) -> None:
        self.storage = storage
        self.dag = dag
        self.state: dict[tuple[str, str], str] = {}
        self.last: str | None = None
        self.n = 0

    @classmethod
    async def create(cls, storage: RoomStorage) -> Room:
        room = cls(storage, Dag())
        await storage.rooms.store_room(room.dag.room_id, "11", ALICE)
        await room.add("m.room.create", {"room_version": "11"}, state_key="")
        return room

    async def add(
        self,
        etype: str,
        content: dict[str, Any],
        *,
        state_key: str | None = None,
        sender: str = ALICE,
        **kw: Any,
    ) -> str:
        self.n += 1
        pdu = self.dag.add(
            f"e{self.n}",
            [self.last] if self.last else [],
            etype=etype,
            content=content,
            state_key=state_key,
            sender=sender,
            **kw,
        )
        delta = StateDelta(changed={(etype, state_key): pdu.event_id}) if state_key is not None else None
        await self.storage.events.persist_events(
            self.dag.room_id, [EventToPersist(pdu, state_before=dict(self.state))], new_current_state=delta
        )
        if state_key is not None:
            self.state[(etype, state_key)] = pdu.event_id
        self.last = f"e{self.n}"
        return pdu.event_id

    async def say(self, body: str, sender: str = ALICE) -> str:
        return await self.add("m.room.message", {"msgtype": "m.text", "body": body}, sender=sender)

    async def member(self, user: str, membership: str) -> str:
        return await self.add("m.room.member", {"membership": membership}, state_key=user, sender=user)


def _search(storage: RoomStorage) -> SearchStore:
    return SearchStore(storage.db)


async def _ids(store: SearchStore, term: str, user: str = ALICE, **kw: Any) -> list[str]:
    scope = kw.pop("scope", SearchScope())
    order = kw.pop("order", "recent")
    hits = await store.search(user, parse_search_term(term), scope, order, kw.pop("limit", 50), **kw)
    return [h.event_id for h in hits]


async def test_words_prefixes_stems_phrases_and_exclusion(storage: RoomStorage) -> None:
    room = await Room.create(storage)
    await room.member(ALICE, "join")
    martians = await room.say("The martians are coming")
    running = await room.say("Alice was running through the fields")
    both = await room.say("martians running around")
    await room.say("nothing to see here")
    name = await room.add("m.room.name", {"name": "Martian embassy"}, state_key="")
    topic = await room.add(
        "m.room.topic",
        {"topic": "Weekly sync", "m.topic": {"m.text": [{"mimetype": "text/html", "body": "<b>x</b>"},
                                                       {"body": "Weekly sync about rockets"}]}},
        state_key="",
    )  # fmt: skip
    store = _search(storage)
    assert set(await _ids(store, "martian")) == {martians, both, name}
    assert set(await _ids(store, "MART")) == {martians, both, name}  # a prefix, any case
    assert set(await _ids(store, "runs")) == {running, both}  # stemmed: runs ~ running
    assert await _ids(store, '"martians running"') == [both]
    assert await _ids(store, '"running martians"') == []
    assert await _ids(store, "martians -running", scope=SearchScope(types=["m.room.message"])) == [martians]
    assert set(await _ids(store, "fields or embassy")) == {running, name}
    assert await _ids(store, "rockets") == [topic]  # from m.topic's text/plain body
    assert await _ids(store, "") == []
    assert await _ids(store, "zebra") == []
    # Newest first.
    assert await _ids(store, "martians", scope=SearchScope(types=["m.room.message"])) == [both, martians]
    assert await store.count(ALICE, parse_search_term("martian"), SearchScope()) == 3


async def test_rank_order_and_pagination(storage: RoomStorage) -> None:
    room = await Room.create(storage)
    await room.member(ALICE, "join")
    weak = await room.say("apple " + "filler words here " * 20)
    strong = await room.say("apple apple apple")
    ids = [await room.say(f"pear number {i}") for i in range(7)]
    store = _search(storage)
    hits = await store.search(ALICE, parse_search_term("apple"), SearchScope(), "rank", 10)
    assert [h.event_id for h in hits] == [strong, weak]
    assert hits[0].rank > hits[1].rank
    # rank: by offset; recent: below the last stream ordering seen.
    page1 = await _ids(store, "pear", order="rank", limit=3)
    page2 = await _ids(store, "pear", order="rank", limit=3, offset=3)
    page3 = await _ids(store, "pear", order="rank", limit=3, offset=6)
    assert sorted(page1 + page2 + page3) == sorted(ids) and len(page3) == 1
    first = await store.search(ALICE, parse_search_term("pear"), SearchScope(), "recent", 4)
    rest = await _ids(store, "pear", limit=10, before_stream=first[-1].stream_ordering)
    assert [h.event_id for h in first] + rest == list(reversed(ids))


async def test_scope_membership_and_redaction(storage: RoomStorage) -> None:
    room = await Room.create(storage)
    other = await Room.create(storage)
    await room.member(ALICE, "join")
    await room.member(BOB, "join")
    await other.member(CAROL, "join")
    by_alice = await room.say("hello from alice")
    by_bob = await room.say("hello from bob", sender=BOB)
    await other.say("hello from carol", sender=CAROL)
    store = _search(storage)
    # Only rooms the user has a membership in.
    assert set(await _ids(store, "hello")) == {by_alice, by_bob}
    assert await _ids(store, "hello", user="@nobody:example.org") == []
    assert await _ids(store, "hello", scope=SearchScope(senders=[BOB])) == [by_bob]
    assert await _ids(store, "hello", scope=SearchScope(not_senders=[BOB])) == [by_alice]
    assert await _ids(store, "hello", scope=SearchScope(rooms=[other.dag.room_id])) == []
    assert await _ids(store, "hello", scope=SearchScope(not_rooms=[room.dag.room_id])) == []
    assert await _ids(store, "hello", scope=SearchScope(types=["m.room.name"])) == []
    assert await _ids(store, "hello", scope=SearchScope(sender=ALICE)) == [by_alice]
    # After leaving: nothing sent after the leave.
    await room.member(BOB, "leave")
    later = await room.say("hello again")
    assert await _ids(store, "hello", user=BOB) == [by_bob, by_alice]
    assert later in await _ids(store, "hello")
    # A redaction takes the event out of the index.
    await room.add("m.room.redaction", {"redacts": by_alice}, redacts=by_alice)
    assert await _ids(store, "alice") == []
    assert await store.count(ALICE, parse_search_term("hello"), SearchScope()) == 2


async def test_rejected_and_soft_failed_events_are_not_indexed(storage: RoomStorage) -> None:
    room = await Room.create(storage)
    await room.member(ALICE, "join")
    state = dict(room.state)
    rejected = room.dag.add("r", [room.last], content={"body": "secret rejected"})
    soft = room.dag.add("s", [room.last], content={"body": "secret soft"})
    await storage.events.persist_events(
        room.dag.room_id,
        [
            EventToPersist(rejected, state_before=state, rejected_reason="auth"),
            EventToPersist(soft, state_before=state, soft_failed=True),
        ],
    )
    assert await _ids(_search(storage), "secret") == []


async def test_migration_indexes_existing_events(db: Database, storage: RoomStorage) -> None:
    room = await Room.create(storage)
    await room.member(ALICE, "join")
    old = await room.say("archived message about zeppelins")
    named = await room.add("m.room.name", {"name": "Zeppelin club"}, state_key="")
    redacted = await room.say("zeppelins redacted")
    await room.add("m.room.redaction", {"redacts": redacted}, redacts=redacted)
    # As if the database predated migration 610: no index, the migration not applied.
    await db.execute("DROP TABLE event_search")
    await db.execute("DELETE FROM schema_migrations WHERE version = 610")
    await migrate(db)
    assert set(await _ids(_search(storage), "zeppelin")) == {old, named}
