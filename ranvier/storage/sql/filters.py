"""Client filters uploaded with POST /user/{userId}/filter."""

from __future__ import annotations

import json
from typing import Any

from .engine import Database


class FilterStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def store_filter(self, user_id: str, filter_json: dict[str, Any]) -> int:
        async with self._db.transaction() as txn:
            current = await txn.fetchval(
                "SELECT COALESCE(MAX(filter_id), -1) FROM user_filters WHERE user_id = ?", (user_id,)
            )
            filter_id = int(current) + 1
            await txn.execute(
                "INSERT INTO user_filters (user_id, filter_id, filter_json) VALUES (?, ?, ?)",
                (user_id, filter_id, json.dumps(filter_json)),
            )
        return filter_id

    async def get_filter(self, user_id: str, filter_id: str) -> dict[str, Any] | None:
        try:
            numeric = int(filter_id)
        except ValueError:
            return None
        raw = await self._db.fetchval(
            "SELECT filter_json FROM user_filters WHERE user_id = ? AND filter_id = ?", (user_id, numeric)
        )
        return None if raw is None else json.loads(raw)
