"""Partial-state joins, joining side: the resync's durable progress, and rewriting the state of events
persisted while a room's state was partial.

A room joined with ``members_omitted`` (MSC3706) has one row in ``partial_state_rooms`` from the commit of
the join until forever (completion sets ``completed_ts``; the row stays for the operator's view), and its
``servers_in_room`` in ``partial_state_servers``. The resync keeps its progress here so that a restart
resumes: the state ids at the join once a server answered them, and the attempts with the last error.
Events it fetches are persisted (outliers) as they arrive, so a restart does not fetch them again.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ranvier.protocol.events import Pdu, StateKey

from ...clock import now_ms
from .aux_streams import dump_json, load_json
from .engine import Database, Txn, chunks, in_list
from .state_groups import StateGroupWriter
from .user_directory import update_from_persisted


@dataclass(frozen=True, slots=True)
class PartialStateRoom:
    room_id: str
    join_event_id: str
    joined_via: str
    created_ts: int
    has_state_ids: bool
    attempts: int
    last_error: str | None
    last_attempt_ts: int | None
    next_attempt_ts: int | None
    completed_ts: int | None
    completed_stream: int | None

    @property
    def complete(self) -> bool:
        return self.completed_ts is not None


@dataclass(frozen=True, slots=True)
class StateRewrite:
    """The new state before one event persisted while its room was partial, and whether it now fails
    auth against it (``rejected_reason``; None keeps the event's verdict as it was)."""

    event_id: str
    state_before: Mapping[StateKey, str]
    rejected_reason: str | None = None
    # It passes against the state before it but not against the room's current state of the time it
    # arrived, once both are known in full (S2S "Soft failure"): no longer live, as if soft-failed then.
    soft_failed: bool = False


_COLUMNS = (
    "room_id, join_event_id, joined_via, created_ts, state_ids_json IS NOT NULL, attempts, last_error,"
    " last_attempt_ts, next_attempt_ts, completed_ts, completed_stream"
)


def _row(r: Sequence[Any]) -> PartialStateRoom:
    def opt(v: Any) -> int | None:
        return None if v is None else int(v)

    return PartialStateRoom(
        r[0], r[1], r[2], int(r[3]), bool(r[4]), int(r[5]), r[6], opt(r[7]), opt(r[8]), opt(r[9]), opt(r[10])
    )


class PartialStateStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        # Rooms known partial (a fast path for the intake, /sync and the sender; cleared on completion).
        self._partial: set[str] | None = None
        # Rooms another process may have joined or completed since (``forget``): read again when asked.
        self._unsure: set[str] = set()
        self._loading = False
        self._generation = 0

    async def start_txn(
        self, txn: Txn, room_id: str, join_event_id: str, joined_via: str, servers: Iterable[str]
    ) -> None:
        """Inside the join's persist transaction: the room is partial from the commit of the join on."""
        await txn.execute(
            "INSERT INTO partial_state_rooms (room_id, join_event_id, joined_via, created_ts)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (room_id) DO UPDATE SET join_event_id = excluded.join_event_id,"
            " joined_via = excluded.joined_via, created_ts = excluded.created_ts, state_ids_json = NULL,"
            " attempts = 0, last_error = NULL, last_attempt_ts = NULL, next_attempt_ts = NULL,"
            " completed_ts = NULL, completed_stream = NULL, joined_members_hint = NULL,"
            " joined_members_base = NULL",
            (room_id, join_event_id, joined_via, now_ms()),
        )
        await txn.execute("DELETE FROM partial_state_servers WHERE room_id = ?", (room_id,))
        await txn.executemany(
            "INSERT INTO partial_state_servers (room_id, server_name) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(room_id, s) for s in dict.fromkeys(servers)],
        )
        await txn.execute("UPDATE rooms SET partial_state = TRUE WHERE room_id = ?", (room_id,))

    def published_start(self, room_id: str) -> None:
        """After the join's commit: let the in-memory set know."""
        if self._partial is not None:
            self._partial.add(room_id)

    def forget(self, room_id: str | None) -> None:
        """Another process changed ``room_id`` (None: any room, news may have been lost): its partial
        flag is read from the database again when next asked (ranvier.workers)."""
        if room_id is None:
            self._partial = None
            self._unsure.clear()
            self._generation += 1
        elif self._partial is not None or self._loading:
            self._unsure.add(room_id)

    async def _load_partial(self) -> set[str]:
        while self._partial is None:
            generation = self._generation
            self._loading = True
            try:
                rows = await self._db.fetchall(
                    "SELECT room_id FROM partial_state_rooms WHERE completed_ts IS NULL"
                )
            finally:
                self._loading = False
            if generation == self._generation:  # else everything was forgotten meanwhile: read again
                self._partial = {r[0] for r in rows}
        known = self._partial
        if self._unsure:
            rooms = list(self._unsure)
            self._unsure.difference_update(rooms)
            partial: set[str] = set()
            for part in chunks(rooms):
                rows = await self._db.fetchall(
                    "SELECT room_id FROM partial_state_rooms WHERE completed_ts IS NULL"
                    f" AND room_id IN ({in_list(len(part))})",
                    tuple(part),
                )
                partial.update(r[0] for r in rows)
            if known is self._partial:
                # A room forgotten again while this was read stays unsure (read at the next question).
                for room_id in rooms:
                    if room_id in self._unsure:
                        continue
                    if room_id in partial:
                        known.add(room_id)
                    else:
                        known.discard(room_id)
            else:
                return await self._load_partial()
        return known

    async def is_partial(self, room_id: str) -> bool:
        return room_id in await self._load_partial()

    async def partial_among(self, room_ids: Iterable[str]) -> set[str]:
        partial = await self._load_partial()
        return {r for r in room_ids if r in partial}

    async def get(self, room_id: str) -> PartialStateRoom | None:
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM partial_state_rooms WHERE room_id = ?", (room_id,)
        )
        return None if row is None else _row(row)

    async def list_rooms(self, include_completed: bool = False) -> list[PartialStateRoom]:
        where = "" if include_completed else " WHERE completed_ts IS NULL"
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM partial_state_rooms{where} ORDER BY created_ts"
        )
        return [_row(r) for r in rows]

    async def servers(self, room_id: str) -> list[str]:
        rows = await self._db.fetchall(
            "SELECT server_name FROM partial_state_servers WHERE room_id = ? ORDER BY server_name", (room_id,)
        )
        return [r[0] for r in rows]

    async def servers_txn(self, txn: Txn, room_id: str) -> set[str]:
        """The room's servers_in_room while it is partial (empty once complete), as ``txn`` sees them."""
        rows = await txn.fetchall(
            "SELECT s.server_name FROM partial_state_servers s JOIN partial_state_rooms r"
            " ON r.room_id = s.room_id WHERE s.room_id = ? AND r.completed_ts IS NULL",
            (room_id,),
        )
        return {r[0] for r in rows}

    async def save_state_ids(
        self, room_id: str, pdu_ids: Sequence[str], auth_chain_ids: Sequence[str]
    ) -> None:
        """Keep a /state_ids answer at the join (the state before it and its auth chain)."""
        value = dump_json({"pdu_ids": list(pdu_ids), "auth_chain_ids": list(auth_chain_ids)})
        await self._db.execute(
            "UPDATE partial_state_rooms SET state_ids_json = ? WHERE room_id = ?", (value, room_id)
        )

    async def get_state_ids(self, room_id: str) -> tuple[list[str], list[str]] | None:
        raw = await self._db.fetchval(
            "SELECT state_ids_json FROM partial_state_rooms WHERE room_id = ?", (room_id,)
        )
        if raw is None:
            return None
        saved = load_json(raw)
        return list(saved["pdu_ids"]), list(saved["auth_chain_ids"])

    async def save_joined_count_hint(self, room_id: str, joined: int, held: int) -> None:
        """The room's joined member count as a server told it while the room is partial, and the count
        of joined members we held then (``held``)."""
        await self._db.execute(
            "UPDATE partial_state_rooms SET joined_members_hint = ?, joined_members_base = ?"
            " WHERE room_id = ? AND completed_ts IS NULL",
            (joined, held, room_id),
        )

    async def estimate_joined_count(self, room_id: str, held: int) -> int:
        """While ``room_id`` is partial: its joined member count, from the count a server told us and the
        change since in the members we hold (``held`` now); ``held`` itself when no server told one. (A
        member we never knew of who leaves meanwhile is still counted: his leave changes nothing held.)"""
        row = await self._db.fetchone(
            "SELECT joined_members_hint, joined_members_base FROM partial_state_rooms"
            " WHERE room_id = ? AND completed_ts IS NULL",
            (room_id,),
        )
        if row is None or row[0] is None or row[1] is None:
            return held
        return max(held, int(row[0]) + held - int(row[1]))

    async def record_failure(self, room_id: str, error: str, next_attempt_ts: int) -> None:
        await self._db.execute(
            "UPDATE partial_state_rooms SET attempts = attempts + 1, last_error = ?, last_attempt_ts = ?,"
            " next_attempt_ts = ? WHERE room_id = ?",
            (error[:2000], now_ms(), next_attempt_ts, room_id),
        )

    async def complete_txn(
        self,
        txn: Txn,
        room_id: str,
        stream: int,
        joined_members: Sequence[Pdu] = (),
        note: str | None = None,
    ) -> None:
        """In the rewrite's transaction: the room is complete. ``joined_members``: the join events of the
        full state, whose profiles go into the user directory (they were persisted as outliers, which the
        directory does not index). ``note``: for the operator (kept as the room's last error), e.g. that
        our join was rejected against the full state."""
        await update_from_persisted(txn, room_id, [(p, stream) for p in joined_members])
        await txn.execute(
            "UPDATE partial_state_rooms SET completed_ts = ?, completed_stream = ?, next_attempt_ts = NULL,"
            " last_error = COALESCE(?, last_error) WHERE room_id = ?",
            (now_ms(), stream, note, room_id),
        )
        await txn.execute("UPDATE rooms SET partial_state = FALSE WHERE room_id = ?", (room_id,))

    def published_complete(self, room_id: str) -> None:
        if self._partial is not None:
            self._partial.discard(room_id)

    async def completed_between(self, room_ids: Collection[str], after: int, upto: int) -> set[str]:
        """The rooms of ``room_ids`` whose resync completed at a stream position in (after, upto]."""
        out: set[str] = set()
        for part in chunks(list(room_ids)):
            rows = await self._db.fetchall(
                f"SELECT room_id FROM partial_state_rooms WHERE room_id IN ({in_list(len(part))})"
                " AND completed_stream > ? AND completed_stream <= ?",
                (*part, after, upto),
            )
            out.update(r[0] for r in rows)
        return out

    async def left_at_completion(self, user_id: str, after: int, upto: int) -> set[str]:
        """The rooms whose resync completed at a stream position in (after, upto] with ``user_id``'s join
        rejected against the full state: left then, whatever the full state holds of the user."""
        rows = await self._db.fetchall(
            "SELECT p.room_id FROM partial_state_rooms p JOIN events e ON e.event_id = p.join_event_id"
            " WHERE e.sender = ? AND e.rejected_reason IS NOT NULL AND p.completed_stream > ?"
            " AND p.completed_stream <= ?",
            (user_id, after, upto),
        )
        return {r[0] for r in rows}

    async def events_since_join(self, room_id: str, join_event_id: str) -> list[tuple[str, bool, bool]]:
        """The non-outlier events of the room persisted from our join on, in stream order (parents
        first), each with whether it is rejected and whether it is soft-failed: those whose state was
        computed from partial state."""
        rows = await self._db.fetchall(
            "SELECT e.event_id, e.rejected_reason IS NOT NULL, e.soft_failed FROM events e"
            " WHERE e.room_id = ? AND e.outlier = FALSE AND e.stream_ordering >= (SELECT stream_ordering"
            " FROM events WHERE event_id = ?) ORDER BY e.stream_ordering",
            (room_id, join_event_id),
        )
        return [(r[0], bool(r[1]), bool(r[2])) for r in rows]


async def max_completed_stream(txn: Txn) -> int:
    """The greatest stream position a completion took (the stream's counter starts above it)."""
    return int(await txn.fetchval("SELECT COALESCE(MAX(completed_stream), 0) FROM partial_state_rooms") or 0)


async def rewrite_event_states(
    txn: Txn, writer: StateGroupWriter, room_id: str, rewrites: Sequence[StateRewrite]
) -> list[str]:
    """Give each event its new state before (and after), in order; mark the newly rejected ones rejected
    and the newly soft-failed ones soft-failed, and take both out of the forward extremities. Returns the
    ids of the events no longer live."""
    old: dict[str, tuple[int | None, str | None, str | None]] = {}
    ids = [r.event_id for r in rewrites]
    for part in chunks(ids):
        rows = await txn.fetchall(
            "SELECT event_id, state_before_group, type, state_key FROM events"
            f" WHERE event_id IN ({in_list(len(part))})",
            tuple(part),
        )
        old.update({r[0]: (None if r[1] is None else int(r[1]), r[2], r[3]) for r in rows})
    updates: list[tuple[int, int, str | None, bool, str]] = []
    rejected: list[str] = []
    for rw in rewrites:
        group, etype, skey = old[rw.event_id]
        before = await writer.group_for(rw.state_before, [] if group is None else [group])
        if rw.rejected_reason is not None or skey is None or etype is None:
            after = before
        else:
            after = await writer.group_with(before, (etype, skey), rw.event_id)
        updates.append((before, after, rw.rejected_reason, rw.soft_failed, rw.event_id))
        if rw.rejected_reason is not None or rw.soft_failed:
            rejected.append(rw.event_id)
    await writer.flush()
    await txn.executemany(
        "UPDATE events SET state_before_group = ?, state_after_group = ?,"
        " rejected_reason = COALESCE(?, rejected_reason), soft_failed = (soft_failed OR ?)"
        " WHERE event_id = ?",
        updates,
    )
    if rejected:
        await _drop_extremities(txn, room_id, rejected)
    return rejected


async def _drop_extremities(txn: Txn, room_id: str, rejected: list[str]) -> None:
    """A rejected or soft-failed event is no forward extremity; its live parents without another live
    child become ones."""
    await txn.executemany(
        "DELETE FROM forward_extremities WHERE room_id = ? AND event_id = ?", [(room_id, e) for e in rejected]
    )
    parents: set[str] = set()
    for part in chunks(rejected):
        rows = await txn.fetchall(
            f"SELECT prev_event_id FROM event_edges WHERE event_id IN ({in_list(len(part))})", tuple(part)
        )
        parents.update(r[0] for r in rows)
    for parent in sorted(parents):
        live_parent = await txn.fetchval(
            "SELECT 1 FROM events WHERE event_id = ? AND outlier = FALSE AND rejected_reason IS NULL"
            " AND soft_failed = FALSE",
            (parent,),
        )
        live_child = await txn.fetchval(
            "SELECT 1 FROM event_edges g JOIN events e ON e.event_id = g.event_id WHERE g.prev_event_id = ?"
            " AND e.outlier = FALSE AND e.rejected_reason IS NULL AND e.soft_failed = FALSE",
            (parent,),
        )
        if live_parent is not None and live_child is None:
            await txn.execute(
                "INSERT INTO forward_extremities (room_id, event_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (room_id, parent),
            )
