"""Account locking and suspension (CS "Account moderation"; admin endpoints v1.18): who may set them,
and what a locked or suspended account can still do."""

from __future__ import annotations

from typing import Any

import pytest

from tests.accounts.conftest import Pair
from tests.accounts.test_account_api import login, password_of
from tests.scenarios.servers import Client

pytestmark = pytest.mark.asyncio(loop_scope="package")

ADMIN = "/_matrix/client/v1/admin"


async def admin_of(pair: Pair, name: str) -> Client:
    admin = await pair.register(pair.b, name)
    await pair.b.storage.users.set_admin(admin.user_id, True)
    return admin


async def moderate(pair: Pair, admin: Client, kind: str, user_id: str, body: Any = None) -> tuple[int, Any]:
    method = "GET" if body is None else "PUT"
    return await pair.request(pair.b, method, f"{ADMIN}/{kind}/{user_id}", body, admin.token)


async def test_who_may_moderate(pair: Pair) -> None:
    admin = await admin_of(pair, "modadmin1")
    user = await pair.register(pair.b, "moduser1")
    # Not an admin: refused before any lookup.
    for kind in ("lock", "suspend"):
        status, error = await moderate(pair, user, kind, "@nobody:" + pair.b.server_name)
        assert status == 403 and error["errcode"] == "M_FORBIDDEN"
    status, error = await moderate(pair, admin, "lock", "@someone:elsewhere.example")
    assert status == 400 and error["errcode"] == "M_INVALID_PARAM"
    status, error = await moderate(pair, admin, "suspend", "@nobody:" + pair.b.server_name)
    assert status == 404 and error["errcode"] == "M_NOT_FOUND"
    assert await moderate(pair, admin, "lock", user.user_id) == (200, {"locked": False})
    status, error = await moderate(pair, admin, "lock", user.user_id, {"locked": "yes"})
    assert status == 400 and error["errcode"] == "M_INVALID_PARAM"
    # Only admins are told they may moderate.
    assert "m.account_moderation" not in (await user.ok("GET", "/capabilities"))["capabilities"]
    caps = (await admin.ok("GET", "/capabilities"))["capabilities"]
    assert caps["m.account_moderation"] == {"lock": True, "suspend": True}


async def test_locked_account(pair: Pair) -> None:
    admin = await admin_of(pair, "modadmin2")
    user = await pair.register(pair.b, "moduser2")
    status, second = await login(pair, pair.b, user.user_id, password_of("moduser2"))
    assert status == 200
    assert await moderate(pair, admin, "lock", user.user_id, {"locked": True}) == (200, {"locked": True})
    assert await moderate(pair, admin, "lock", user.user_id) == (200, {"locked": True})

    status, error = await user.call("GET", "/account/whoami")
    assert status == 401 and error == {
        "errcode": "M_USER_LOCKED",
        "error": "This account has been locked",
        "soft_logout": True,
    }
    status, _ = await pair.request(pair.b, "POST", "/_matrix/client/v3/logout", {}, second["access_token"])
    assert status == 200  # logging out stays possible

    # Unlocked: the kept session works again.
    await moderate(pair, admin, "lock", user.user_id, {"locked": False})
    assert (await user.ok("GET", "/account/whoami"))["user_id"] == user.user_id


async def test_suspended_account(pair: Pair) -> None:
    admin = await admin_of(pair, "modadmin3")
    user = await pair.register(pair.b, "moduser3")
    room = await admin.create_room()
    await user.ok("POST", f"/join/{room}", {})
    own = await user.send_text(room, "before the suspension")
    other = await admin.send_text(room, "the admin's")
    elsewhere = await admin.create_room()
    assert await moderate(pair, admin, "suspend", user.user_id, {"suspended": True}) == (
        200,
        {"suspended": True},
    )

    async def refused(method: str, path: str, body: Any) -> None:
        status, error = await user.call(method, path, body)
        assert status == 403 and error["errcode"] == "M_USER_SUSPENDED", (path, status, error)

    await refused("PUT", f"/rooms/{room}/send/m.room.message/s1", {"msgtype": "m.text", "body": "no"})
    await refused("PUT", f"/rooms/{room}/state/m.room.topic/", {"topic": "no"})
    await refused("PUT", f"/profile/{user.user_id}/displayname", {"displayname": "no"})
    await refused("POST", "/createRoom", {})
    await refused("POST", f"/join/{elsewhere}", {})
    await refused("POST", f"/rooms/{room}/invite", {"user_id": admin.user_id})
    await refused("PUT", f"/rooms/{room}/redact/{other}/r1", {})
    await refused("PUT", f"/rooms/{room}/send/m.room.redaction/r2", {"redacts": other})

    # Reading, redacting one's own events and leaving stay possible.
    assert (await user.ok("GET", f"/rooms/{room}/messages", dir="b"))["chunk"]
    await user.ok("PUT", f"/rooms/{room}/redact/{own}/r3", {})
    await user.ok("POST", f"/rooms/{room}/leave", {})

    await moderate(pair, admin, "suspend", user.user_id, {"suspended": False})
    await user.ok("POST", "/createRoom", {})


async def test_locked_account_gets_no_new_tokens(pair: Pair) -> None:
    admin = await pair.register(pair.a, "modadmin4")
    await pair.a.storage.users.set_admin(admin.user_id, True)
    user = await pair.register(pair.a, "moduser4")
    status, issued = await login(pair, pair.a, user.user_id, password_of("moduser4"), refresh_token=True)
    assert status == 200 and "refresh_token" in issued
    lock = f"{ADMIN}/lock/{user.user_id}"
    assert (await pair.request(pair.a, "PUT", lock, {"locked": True}, admin.token))[0] == 200

    status, error = await login(pair, pair.a, user.user_id, password_of("moduser4"))
    assert status == 401 and error["errcode"] == "M_USER_LOCKED" and error["soft_logout"] is True
    refresh = {"refresh_token": issued["refresh_token"]}
    status, error = await pair.request(pair.a, "POST", "/_matrix/client/v3/refresh", refresh)
    assert status == 401 and error["errcode"] == "M_USER_LOCKED"

    # Unlocked: the refresh token was kept and works.
    assert (await pair.request(pair.a, "PUT", lock, {"locked": False}, admin.token))[0] == 200
    status, _ = await pair.request(pair.a, "POST", "/_matrix/client/v3/refresh", refresh)
    assert status == 200
