"""Users, passwords, profiles, devices and access tokens, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from typing import Any

import pytest

from ranvier.storage.sql.devices import DeviceStore, token_digest
from ranvier.storage.sql.engine import Database
from ranvier.storage.sql.users import (
    HASH_THREADS,
    UserExists,
    UserStore,
    hash_password,
    verify_password,
)


def test_password_hash_roundtrip_and_salting() -> None:
    a = hash_password("correct horse")
    b = hash_password("correct horse")
    assert a != b  # random salt
    assert verify_password("correct horse", a)
    assert verify_password("correct horse", b)
    assert not verify_password("correct hors", a)
    assert not verify_password("correct horse", "plaintext")
    assert not verify_password("x", "scrypt$notanumber$8$1$AA==$AA==")


async def test_create_get_and_duplicate(db: Database) -> None:
    users = UserStore(db)
    rec = await users.create_user("@alice:example.org", "hunter2", is_admin=True)
    assert rec.user_id == "@alice:example.org"
    assert rec.localpart == "alice"
    assert rec.is_admin and not rec.deactivated and rec.has_password
    got = await users.get_user("@alice:example.org")
    assert got == rec
    assert await users.user_exists("@alice:example.org")
    assert not await users.user_exists("@bob:example.org")
    assert await users.get_user("@bob:example.org") is None
    with pytest.raises(UserExists):
        await users.create_user("@alice:example.org", "other")
    assert await users.count_users() == 1


async def test_concurrent_registration_of_one_id_has_one_winner(db: Database) -> None:
    users = UserStore(db)
    results = await asyncio.gather(
        *(users.create_user("@race:example.org", f"pw{i}") for i in range(3)), return_exceptions=True
    )
    assert sum(1 for r in results if isinstance(r, UserExists)) == 2
    assert await users.count_users() == 1


async def test_check_password(db: Database) -> None:
    users = UserStore(db)
    await users.create_user("@alice:example.org", "hunter2")
    await users.create_user("@nopw:example.org", None)
    assert await users.check_password("@alice:example.org", "hunter2")
    assert not await users.check_password("@alice:example.org", "hunter3")
    assert not await users.check_password("@nobody:example.org", "hunter2")
    assert not await users.check_password("@nopw:example.org", "")
    await users.set_password("@alice:example.org", "new pass")
    assert await users.check_password("@alice:example.org", "new pass")
    assert not await users.check_password("@alice:example.org", "hunter2")
    await users.deactivate("@alice:example.org")
    assert not await users.check_password("@alice:example.org", "new pass")
    rec = await users.get_user("@alice:example.org")
    assert rec is not None and rec.deactivated and not rec.has_password


async def test_admin_flag_and_profile(db: Database) -> None:
    users = UserStore(db)
    await users.create_user("@alice:example.org", "pw")
    profile = await users.get_profile("@alice:example.org")
    assert profile is not None and profile.displayname == "alice" and profile.avatar_url is None
    await users.set_displayname("@alice:example.org", "Alice ✨")
    await users.set_avatar_url("@alice:example.org", "mxc://example.org/abc")
    profile = await users.get_profile("@alice:example.org")
    assert profile is not None
    assert (profile.displayname, profile.avatar_url) == ("Alice ✨", "mxc://example.org/abc")
    await users.set_displayname("@alice:example.org", None)
    profile = await users.get_profile("@alice:example.org")
    assert profile is not None and profile.displayname is None
    assert await users.get_profile("@ghost:example.org") is None
    await users.set_admin("@alice:example.org", True)
    rec = await users.get_user("@alice:example.org")
    assert rec is not None and rec.is_admin


async def test_devices_and_tokens(db: Database) -> None:
    devices = DeviceStore(db)
    assert await devices.create_device("@a:x", "DEV1", "Phone")
    assert not await devices.create_device("@a:x", "DEV1", "Renamed by accident")
    await devices.create_device("@a:x", "DEV2")
    await devices.create_device("@b:x", "DEV1", "Bob's")
    dev = await devices.get_device("@a:x", "DEV1")
    assert dev is not None and dev.display_name == "Phone" and dev.last_seen_ts is None
    assert [d.device_id for d in await devices.list_devices("@a:x")] == ["DEV1", "DEV2"]

    assert await devices.rename_device("@a:x", "DEV2", "Laptop")
    assert not await devices.rename_device("@a:x", "NOPE", "x")
    dev2 = await devices.get_device("@a:x", "DEV2")
    assert dev2 is not None and dev2.display_name == "Laptop"
    await devices.touch_device("@a:x", "DEV2", 1234, "10.0.0.1")
    dev2 = await devices.get_device("@a:x", "DEV2")
    assert dev2 is not None and (dev2.last_seen_ts, dev2.last_seen_ip) == (1234, "10.0.0.1")

    await devices.create_access_token("@a:x", "DEV1", "tok-a1")
    await devices.create_access_token("@a:x", "DEV1", "tok-a1-second")
    await devices.create_access_token("@a:x", "DEV2", "tok-a2")
    await devices.create_access_token("@b:x", "DEV1", "tok-b1")
    assert await devices.get_user_by_token("tok-a1") == ("@a:x", "DEV1")
    assert await devices.get_user_by_token("tok-b1") == ("@b:x", "DEV1")
    assert await devices.get_user_by_token("tok-unknown") is None

    # Only the digest is stored, never the token itself.
    stored = [r[0] for r in await db.fetchall("SELECT token_sha256 FROM access_tokens")]
    assert token_digest("tok-a1") in stored and "tok-a1" not in stored

    # Deleting a device deletes all of its tokens and nothing else.
    assert await devices.delete_device("@a:x", "DEV1")
    assert not await devices.delete_device("@a:x", "DEV1")
    assert await devices.get_user_by_token("tok-a1") is None
    assert await devices.get_user_by_token("tok-a1-second") is None
    assert await devices.get_user_by_token("tok-a2") == ("@a:x", "DEV2")
    assert await devices.get_user_by_token("tok-b1") == ("@b:x", "DEV1")

    assert await devices.delete_access_token("tok-a2")
    assert not await devices.delete_access_token("tok-a2")
    assert await devices.get_user_by_token("tok-a2") is None
    assert await devices.get_device("@a:x", "DEV2") is not None  # deleting a token alone keeps the device


async def test_delete_all_devices_except_one(db: Database) -> None:
    devices = DeviceStore(db)
    for d in ("A", "B", "C"):
        await devices.create_device("@a:x", d)
        await devices.create_access_token("@a:x", d, f"tok-{d}")
    await devices.create_device("@b:x", "A")
    await devices.create_access_token("@b:x", "A", "tok-bA")
    assert await devices.delete_all_devices("@a:x", except_device="B") == ["A", "C"]
    assert [d.device_id for d in await devices.list_devices("@a:x")] == ["B"]
    assert await devices.get_user_by_token("tok-B") == ("@a:x", "B")
    assert await devices.get_user_by_token("tok-A") is None
    assert await devices.delete_all_devices("@a:x") == ["B"]
    assert await devices.get_user_by_token("tok-B") is None
    assert await devices.get_user_by_token("tok-bA") == ("@b:x", "A")


async def test_password_hashes_run_at_most_hash_threads_at_once(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each scrypt run holds 32 MiB: a burst of logins and registrations hashes at most HASH_THREADS
    passwords at once (through the default executor it was up to 6 on 2 cores, 192 MiB)."""
    users = UserStore(db)
    await users.create_user("@alice:example.org", "hunter2")
    real_scrypt = hashlib.scrypt
    running = 0
    most = 0
    lock = threading.Lock()

    def counted(*args: Any, **kwargs: Any) -> bytes:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            return real_scrypt(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(hashlib, "scrypt", counted)
    logins = [users.check_password("@alice:example.org", f"guess {i}") for i in range(8)]
    registrations = [users.create_user(f"@u{i}:example.org", "pw") for i in range(4)]
    results = await asyncio.gather(*logins, *registrations)
    assert results[:8] == [False] * 8
    assert most == HASH_THREADS  # the bound is reached, never passed
