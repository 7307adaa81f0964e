"""Responses to inbound federation transactions (``PUT /send/{txnId}``), keyed by (origin, txn id).

The S2S API lets a sender retry a transaction; answering a retry with the stored response (instead of
processing the PDUs again) makes ``/send`` idempotent.
"""

from __future__ import annotations

from typing import Any

from ...clock import now_ms
from .aux_streams import dump_json, load_json
from .engine import Database


class InboundTxnStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_response(self, origin: str, txn_id: str) -> dict[str, Any] | None:
        text = await self._db.fetchval(
            "SELECT response FROM inbound_txns WHERE origin = ? AND txn_id = ?", (origin, txn_id)
        )
        return load_json(text) if text is not None else None

    async def store_response(self, origin: str, txn_id: str, response: dict[str, Any]) -> None:
        """Record the response; the first one stored wins if two copies of a transaction raced."""
        async with self._db.transaction() as txn:
            await txn.execute(
                "INSERT INTO inbound_txns (origin, txn_id, response, received_ts) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (origin, txn_id, dump_json(response), now_ms()),
            )

    async def prune_older_than(self, ts: int) -> int:
        """Forget responses recorded before ``ts`` (ms); senders do not retry transactions for days."""
        async with self._db.transaction() as txn:
            rows = await txn.fetchall(
                "DELETE FROM inbound_txns WHERE received_ts < ? RETURNING origin", (ts,)
            )
        return len(rows)
