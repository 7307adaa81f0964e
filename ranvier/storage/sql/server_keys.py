"""Remote servers' signing keys: the durable ``KeyStore`` behind ``ranvier.federation.keys.Keyring``.

Each row is one (server, key id) with the verified ``/key/v2/server`` response that listed it, so the
keyring can re-check the response's signatures on load and we can hand the response on as a notary.
A response is only replaced by one valid at least as long: an older copy arriving late (from a notary,
say) never shortens what we know.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, NamedTuple

from ...clock import now_ms
from .aux_streams import dump_json, load_json
from .engine import Database, chunks, in_list


class StoredKeyResponse(NamedTuple):
    """A server's key response as stored (ranvier.federation.keys uses this type too)."""

    keys_json: dict[str, Any]  # the server's signed /key/v2/server response, as received
    valid_until_ts: int  # when we must refetch: min(response's valid_until_ts, fetch time + 7 days)


def _listed_keys(keys_json: dict[str, Any]) -> list[tuple[str, str, int | None]]:
    """(key id, unpadded base64 key, expired_ts or None) for every key the response lists."""
    out: list[tuple[str, str, int | None]] = []
    current = keys_json.get("verify_keys")
    if isinstance(current, dict):
        for key_id, entry in current.items():
            if isinstance(key_id, str) and isinstance(entry, dict) and isinstance(entry.get("key"), str):
                out.append((key_id, entry["key"], None))
    old = keys_json.get("old_verify_keys")
    if isinstance(old, dict):
        for key_id, entry in old.items():
            if (
                isinstance(key_id, str)
                and key_id not in (current or {})
                and isinstance(entry, dict)
                and isinstance(entry.get("key"), str)
            ):
                expired = entry.get("expired_ts")
                out.append((key_id, entry["key"], expired if type(expired) is int else 0))
    return out


class ServerKeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_server_keys(self, server: str, key_ids: Collection[str]) -> dict[str, StoredKeyResponse]:
        """key id -> the newest stored response listing it; every stored key of ``server`` if
        ``key_ids`` is empty."""
        if not key_ids:
            rows = await self._db.fetchall(
                "SELECT key_id, key_json, valid_until_ts FROM server_keys WHERE server_name = ?", (server,)
            )
        else:
            rows = []
            async with self._db.snapshot() as txn:
                for chunk in chunks(sorted(set(key_ids))):
                    rows.extend(
                        await txn.fetchall(
                            "SELECT key_id, key_json, valid_until_ts FROM server_keys"
                            f" WHERE server_name = ? AND key_id IN ({in_list(len(chunk))})",
                            (server, *chunk),
                        )
                    )
        # Rows cut from one response share one parsed object, as the keyring de-duplicates by identity.
        parsed: dict[str, dict[str, Any]] = {}
        out: dict[str, StoredKeyResponse] = {}
        for key_id, text, valid_until in rows:
            obj = parsed.setdefault(text, load_json(text))
            out[key_id] = StoredKeyResponse(obj, int(valid_until))
        return out

    async def store_server_keys(self, server: str, keys_json: dict[str, Any], valid_until_ts: int) -> None:
        """Persist a verified response under every key id it lists."""
        text = dump_json(keys_json)
        fetched = now_ms()
        rows = [
            (server, key_id, key, valid_until_ts, expired, text, fetched)
            for key_id, key, expired in _listed_keys(keys_json)
        ]
        if not rows:
            return
        async with self._db.transaction() as txn:
            await txn.executemany(
                "INSERT INTO server_keys"
                " (server_name, key_id, verify_key, valid_until_ts, expired_ts, key_json, fetched_ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (server_name, key_id) DO UPDATE SET verify_key = excluded.verify_key,"
                " valid_until_ts = excluded.valid_until_ts, expired_ts = excluded.expired_ts,"
                " key_json = excluded.key_json, fetched_ts = excluded.fetched_ts"
                " WHERE server_keys.valid_until_ts <= excluded.valid_until_ts",
                rows,
            )

    async def servers_with_keys(self) -> list[str]:
        rows = await self._db.fetchall("SELECT DISTINCT server_name FROM server_keys ORDER BY server_name")
        return [r[0] for r in rows]
