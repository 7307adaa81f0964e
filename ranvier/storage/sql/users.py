"""Local user accounts: creation, password checks, admin/deactivated flags and the profile.

Passwords are hashed with the stdlib's scrypt (random 16-byte salt, parameters stored with the hash so
they can be raised later without invalidating old hashes). Hashing costs tens of milliseconds of CPU, so
it runs in a worker thread to keep the event loop responsive: in a pool of its own, of ``HASH_THREADS``
threads, because each hash holds 32 MiB while it runs. Through the default executor (6 threads on 2
cores) a burst of logins or registrations held up to 192 MiB, and its threads were taken from every other
blocking call; more threads would not hash faster than the cores allow anyway.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from ...clock import now_ms
from .aux_streams import write
from .engine import Database

# scrypt cost: N=2**15, r=8, p=1 uses 32 MiB and ~50 ms; OWASP's minimum recommendation is N=2**17 at
# p=1 but that needs 128 MiB per concurrent login, which a small homeserver cannot always spare.
_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1
_MAXMEM = 64 * 1024 * 1024
_T = TypeVar("_T")
# At most this many hashes at once (each holds 32 MiB): one per core, at least two. The pool's threads are
# started on first use, so an idle server does not pay for them.
HASH_THREADS = max(2, os.cpu_count() or 1)
_hash_pool = ThreadPoolExecutor(max_workers=HASH_THREADS, thread_name_prefix="password-hash")


async def _in_hash_pool(fn: Callable[..., _T], *args: Any) -> _T:
    return await asyncio.get_running_loop().run_in_executor(_hash_pool, fn, *args)


class UserExists(Exception):
    pass


@dataclass(frozen=True, slots=True)
class UserRecord:
    user_id: str
    localpart: str
    is_admin: bool
    deactivated: bool
    created_ts: int
    displayname: str | None
    avatar_url: str | None
    has_password: bool
    # CS "Account locking" / "Account suspension" (ranvier.accounts.moderation).
    locked: bool = False
    suspended: bool = False


@dataclass(frozen=True, slots=True)
class Profile:
    displayname: str | None
    avatar_url: str | None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64 parts). Synchronous: run in the hash pool (_in_hash_pool)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, maxmem=_MAXMEM, dklen=32
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time comparison against a stored hash; unknown formats never match."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4])
        expected = base64.b64decode(parts[5])
        digest = hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=max(_MAXMEM, 2 * 128 * n * r), dklen=32
        )
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(digest, expected)


# Checked against when the user does not exist, so that "no such user" and "wrong password" cost the same
# time and do not reveal which accounts exist. Well-formed but matches no password.
_DUMMY_HASH = f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${'A' * 22}==${'A' * 43}="


_COLUMNS = (
    "user_id, localpart, is_admin, deactivated, created_ts, displayname, avatar_url, password_hash,"
    " locked, suspended"
)


def _record(row: tuple[Any, ...]) -> UserRecord:
    return UserRecord(
        user_id=row[0],
        localpart=row[1],
        is_admin=bool(row[2]),
        deactivated=bool(row[3]),
        created_ts=int(row[4]),
        displayname=row[5],
        avatar_url=row[6],
        has_password=row[7] is not None,
        locked=bool(row[8]),
        suspended=bool(row[9]),
    )


class UserStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_user(
        self,
        user_id: str,
        password: str | None,
        *,
        is_admin: bool = False,
        displayname: str | None = None,
    ) -> UserRecord:
        """Create an account; raises UserExists if the id is taken. The displayname defaults to the
        localpart, as clients expect a profile to exist."""
        localpart = user_id[1:].split(":", 1)[0]
        pw_hash = await _in_hash_pool(hash_password, password) if password is not None else None
        created = now_ms()
        name = displayname if displayname is not None else localpart
        # ON CONFLICT DO NOTHING: a concurrent registration of the same id loses cleanly instead of failing
        # with an engine-specific integrity error.
        inserted = await write(
            self._db,
            "INSERT INTO users (user_id, localpart, password_hash, is_admin, deactivated, created_ts,"
            " displayname, avatar_url) VALUES (?, ?, ?, ?, 0, ?, ?, NULL)"
            " ON CONFLICT DO NOTHING RETURNING user_id",
            (user_id, localpart, pw_hash, 1 if is_admin else 0, created, name),
        )
        if inserted is None:
            raise UserExists(user_id)
        return UserRecord(user_id, localpart, is_admin, False, created, name, None, pw_hash is not None)

    async def get_user(self, user_id: str) -> UserRecord | None:
        row = await self._db.fetchone(f"SELECT {_COLUMNS} FROM users WHERE user_id = ?", (user_id,))
        return _record(row) if row is not None else None

    async def user_exists(self, user_id: str) -> bool:
        return await self._db.fetchval("SELECT 1 FROM users WHERE user_id = ?", (user_id,)) is not None

    async def check_password(self, user_id: str, password: str) -> bool:
        """True only for an existing, active account whose password matches."""
        row = await self._db.fetchone(
            "SELECT password_hash, deactivated FROM users WHERE user_id = ?", (user_id,)
        )
        if row is None or row[0] is None or row[1]:
            await _in_hash_pool(verify_password, password, _DUMMY_HASH)
            return False
        return await _in_hash_pool(verify_password, password, str(row[0]))

    async def set_password(self, user_id: str, password: str | None) -> None:
        pw_hash = await _in_hash_pool(hash_password, password) if password is not None else None
        await write(self._db, "UPDATE users SET password_hash = ? WHERE user_id = ?", (pw_hash, user_id))

    async def set_locked(self, user_id: str, locked: bool) -> None:
        await write(self._db, "UPDATE users SET locked = ? WHERE user_id = ?", (int(locked), user_id))

    async def set_suspended(self, user_id: str, suspended: bool) -> None:
        await write(self._db, "UPDATE users SET suspended = ? WHERE user_id = ?", (int(suspended), user_id))

    async def set_admin(self, user_id: str, is_admin: bool) -> None:
        await write(self._db, "UPDATE users SET is_admin = ? WHERE user_id = ?", (int(is_admin), user_id))

    async def deactivate(self, user_id: str) -> None:
        """Mark deactivated and drop the password; the caller also deletes the user's devices/tokens."""
        await write(
            self._db, "UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = ?", (user_id,)
        )

    async def get_profile(self, user_id: str) -> Profile | None:
        row = await self._db.fetchone(
            "SELECT displayname, avatar_url FROM users WHERE user_id = ?", (user_id,)
        )
        return Profile(row[0], row[1]) if row is not None else None

    async def set_displayname(self, user_id: str, displayname: str | None) -> None:
        await write(self._db, "UPDATE users SET displayname = ? WHERE user_id = ?", (displayname, user_id))

    async def set_avatar_url(self, user_id: str, avatar_url: str | None) -> None:
        await write(self._db, "UPDATE users SET avatar_url = ? WHERE user_id = ?", (avatar_url, user_id))

    async def count_users(self) -> int:
        return int(await self._db.fetchval("SELECT COUNT(*) FROM users") or 0)
