"""The relations table on both databases: rows written at persist time (malformed relationships left out),
the migration's backfill of events stored before it agreeing with them, pagination with ``recurse``, thread
summaries and the thread an event belongs to."""

from __future__ import annotations

from typing import Any

from ranvier.protocol.relations import relation_of
from ranvier.storage.interfaces import EventToPersist
from ranvier.storage.sql import RoomStorage
from ranvier.storage.sql.migrate import load_migrations, split_statements
from ranvier.storage.sql.relations import RelationStore
from tests.storage.conftest import ALICE, Dag, db, db_spec, raw_db, storage  # noqa: F401
from tests.storage.test_events import new_room

BOB = "@bob:example.org"


def rel(rel_type: str, parent: str, **extra: Any) -> dict[str, Any]:
    return {"body": "x", "m.relates_to": {"rel_type": rel_type, "event_id": parent, **extra}}


async def _rows(storage: RoomStorage) -> set[tuple[Any, ...]]:  # noqa: F811
    return {
        tuple(r)
        for r in await storage.db.fetchall(
            "SELECT event_id, room_id, relates_to_id, rel_type, aggregation_key FROM event_relations"
        )
    }


async def _room_with_relations(storage: RoomStorage) -> Dag:  # noqa: F811
    dag, state = await new_room(storage)
    root = dag.add("root", ["create"]).event_id
    dag.add("t1", ["root"], content=rel("m.thread", root), sender=BOB)
    dag.add("t2", ["t1"], content=rel("m.thread", root))
    dag.add("react", ["t2"], content=rel("m.annotation", dag.id("t1"), key="👍"), etype="m.reaction")
    dag.add("edit", ["react"], content={**rel("m.replace", root), "m.new_content": {"body": "y"}})
    # Malformed relationships: no rel_type, a non-string parent, an annotation without a key, NUL.
    dag.add("bad1", ["edit"], content={"m.relates_to": {"event_id": root}})
    dag.add("bad2", ["bad1"], content={"m.relates_to": {"rel_type": "m.thread", "event_id": 7}})
    dag.add("bad3", ["bad2"], content=rel("m.annotation", root), etype="m.reaction")
    dag.add("bad4", ["bad3"], content=rel("m.reference", "$a\x00b"))
    dag.add("ref", ["bad4"], content=rel("m.reference", root))
    names = ["root", "t1", "t2", "react", "edit", "bad1", "bad2", "bad3", "bad4", "ref"]
    await storage.events.persist_events(
        dag.room_id, [EventToPersist(dag.by_name[n], state_before=state) for n in names]
    )
    return dag


async def test_rows_at_persist_and_the_migration_backfill_agree(storage: RoomStorage) -> None:  # noqa: F811
    dag = await _room_with_relations(storage)
    written = await _rows(storage)
    root = dag.id("root")
    assert written == {
        (dag.id("t1"), dag.room_id, root, "m.thread", None),
        (dag.id("t2"), dag.room_id, root, "m.thread", None),
        (dag.id("react"), dag.room_id, dag.id("t1"), "m.annotation", "👍"),
        (dag.id("edit"), dag.room_id, root, "m.replace", None),
        (dag.id("ref"), dag.room_id, root, "m.reference", None),
    }
    assert relation_of(dag.by_name["bad3"].content) is None
    # The backfill of migration 601 over the same events (as if they predated 600) finds the same rows.
    await storage.db.execute("DELETE FROM event_relations")
    backfill = [m for m in load_migrations(storage.db.dialect) if m.version == 601]
    assert len(backfill) == 1
    async with storage.db.transaction() as txn:
        for statement in split_statements(backfill[0].sql):
            await txn.execute(statement)
    assert await _rows(storage) == written


async def test_children_pages_recurse_threads(storage: RoomStorage) -> None:  # noqa: F811
    dag = await _room_with_relations(storage)
    store = RelationStore(storage.db)
    root = dag.id("root")

    async def page(**kw: Any) -> tuple[list[str], Any]:
        args: dict[str, Any] = dict(
            rel_type=None, event_type=None, from_token=None, to_token=None, direction="b", limit=10, depth=1
        )
        args.update(kw)
        return await store.children(dag.room_id, root, **args)

    direct = [dag.id(n) for n in ("ref", "edit", "t2", "t1")]
    assert await page() == (direct, None)
    assert (await page(direction="f"))[0] == list(reversed(direct))
    # Two at a time, backwards: the token moves on and the pages cover everything once.
    first, token = await page(limit=2)
    second, token2 = await page(limit=2, from_token=token)
    assert first + second == direct and token2 is None
    # The reaction relates to t1, not to the root: only with recursion, and not through a filter on m.thread.
    assert dag.id("react") in (await page(depth=3))[0]
    assert dag.id("react") not in (await page(depth=3, rel_type="m.thread"))[0]
    assert (await page(rel_type="m.thread", event_type="m.room.message"))[0] == [dag.id("t2"), dag.id("t1")]
    assert (await page(ignored={BOB}))[0] == [dag.id(n) for n in ("ref", "edit", "t2")]

    summaries = await store.thread_summaries(dag.room_id, [root, dag.id("t1")], BOB)
    assert set(summaries) == {root}
    assert (summaries[root].count, summaries[root].latest_event_id) == (2, dag.id("t2"))
    assert summaries[root].user_participated
    assert not (await store.thread_summaries(dag.room_id, [root], "@carol:example.org"))[
        root
    ].user_participated
    # The reaction to a thread reply is in the thread; the root and the edit of the root are not.
    assert await store.thread_of(dag.id("react")) == root
    assert await store.thread_of(dag.id("t2")) == root
    assert await store.thread_of(root) is None
    assert await store.thread_of(dag.id("edit")) is None

    roots, token = await store.thread_roots(dag.room_id, participant=None, from_token=None, limit=5)
    assert [r.event_id for r in roots] == [root] and token is None
    mine, _ = await store.thread_roots(
        dag.room_id, participant="@carol:example.org", from_token=None, limit=5
    )
    assert mine == []
    assert ALICE  # the root's sender participates without replying
    theirs, _ = await store.thread_roots(dag.room_id, participant=ALICE, from_token=None, limit=5)
    assert [r.event_id for r in theirs] == [root]

    # A redacted child drops out of everything.
    redaction = dag.add("redact-t2", ["ref"], etype="m.room.redaction", redacts=dag.id("t2"), content={})
    state = {("m.room.create", ""): dag.id("create")}
    await storage.events.persist_events(dag.room_id, [EventToPersist(redaction, state_before=state)])
    summaries = await store.thread_summaries(dag.room_id, [root], BOB)
    assert (summaries[root].count, summaries[root].latest_event_id) == (1, dag.id("t1"))
    assert dag.id("t2") not in (await page())[0]


async def test_bundle_queries_and_send_checks(storage: RoomStorage) -> None:  # noqa: F811
    """The queries behind bundled aggregations and the send-time checks, on both databases."""
    dag = await _room_with_relations(storage)
    store = RelationStore(storage.db)
    root, t1 = dag.id("root"), dag.id("t1")
    assert await store.has_aggregated_children(dag.room_id, [root, t1, dag.id("t2")]) == {root}
    assert await store.has_aggregated_children("!elsewhere:example.org", [root]) == set()
    rows = await store.edits_and_references(dag.room_id, [root])
    assert [(r.rel_type, r.event_id, r.sender) for r in rows] == [
        ("m.replace", dag.id("edit"), ALICE),
        ("m.reference", dag.id("ref"), ALICE),
    ]
    assert await store.edits_and_references(dag.room_id, [root], ignored={ALICE}) == []
    assert await store.rel_type_of(t1) == "m.thread"
    assert await store.rel_type_of(root) is None
    assert await store.annotation_exists(dag.room_id, t1, ALICE, "m.reaction", "👍")
    assert not await store.annotation_exists(dag.room_id, t1, BOB, "m.reaction", "👍")
    assert not await store.annotation_exists(dag.room_id, t1, ALICE, "m.reaction", "👎")
