"""End-to-end encryption keys: device keys, one-time and fallback keys, cross-signing keys and the
signatures uploaded for them (migration 200). Every write that changes what ``/keys/query`` answers for a
user also appends that user to the device list stream (``e2ee_streams.record_device_list_change``) in the
same transaction, so /sync and /keys/changes can never miss it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .aux_streams import dump_json, load_json
from .e2ee_streams import record_device_list_change
from .engine import Database, Txn, chunks, in_list


class KeyConflict(Exception):
    """A one-time key id was uploaded again with different content."""


@dataclass(frozen=True, slots=True)
class OneTimeKey:
    algorithm: str
    key_id: str
    key: Any  # a string (unsigned curve25519) or a signed key object


async def delete_device_e2ee_txn(txn: Txn, user_id: str, device_ids: Sequence[str]) -> None:
    """Inside a device deletion: the devices' keys, signatures of them and their to-device inboxes go too,
    and the user's device list changes (CS "Device Management": deleting a device removes its keys)."""
    if not device_ids:
        return
    for part in chunks(list(device_ids)):
        marks = in_list(len(part))
        for table in ("e2e_device_keys", "e2e_one_time_keys", "e2e_fallback_keys", "to_device_inbox"):
            await txn.execute(
                f"DELETE FROM {table} WHERE user_id = ? AND device_id IN ({marks})", (user_id, *part)
            )
        await txn.execute(
            f"DELETE FROM e2e_signatures WHERE target_user_id = ? AND target_key IN ({marks})",
            (user_id, *part),
        )
    await record_device_list_change(txn, [user_id])


class E2eKeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- device keys ----------------------------------------------------------------------------------

    async def get_device_keys(self, user_id: str, device_id: str) -> dict[str, Any] | None:
        text = await self._db.fetchval(
            "SELECT key_json FROM e2e_device_keys WHERE user_id = ? AND device_id = ?", (user_id, device_id)
        )
        return load_json(text) if text is not None else None

    async def get_devices_with_keys(self, user_ids: Iterable[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """user -> device -> its device keys, for the users' devices that uploaded keys."""
        users = sorted(set(user_ids))
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for part in chunks(users):
            rows = await self._db.fetchall(
                "SELECT k.user_id, k.device_id, k.key_json, d.display_name FROM e2e_device_keys k"
                " JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id"
                f" WHERE k.user_id IN ({in_list(len(part))})",
                tuple(part),
            )
            for user_id, device_id, key_json, display_name in rows:
                keys = load_json(key_json)
                if display_name is not None:
                    keys.setdefault("unsigned", {})["device_display_name"] = display_name
                out.setdefault(user_id, {})[device_id] = keys
        return out

    async def set_device_keys(self, user_id: str, device_id: str, keys: dict[str, Any]) -> bool:
        """Store the device's keys; True (and a device list change) if they differ from what was stored."""
        text = dump_json(keys)
        async with self._db.transaction() as txn:
            old = await txn.fetchval(
                "SELECT key_json FROM e2e_device_keys WHERE user_id = ? AND device_id = ?",
                (user_id, device_id),
            )
            if old is not None and load_json(old) == keys:
                return False
            await txn.execute(
                "INSERT INTO e2e_device_keys (user_id, device_id, key_json) VALUES (?, ?, ?)"
                " ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json",
                (user_id, device_id, text),
            )
            await record_device_list_change(txn, [user_id])
        return True

    # -- one-time and fallback keys -------------------------------------------------------------------

    async def add_one_time_keys(self, user_id: str, device_id: str, keys: Sequence[OneTimeKey]) -> None:
        """Add keys; re-uploading a key id with the same content is a no-op, with other content a
        ``KeyConflict`` (nothing is written then)."""
        if not keys:
            return
        async with self._db.transaction() as txn:
            for key in keys:
                text = dump_json(key.key)
                existing = await txn.fetchval(
                    "SELECT key_json FROM e2e_one_time_keys"
                    " WHERE user_id = ? AND device_id = ? AND algorithm = ? AND key_id = ?",
                    (user_id, device_id, key.algorithm, key.key_id),
                )
                if existing is not None:
                    if load_json(existing) != key.key:
                        raise KeyConflict(f"one-time key {key.algorithm}:{key.key_id} already exists")
                    continue
                await txn.execute(
                    "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (user_id, device_id, key.algorithm, key.key_id, text),
                )

    async def count_one_time_keys(self, user_id: str, device_id: str) -> dict[str, int]:
        rows = await self._db.fetchall(
            "SELECT algorithm, COUNT(*) FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ?"
            " GROUP BY algorithm",
            (user_id, device_id),
        )
        return {r[0]: int(r[1]) for r in rows}

    async def set_fallback_key(self, user_id: str, device_id: str, key: OneTimeKey) -> None:
        """Replace the device's fallback key for the algorithm; the same key again keeps its used flag."""
        text = dump_json(key.key)
        async with self._db.transaction() as txn:
            row = await txn.fetchone(
                "SELECT key_id, key_json FROM e2e_fallback_keys"
                " WHERE user_id = ? AND device_id = ? AND algorithm = ?",
                (user_id, device_id, key.algorithm),
            )
            if row is not None and row[0] == key.key_id and load_json(row[1]) == key.key:
                return
            await txn.execute(
                "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)"
                " VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT (user_id, device_id, algorithm) DO UPDATE"
                " SET key_id = excluded.key_id, key_json = excluded.key_json, used = 0",
                (user_id, device_id, key.algorithm, key.key_id, text),
            )

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        rows = await self._db.fetchall(
            "SELECT algorithm FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ? AND used = 0"
            " ORDER BY algorithm",
            (user_id, device_id),
        )
        return [r[0] for r in rows]

    async def claim_key(self, user_id: str, device_id: str, algorithm: str) -> OneTimeKey | None:
        return (await self.claim_keys([(user_id, device_id, algorithm)])).get((user_id, device_id))

    async def claim_keys(self, wanted: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str], OneTimeKey]:
        """Per (user, device, algorithm): take one one-time key of the algorithm (deleted as it is handed
        out), else the fallback key (marked used, and handed out again until replaced); devices with
        neither are left out. One transaction for the lot. The pick locks its row (PostgreSQL; SQLite has
        one writer), so a concurrent claim takes another key, never the same one."""
        lock = " FOR UPDATE SKIP LOCKED" if self._db.dialect == "postgres" else ""
        out: dict[tuple[str, str], OneTimeKey] = {}
        async with self._db.transaction() as txn:
            for user_id, device_id, algorithm in wanted:
                row = await txn.fetchone(
                    "SELECT key_id FROM e2e_one_time_keys"
                    " WHERE user_id = ? AND device_id = ? AND algorithm = ? ORDER BY key_id LIMIT 1" + lock,
                    (user_id, device_id, algorithm),
                )
                taken = None
                if row is not None:
                    taken = await txn.fetchone(
                        "DELETE FROM e2e_one_time_keys"
                        " WHERE user_id = ? AND device_id = ? AND algorithm = ? AND key_id = ?"
                        " RETURNING key_id, key_json",
                        (user_id, device_id, algorithm, row[0]),
                    )
                if taken is None:
                    taken = await txn.fetchone(
                        "UPDATE e2e_fallback_keys SET used = 1"
                        " WHERE user_id = ? AND device_id = ? AND algorithm = ? RETURNING key_id, key_json",
                        (user_id, device_id, algorithm),
                    )
                if taken is not None:
                    out[(user_id, device_id)] = OneTimeKey(algorithm, taken[0], load_json(taken[1]))
        return out

    # -- cross-signing keys ---------------------------------------------------------------------------

    async def get_cross_signing_keys(self, user_id: str) -> dict[str, dict[str, Any]]:
        """key type (master, self_signing, user_signing) -> the key object as uploaded."""
        rows = await self._db.fetchall(
            "SELECT key_type, key_json FROM e2e_cross_signing_keys WHERE user_id = ?", (user_id,)
        )
        return {r[0]: load_json(r[1]) for r in rows}

    async def set_cross_signing_keys(self, user_id: str, keys: dict[str, dict[str, Any]]) -> bool:
        """Store the given key types; True (and a device list change) if anything changed."""
        changed = False
        async with self._db.transaction() as txn:
            for key_type, key in sorted(keys.items()):
                old = await txn.fetchval(
                    "SELECT key_json FROM e2e_cross_signing_keys WHERE user_id = ? AND key_type = ?",
                    (user_id, key_type),
                )
                if old is not None and load_json(old) == key:
                    continue
                changed = True
                await txn.execute(
                    "INSERT INTO e2e_cross_signing_keys (user_id, key_type, key_json) VALUES (?, ?, ?)"
                    " ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json",
                    (user_id, key_type, dump_json(key)),
                )
                if key_type == "master":
                    # Signatures of the old master key's holder no longer mean anything.
                    await txn.execute(
                        "DELETE FROM e2e_signatures WHERE signer_user_id = ? AND target_user_id = ?",
                        (user_id, user_id),
                    )
            if changed:
                await record_device_list_change(txn, [user_id])
        return changed

    # -- signatures -----------------------------------------------------------------------------------

    async def add_signatures(self, rows: Sequence[tuple[str, str, str, str, str]]) -> None:
        """Store (target user, target key, signer user, signer key id, signature) rows; each target user
        gets a device list change."""
        if not rows:
            return
        async with self._db.transaction() as txn:
            for row in rows:
                await txn.execute(
                    "INSERT INTO e2e_signatures"
                    " (target_user_id, target_key, signer_user_id, signer_key_id, signature)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (target_user_id, target_key, signer_user_id,"
                    " signer_key_id) DO UPDATE SET signature = excluded.signature",
                    row,
                )
            await record_device_list_change(txn, sorted({r[0] for r in rows}))

    async def get_signatures(
        self, user_ids: Iterable[str]
    ) -> dict[tuple[str, str], list[tuple[str, str, str]]]:
        """(target user, target key) -> [(signer user, signer key id, signature)]."""
        out: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
        for part in chunks(sorted(set(user_ids))):
            rows = await self._db.fetchall(
                "SELECT target_user_id, target_key, signer_user_id, signer_key_id, signature"
                f" FROM e2e_signatures WHERE target_user_id IN ({in_list(len(part))})",
                tuple(part),
            )
            for target_user, target_key, signer_user, signer_key, sig in rows:
                out.setdefault((target_user, target_key), []).append((signer_user, signer_key, sig))
        return out
