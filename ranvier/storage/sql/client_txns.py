"""Client transaction ids: (user, device, endpoint path, txn id) -> event id.

The C-S API scopes transaction ids to a device, and a retried ``PUT .../send/{type}/{txnId}`` must return
the event id of the first request rather than send a second event.
"""

from __future__ import annotations

from ...clock import now_ms
from .engine import Database, Txn


class ClientTxnStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_event_id(self, user_id: str, device_id: str, path: str, txn_id: str) -> str | None:
        value = await self._db.fetchval(
            "SELECT event_id FROM client_txns"
            " WHERE user_id = ? AND device_id = ? AND path = ? AND txn_id = ?",
            (user_id, device_id, path, txn_id),
        )
        return None if value is None else str(value)

    async def store_event_id(
        self, user_id: str, device_id: str, path: str, txn_id: str, event_id: str
    ) -> str:
        """Record the mapping and return the event id now on record: the given one, or the one a
        concurrent request with the same transaction id stored first."""
        async with self._db.transaction() as txn:
            return await self.store_event_id_txn(txn, user_id, device_id, path, txn_id, event_id)

    async def store_event_id_txn(
        self, txn: Txn, user_id: str, device_id: str, path: str, txn_id: str, event_id: str
    ) -> str:
        """``store_event_id`` inside the caller's transaction: the event persister's, so that the event and
        its transaction id commit together (a crash between two commits would let the client's retry
        create a second event)."""
        await txn.execute(
            "INSERT INTO client_txns (user_id, device_id, path, txn_id, event_id, created_ts)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (user_id, device_id, path, txn_id, event_id, now_ms()),
        )
        stored = await txn.fetchval(
            "SELECT event_id FROM client_txns"
            " WHERE user_id = ? AND device_id = ? AND path = ? AND txn_id = ?",
            (user_id, device_id, path, txn_id),
        )
        return str(stored)

    async def prune_older_than(self, ts: int) -> None:
        async with self._db.transaction() as txn:
            await txn.execute("DELETE FROM client_txns WHERE created_ts < ?", (ts,))
