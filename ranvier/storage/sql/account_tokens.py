"""Tokens of the account lifecycle beyond plain access tokens: refresh tokens (CS "Refreshing access
tokens"), OpenID tokens (CS "OpenID") and the erasure mark of deactivated accounts (CS "/account/deactivate").

Only the SHA-256 of each token is kept, as for access tokens (``devices.token_digest``).
"""

from __future__ import annotations

from collections.abc import Iterable

from ...clock import now_ms
from .aux_streams import write
from .devices import token_digest
from .engine import Database, chunks, in_list


class AccountTokenStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- refresh tokens ------------------------------------------------------------------------------

    async def create_refresh_token(
        self, user_id: str, device_id: str, token: str, access_token: str | None = None
    ) -> None:
        """``access_token``: the one issued with it, which its use replaces."""
        await write(
            self._db,
            "INSERT INTO refresh_tokens (token_sha256, user_id, device_id, created_ts, access_token_sha256)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                token_digest(token),
                user_id,
                device_id,
                now_ms(),
                None if access_token is None else token_digest(access_token),
            ),
        )

    async def refresh_token_owner(self, token: str) -> str | None:
        value = await self._db.fetchval(
            "SELECT user_id FROM refresh_tokens WHERE token_sha256 = ?", (token_digest(token),)
        )
        return None if value is None else str(value)

    async def take_refresh_token(self, token: str) -> tuple[str, str] | None:
        """(user_id, device_id) of a live refresh token, which is used up by this call; None if unknown.
        The access token issued with it goes too: the caller issues the new pair."""
        async with self._db.transaction() as txn:
            row = await txn.fetchone(
                "DELETE FROM refresh_tokens WHERE token_sha256 = ?"
                " RETURNING user_id, device_id, access_token_sha256",
                (token_digest(token),),
            )
            if row is None:
                return None
            if row[2] is not None:
                await txn.execute("DELETE FROM access_tokens WHERE token_sha256 = ?", (row[2],))
        return str(row[0]), str(row[1])

    # -- OpenID tokens -------------------------------------------------------------------------------

    async def create_openid_token(self, user_id: str, token: str, expires_ts: int) -> None:
        await write(
            self._db,
            "INSERT INTO openid_tokens (token_sha256, user_id, expires_ts) VALUES (?, ?, ?)",
            (token_digest(token), user_id, expires_ts),
        )
        # Expired tokens are of no use to anyone: each new one sweeps them.
        await write(self._db, "DELETE FROM openid_tokens WHERE expires_ts < ?", (now_ms(),))

    async def delete_openid_tokens(self, user_id: str) -> None:
        await write(self._db, "DELETE FROM openid_tokens WHERE user_id = ?", (user_id,))

    async def openid_token_owner(self, token: str, now: int) -> str | None:
        value = await self._db.fetchval(
            "SELECT user_id FROM openid_tokens WHERE token_sha256 = ? AND expires_ts >= ?",
            (token_digest(token), now),
        )
        return None if value is None else str(value)

    # -- deactivation --------------------------------------------------------------------------------

    async def purge_account_data(self, user_id: str) -> None:
        """Delete a deactivated user's account data, global and per room (direct chats, ignored users,
        tags, client settings), as Synapse does on deactivation: nothing will read it again."""
        await write(self._db, "DELETE FROM account_data WHERE user_id = ?", (user_id,))

    # -- erasure -------------------------------------------------------------------------------------

    async def mark_erased(self, user_id: str) -> None:
        await write(
            self._db,
            "INSERT INTO erased_users (user_id, erased_ts) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (user_id, now_ms()),
        )

    async def erased_among(self, user_ids: Iterable[str]) -> set[str]:
        """The users of ``user_ids`` whose accounts were erased."""
        out: set[str] = set()
        for part in chunks(sorted(set(user_ids))):
            rows = await self._db.fetchall(
                f"SELECT user_id FROM erased_users WHERE user_id IN ({in_list(len(part))})", tuple(part)
            )
            out.update(str(r[0]) for r in rows)
        return out
