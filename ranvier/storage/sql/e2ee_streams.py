"""The E2EE streams (migration 200): the device list stream, the to-device inbox, and the cache of remote
users' device lists fed by ``m.device_list_update`` EDUs and resyncs.

Both streams take positions from ``aux_stream_positions`` inside the writing transaction (see
aux_streams.py), so positions are commit-ordered and a reader bounded by a position it read never skips
a row committed later.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ...clock import now_ms
from .aux_streams import current_stream_pos, dump_json, load_json, next_stream_pos
from .engine import Database, Txn, chunks, in_list

DEVICE_LISTS = "device_lists"
TO_DEVICE = "to_device"
# How long transaction ids of sendToDevice and message ids of m.direct_to_device are remembered.
DEDUP_LIFETIME_MS = 7 * 24 * 3600 * 1000


async def record_device_list_change(txn: Txn, user_ids: Sequence[str]) -> int:
    """Append the users to the device list stream; returns the last position used."""
    pos = 0
    for user_id in user_ids:
        pos = await next_stream_pos(txn, DEVICE_LISTS)
        await txn.execute(
            "INSERT INTO device_list_changes (stream_pos, user_id) VALUES (?, ?)", (pos, user_id)
        )
    return pos


@dataclass(frozen=True, slots=True)
class ToDeviceMessage:
    """One message for one local device: what /sync shows in ``to_device.events``."""

    user_id: str
    device_id: str
    content: dict[str, Any]  # {"type", "sender", "content"}


@dataclass(frozen=True, slots=True)
class RemoteDevice:
    device_id: str
    display_name: str | None
    keys: dict[str, Any] | None


class DeviceListStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def max_position(self) -> int:
        return await current_stream_pos(self._db, DEVICE_LISTS)

    async def record_change(self, user_ids: Sequence[str]) -> int:
        async with self._db.transaction() as txn:
            return await record_device_list_change(txn, user_ids)

    async def changed_between(self, since: int, upto: int) -> set[str]:
        """Users with a change at a position in ``(since, upto]``."""
        if upto <= since:
            return set()
        rows = await self._db.fetchall(
            "SELECT DISTINCT user_id FROM device_list_changes WHERE stream_pos > ? AND stream_pos <= ?",
            (since, upto),
        )
        return {r[0] for r in rows}

    async def last_change_before(self, user_id: str, pos: int) -> int | None:
        """The user's latest change position below ``pos`` (the prev_id of an update at ``pos``)."""
        value = await self._db.fetchval(
            "SELECT MAX(stream_pos) FROM device_list_changes WHERE user_id = ? AND stream_pos < ?",
            (user_id, pos),
        )
        return int(value) if value is not None else None

    async def last_change(self, user_id: str) -> int:
        value = await self._db.fetchval(
            "SELECT MAX(stream_pos) FROM device_list_changes WHERE user_id = ?", (user_id,)
        )
        return int(value) if value is not None else 0

    async def next_outbound_id(self, user_id: str) -> tuple[int, int | None]:
        """(stream_id, prev_id) for the next ``m.device_list_update`` about a local user: ids grow, and
        each one's prev_id is the one sent before it."""
        async with self._db.transaction() as txn:
            last = await txn.fetchval(
                "SELECT stream_id FROM device_list_outbound_last WHERE user_id = ?", (user_id,)
            )
            # From the device list stream's counter: above every change recorded so far, so a change
            # recorded later (and maybe never sent) is always above it (see users_with_unsent_changes).
            stream_id = await next_stream_pos(txn, DEVICE_LISTS)
            await txn.execute(
                "INSERT INTO device_list_outbound_last (user_id, stream_id) VALUES (?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id",
                (user_id, stream_id),
            )
        return stream_id, int(last) if last is not None else None

    async def users_with_unsent_changes(self) -> list[str]:
        """Users (local and remote; the caller picks the local ones) with a device list change after the
        last m.device_list_update sent about them: a crash came between the change and the EDU."""
        rows = await self._db.fetchall(
            "SELECT c.user_id FROM device_list_changes c"
            " LEFT JOIN device_list_outbound_last o ON o.user_id = c.user_id"
            " GROUP BY c.user_id, o.stream_id HAVING MAX(c.stream_pos) > COALESCE(o.stream_id, 0)"
        )
        return sorted(r[0] for r in rows)

    async def last_outbound_id(self, user_id: str) -> int:
        value = await self._db.fetchval(
            "SELECT stream_id FROM device_list_outbound_last WHERE user_id = ?", (user_id,)
        )
        return int(value) if value is not None else 0

    # -- who shares a room, read from the membership index (current state) -------------------------

    async def users_sharing_rooms(self, user_id: str) -> set[str]:
        """The users joined to a room the user is joined to (one query, whatever the number of rooms)."""
        rows = await self._db.fetchall(
            "SELECT DISTINCT user_id FROM room_memberships WHERE membership = 'join' AND room_id IN"
            " (SELECT room_id FROM room_memberships WHERE user_id = ? AND membership = 'join')",
            (user_id,),
        )
        return {r[0] for r in rows}

    async def servers_sharing_rooms(self, user_id: str) -> set[str]:
        # The rooms' per-server counts (room_server_members): a row per room and server, none per member.
        rows = await self._db.fetchall(
            "SELECT DISTINCT server_name FROM room_server_members WHERE joined > 0 AND room_id IN"
            " (SELECT room_id FROM room_memberships WHERE user_id = ? AND membership = 'join')",
            (user_id,),
        )
        return {r[0] for r in rows}

    async def shares_room_with_server(self, user_id: str, server_name: str) -> bool:
        """Whether the user is joined to a room that a user of ``server_name`` is joined to."""
        row = await self._db.fetchone(
            "SELECT 1 FROM room_server_members WHERE server_name = ? AND joined > 0 AND room_id IN"
            " (SELECT room_id FROM room_memberships WHERE user_id = ? AND membership = 'join') LIMIT 1",
            (server_name, user_id),
        )
        return row is not None

    # -- membership changes, read from the events table ---------------------------------------------

    async def membership_changes(
        self, room_ids: Iterable[str], since: int, upto: int
    ) -> list[tuple[str, str, str]]:
        """(room, user, membership) of the live membership events in the rooms at positions in
        ``(since, upto]``, in stream order."""
        rooms = sorted(set(room_ids))
        if upto <= since:
            return []
        found: list[tuple[int, str, str, str]] = []
        for part in chunks(rooms):
            rows = await self._db.fetchall(
                "SELECT stream_ordering, room_id, state_key, membership FROM events"
                " WHERE type = 'm.room.member' AND NOT outlier AND rejected_reason IS NULL"
                " AND NOT soft_failed AND stream_ordering > ? AND stream_ordering <= ?"
                f" AND room_id IN ({in_list(len(part))})",
                (since, upto, *part),
            )
            found += [(int(r[0]), r[1], r[2], r[3]) for r in rows]
        found.sort()
        return [(room, user, membership) for _, room, user, membership in found]

    # -- remote device lists -------------------------------------------------------------------------

    async def get_remote_list(self, user_id: str) -> tuple[int, bool] | None:
        """(last stream_id applied, stale) of a remote user we cache, else None."""
        row = await self._db.fetchone(
            "SELECT stream_id, stale FROM remote_device_lists WHERE user_id = ?", (user_id,)
        )
        return (int(row[0]), bool(row[1])) if row is not None else None

    async def get_remote_devices(self, user_id: str) -> list[RemoteDevice]:
        rows = await self._db.fetchall(
            "SELECT device_id, display_name, key_json FROM remote_devices WHERE user_id = ?"
            " ORDER BY device_id",
            (user_id,),
        )
        return [RemoteDevice(r[0], r[1], load_json(r[2]) if r[2] is not None else None) for r in rows]

    async def replace_remote_list(
        self, user_id: str, stream_id: int, devices: Sequence[RemoteDevice]
    ) -> None:
        """A full resync: the user's devices are exactly ``devices`` as of ``stream_id``."""
        async with self._db.transaction() as txn:
            await txn.execute("DELETE FROM remote_devices WHERE user_id = ?", (user_id,))
            await txn.executemany(
                "INSERT INTO remote_devices (user_id, device_id, display_name, key_json) VALUES (?, ?, ?, ?)",
                [
                    (user_id, d.device_id, d.display_name, dump_json(d.keys) if d.keys is not None else None)
                    for d in devices
                ],
            )
            await self._set_list_txn(txn, user_id, stream_id, stale=False)
            await txn.execute(
                "INSERT INTO remote_device_list_seen (user_id, stream_id) VALUES (?, ?)"
                " ON CONFLICT DO NOTHING",
                (user_id, stream_id),
            )
            await record_device_list_change(txn, [user_id])

    async def seen_stream_ids(self, user_id: str, stream_ids: Iterable[int]) -> set[int]:
        ids = sorted(set(stream_ids))
        if not ids:
            return set()
        rows = await self._db.fetchall(
            "SELECT stream_id FROM remote_device_list_seen WHERE user_id = ?"
            f" AND stream_id IN ({in_list(len(ids))})",
            (user_id, *ids),
        )
        return {int(r[0]) for r in rows}

    async def apply_remote_update(
        self, user_id: str, stream_id: int, device: RemoteDevice, deleted: bool
    ) -> None:
        """One ``m.device_list_update`` whose prev_ids we have all applied."""
        async with self._db.transaction() as txn:
            if deleted:
                await txn.execute(
                    "DELETE FROM remote_devices WHERE user_id = ? AND device_id = ?",
                    (user_id, device.device_id),
                )
            else:
                await txn.execute(
                    "INSERT INTO remote_devices (user_id, device_id, display_name, key_json)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (user_id, device_id)"
                    " DO UPDATE SET display_name = excluded.display_name, key_json = excluded.key_json",
                    (
                        user_id,
                        device.device_id,
                        device.display_name,
                        dump_json(device.keys) if device.keys is not None else None,
                    ),
                )
            await self._set_list_txn(txn, user_id, stream_id, stale=False)
            await txn.execute(
                "INSERT INTO remote_device_list_seen (user_id, stream_id) VALUES (?, ?)"
                " ON CONFLICT DO NOTHING",
                (user_id, stream_id),
            )
            await record_device_list_change(txn, [user_id])

    async def mark_remote_stale(self, user_id: str) -> None:
        async with self._db.transaction() as txn:
            await txn.execute(
                "INSERT INTO remote_device_lists (user_id, stream_id, stale) VALUES (?, 0, 1)"
                " ON CONFLICT (user_id) DO UPDATE SET stale = 1",
                (user_id,),
            )
            await record_device_list_change(txn, [user_id])

    async def forget_remote(self, user_id: str) -> None:
        """No room is shared with the user any more, so their updates stop coming: whatever is cached
        must be fetched again before it is used (no device list change: nobody here tracks them)."""
        async with self._db.transaction() as txn:
            await txn.execute("UPDATE remote_device_lists SET stale = 1 WHERE user_id = ?", (user_id,))

    async def note_remote_change(self, user_id: str) -> None:
        """A change we learnt of without a device list (e.g. new cross-signing keys)."""
        await self.record_change([user_id])

    @staticmethod
    async def _set_list_txn(txn: Txn, user_id: str, stream_id: int, *, stale: bool) -> None:
        await txn.execute(
            "INSERT INTO remote_device_lists (user_id, stream_id, stale) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id, stale = excluded.stale",
            (user_id, stream_id, 1 if stale else 0),
        )


class ToDeviceStore:
    def __init__(self, db: Database, outbox: Any) -> None:
        self._db = db
        self._outbox = outbox  # OutboxStore: remote messages are queued in the same transaction

    async def max_position(self) -> int:
        return await current_stream_pos(self._db, TO_DEVICE)

    async def send(
        self,
        sender: str,
        sender_device: str,
        txn_id: str,
        local: Sequence[ToDeviceMessage],
        remote: Sequence[tuple[str, dict[str, Any]]],
    ) -> bool:
        """Deliver ``local`` messages to inboxes and queue ``remote`` ((destination, m.direct_to_device
        content) pairs) in the outbox, all in one transaction, once per (sender, device, txn_id). False
        if that transaction id was handled before (nothing is written)."""
        async with self._db.transaction() as txn:
            fresh = await txn.fetchval(
                "INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING RETURNING txn_id",
                (sender, sender_device, txn_id, now_ms()),
            )
            if fresh is None:
                return False
            await self._insert_txn(txn, local)
            for destination, content in remote:
                await self._outbox.enqueue_edu_txn(txn, [destination], "m.direct_to_device", content)
        return True

    async def receive_remote(self, origin: str, message_id: str, local: Sequence[ToDeviceMessage]) -> bool:
        """Deliver the messages of one ``m.direct_to_device`` EDU once per (origin, message_id)."""
        async with self._db.transaction() as txn:
            fresh = await txn.fetchval(
                "INSERT INTO to_device_inbound_ids (origin, message_id, received_ts) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING RETURNING message_id",
                (origin, message_id, now_ms()),
            )
            if fresh is None:
                return False
            await self._insert_txn(txn, local)
        return True

    @staticmethod
    async def _insert_txn(txn: Txn, messages: Sequence[ToDeviceMessage]) -> None:
        for message in messages:
            pos = await next_stream_pos(txn, TO_DEVICE)
            await txn.execute(
                "INSERT INTO to_device_inbox (user_id, device_id, stream_pos, message_json)"
                " VALUES (?, ?, ?, ?)",
                (message.user_id, message.device_id, pos, dump_json(message.content)),
            )

    async def inbox(
        self, user_id: str, device_id: str, since: int, upto: int, limit: int
    ) -> list[tuple[int, dict[str, Any]]]:
        """The device's messages at positions in ``(since, upto]``, oldest first, at most ``limit``."""
        rows = await self._db.fetchall(
            "SELECT stream_pos, message_json FROM to_device_inbox WHERE user_id = ? AND device_id = ?"
            " AND stream_pos > ? AND stream_pos <= ? ORDER BY stream_pos LIMIT ?",
            (user_id, device_id, since, upto, limit),
        )
        return [(int(r[0]), load_json(r[1])) for r in rows]

    async def acknowledge(self, user_id: str, device_id: str, upto: int) -> None:
        """The client has a token past ``upto``: its messages up to there are delivered for good."""
        async with self._db.transaction() as txn:
            await txn.execute(
                "DELETE FROM to_device_inbox WHERE user_id = ? AND device_id = ? AND stream_pos <= ?",
                (user_id, device_id, upto),
            )

    async def expire_dedup(self, older_than_ms: int = DEDUP_LIFETIME_MS) -> None:
        cutoff = now_ms() - older_than_ms
        async with self._db.transaction() as txn:
            await txn.execute("DELETE FROM to_device_txns WHERE created_ts < ?", (cutoff,))
            await txn.execute("DELETE FROM to_device_inbound_ids WHERE received_ts < ?", (cutoff,))
