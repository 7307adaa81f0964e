"""Registration, login, whoami, devices, logout, profile and the error codes, over HTTP against a real app
and real storage (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from .conftest import SERVER_NAME, SHARED_SECRET, AccountApp

V3 = "/_matrix/client/v3"
R0 = "/_matrix/client/r0"


async def call(
    app: AccountApp,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if raw is not None:
        resp = await app.client.request(method, path, data=raw, headers=headers)
    else:
        resp = await app.client.request(method, path, json=body, headers=headers)
    return resp.status, await resp.json()


async def register(
    app: AccountApp, username: str, password: str = "pw-123456", **extra: Any
) -> dict[str, Any]:
    body = {"username": username, "password": password, "auth": {"type": "m.login.dummy"}, **extra}
    status, data = await call(app, "POST", f"{V3}/register", body)
    assert status == 200, data
    return data


async def login(app: AccountApp, user: str, password: str = "pw-123456", **extra: Any) -> dict[str, Any]:
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    }
    status, data = await call(app, "POST", f"{V3}/login", {**body, **extra})
    assert status == 200, data
    return data


# -- registration ------------------------------------------------------------------------------------


async def test_register_uia_dummy_flow_then_whoami(account_app: AccountApp) -> None:
    body = {"username": "alice", "password": "pw-123456", "initial_device_display_name": "Phone"}
    status, challenge = await call(account_app, "POST", f"{V3}/register", body)
    assert status == 401
    assert challenge["flows"] == [{"stages": ["m.login.dummy"]}]
    assert isinstance(challenge["session"], str) and "errcode" not in challenge

    body["auth"] = {"type": "m.login.dummy", "session": challenge["session"]}
    status, data = await call(account_app, "POST", f"{V3}/register", body)
    assert status == 200, data
    assert data["user_id"] == f"@alice:{SERVER_NAME}"
    assert data["device_id"] and data["access_token"]

    status, me = await call(account_app, "GET", f"{V3}/account/whoami", token=data["access_token"])
    assert (status, me) == (
        200,
        {"user_id": "@alice:test.example", "device_id": data["device_id"], "is_guest": False},
    )
    device = await account_app.storage.devices.get_device(data["user_id"], data["device_id"])
    assert device is not None and device.display_name == "Phone"
    # A new account has a profile: the displayname defaults to the localpart.
    status, profile = await call(account_app, "GET", f"{V3}/profile/@alice:test.example")
    assert (status, profile) == (200, {"displayname": "alice"})


async def test_register_errors(account_app: AccountApp) -> None:
    await register(account_app, "taken")
    status, err = await call(
        account_app,
        "POST",
        f"{V3}/register",
        {"username": "taken", "password": "x", "auth": {"type": "m.login.dummy"}},
    )
    assert (status, err["errcode"]) == (400, "M_USER_IN_USE")
    # Username problems are reported before any UIA round trip.
    status, err = await call(account_app, "POST", f"{V3}/register", {"username": "taken", "password": "x"})
    assert (status, err["errcode"]) == (400, "M_USER_IN_USE")
    for bad in ("has space", "colon:name", "ünïcode", "", "x" * 300):
        status, err = await call(account_app, "POST", f"{V3}/register", {"username": bad, "password": "x"})
        assert (status, err["errcode"]) == (400, "M_INVALID_USERNAME"), bad
    status, err = await call(account_app, "POST", f"{V3}/register", raw=b"{not json")
    assert (status, err["errcode"]) == (400, "M_NOT_JSON")
    status, err = await call(account_app, "POST", f"{V3}/register", raw=b"[1, 2]")
    assert (status, err["errcode"]) == (400, "M_BAD_JSON")
    status, err = await call(account_app, "POST", f"{V3}/register", raw=b'{"username": "f", "n": 1.5}')
    assert (status, err["errcode"]) == (400, "M_BAD_JSON")
    status, err = await call(account_app, "POST", f"{V3}/register?kind=guest", {})
    assert (status, err["errcode"]) == (403, "M_GUEST_ACCESS_FORBIDDEN")
    status, err = await call(
        account_app, "POST", f"{V3}/register", {"username": "bob", "auth": {"type": "m.login.recaptcha"}}
    )
    assert (
        status == 401
        and err["errcode"] == "M_UNRECOGNIZED"
        and err["flows"] == [{"stages": ["m.login.dummy"]}]
    )


async def test_register_maps_case_and_inhibit_login_and_generated_names(account_app: AccountApp) -> None:
    data = await register(account_app, "MixedCase", inhibit_login=True)
    assert data["user_id"] == "@mixedcase:test.example"
    assert "access_token" not in data and "device_id" not in data
    assert await account_app.storage.devices.list_devices("@mixedcase:test.example") == []
    # Login is case-insensitive in the same way.
    assert (await login(account_app, "MIXEDCASE"))["user_id"] == "@mixedcase:test.example"

    status, data = await call(account_app, "POST", f"{V3}/register", {"auth": {"type": "m.login.dummy"}})
    assert status == 200 and data["user_id"].endswith(":test.example") and data["access_token"]


async def test_register_available(account_app: AccountApp) -> None:
    status, data = await call(account_app, "GET", f"{V3}/register/available?username=carol")
    assert (status, data) == (200, {"available": True})
    await register(account_app, "carol")
    status, err = await call(account_app, "GET", f"{V3}/register/available?username=carol")
    assert (status, err["errcode"]) == (400, "M_USER_IN_USE")
    status, err = await call(account_app, "GET", f"{V3}/register/available?username=no%20spaces")
    assert (status, err["errcode"]) == (400, "M_INVALID_USERNAME")
    status, err = await call(account_app, "GET", f"{V3}/register/available")
    assert (status, err["errcode"]) == (400, "M_MISSING_PARAM")


async def test_registration_closed(closed_app: AccountApp) -> None:
    status, err = await call(
        closed_app,
        "POST",
        f"{V3}/register",
        {"username": "x", "password": "y", "auth": {"type": "m.login.dummy"}},
    )
    assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
    status, err = await call(closed_app, "GET", "/_synapse/admin/v1/register")
    assert status == 400 and err["errcode"] == "M_UNKNOWN"
    assert not await closed_app.storage.users.user_exists("@x:test.example")


def _mac(nonce: str, user: str, password: str, admin: bool, secret: str = SHARED_SECRET) -> str:
    msg = "\x00".join([nonce, user, password, "admin" if admin else "notadmin"]).encode()
    return hmac.new(secret.encode(), msg, hashlib.sha1).hexdigest()


async def test_shared_secret_registration(account_app: AccountApp) -> None:
    status, data = await call(account_app, "GET", "/_synapse/admin/v1/register")
    assert status == 200
    nonce = data["nonce"]
    body = {"nonce": nonce, "username": "root", "password": "pw-admin", "admin": True}
    status, err = await call(account_app, "POST", "/_synapse/admin/v1/register", {**body, "mac": "00" * 20})
    assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
    # A nonce is single-use, even after a failed attempt.
    status, err = await call(
        account_app,
        "POST",
        "/_synapse/admin/v1/register",
        {**body, "mac": _mac(nonce, "root", "pw-admin", True)},
    )
    assert status == 400 and err["error"] == "Unrecognised nonce"

    nonce = (await call(account_app, "GET", "/_synapse/admin/v1/register"))[1]["nonce"]
    body["nonce"] = nonce
    status, data = await call(
        account_app,
        "POST",
        "/_synapse/admin/v1/register",
        {**body, "mac": _mac(nonce, "root", "pw-admin", True)},
    )
    assert status == 200, data
    assert data["user_id"] == "@root:test.example" and data["access_token"]
    user = await account_app.storage.users.get_user("@root:test.example")
    assert user is not None and user.is_admin
    assert (await login(account_app, "root", "pw-admin"))["user_id"] == "@root:test.example"

    nonce = (await call(account_app, "GET", "/_synapse/admin/v1/register"))[1]["nonce"]
    body = {"nonce": nonce, "username": "root", "password": "pw", "mac": _mac(nonce, "root", "pw", False)}
    status, err = await call(account_app, "POST", "/_synapse/admin/v1/register", body)
    assert (status, err["errcode"]) == (400, "M_USER_IN_USE")


# -- login and tokens --------------------------------------------------------------------------------


async def test_login_variants_and_failures(account_app: AccountApp) -> None:
    await register(account_app, "dave", "correct-pw")
    status, flows = await call(account_app, "GET", f"{V3}/login")
    assert (status, flows) == (200, {"flows": [{"type": "m.login.password"}]})

    by_localpart = await login(account_app, "dave", "correct-pw", device_id="MYDEVICE")
    assert by_localpart["device_id"] == "MYDEVICE" and by_localpart["user_id"] == "@dave:test.example"
    by_mxid = await login(account_app, "@dave:test.example", "correct-pw")
    # The deprecated top-level "user", still sent by old clients, on the r0 prefix.
    status, legacy = await call(
        account_app,
        "POST",
        f"{R0}/login",
        {"type": "m.login.password", "user": "dave", "password": "correct-pw"},
    )
    assert status == 200 and legacy["user_id"] == "@dave:test.example"
    tokens = {by_localpart["access_token"], by_mxid["access_token"], legacy["access_token"]}
    assert len(tokens) == 3

    ident = {"type": "m.id.user", "user": "dave"}
    for body in (
        {"type": "m.login.password", "identifier": ident, "password": "wrong"},
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "nobody"}, "password": "x"},
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "@dave:other.example"},
            "password": "correct-pw",
        },
    ):
        status, err = await call(account_app, "POST", f"{V3}/login", body)
        assert (status, err["errcode"]) == (403, "M_FORBIDDEN"), body
    status, err = await call(
        account_app, "POST", f"{V3}/login", {"type": "m.login.password", "identifier": ident}
    )
    assert (status, err["errcode"]) == (400, "M_MISSING_PARAM")
    status, err = await call(account_app, "POST", f"{V3}/login", {"identifier": ident, "password": "x"})
    assert (status, err["errcode"]) == (400, "M_MISSING_PARAM")
    status, err = await call(account_app, "POST", f"{V3}/login", {"type": "m.login.token", "token": "t"})
    assert (status, err["errcode"]) == (400, "M_UNKNOWN")
    status, err = await call(account_app, "POST", f"{V3}/login", raw=b"")
    assert (status, err["errcode"]) == (400, "M_NOT_JSON")
    status, err = await call(account_app, "POST", f"{V3}/login", {"type": 5})
    assert (status, err["errcode"]) == (400, "M_INVALID_PARAM")


async def test_deactivated_user_cannot_log_in_or_use_tokens(account_app: AccountApp) -> None:
    data = await register(account_app, "erin")
    await account_app.storage.users.deactivate(data["user_id"])
    status, err = await call(
        account_app,
        "POST",
        f"{V3}/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "erin"},
            "password": "pw-123456",
        },
    )
    assert (status, err["errcode"]) == (403, "M_USER_DEACTIVATED")
    status, err = await call(account_app, "GET", f"{V3}/account/whoami", token=data["access_token"])
    assert (status, err["errcode"]) == (401, "M_UNKNOWN_TOKEN")


async def test_missing_and_unknown_tokens(account_app: AccountApp) -> None:
    status, err = await call(account_app, "GET", f"{V3}/account/whoami")
    assert (status, err["errcode"]) == (401, "M_MISSING_TOKEN")
    status, err = await call(account_app, "GET", f"{V3}/account/whoami", token="rvt_not-a-token")
    assert (status, err["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    assert err["soft_logout"] is False
    resp = await account_app.client.get(f"{V3}/account/whoami", headers={"Authorization": "Basic abc"})
    assert resp.status == 401 and (await resp.json())["errcode"] == "M_MISSING_TOKEN"


async def test_logout_and_logout_all(account_app: AccountApp) -> None:
    first = await register(account_app, "frank")
    second = await login(account_app, "frank")
    third = await login(account_app, "frank")

    status, _ = await call(account_app, "POST", f"{V3}/logout", {}, token=first["access_token"])
    assert status == 200
    status, err = await call(account_app, "GET", f"{V3}/account/whoami", token=first["access_token"])
    assert (status, err["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    # Logging out deletes the token's device, and only that one.
    ids = {d.device_id for d in await account_app.storage.devices.list_devices("@frank:test.example")}
    assert ids == {second["device_id"], third["device_id"]}

    status, _ = await call(account_app, "POST", f"{V3}/logout/all", {}, token=second["access_token"])
    assert status == 200
    for t in (second, third):
        status, err = await call(account_app, "GET", f"{V3}/account/whoami", token=t["access_token"])
        assert (status, err["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    assert await account_app.storage.devices.list_devices("@frank:test.example") == []


# -- devices -----------------------------------------------------------------------------------------


async def test_devices_list_rename_delete_with_password_uia(account_app: AccountApp) -> None:
    main = await register(
        account_app, "gina", "gina-pw", device_id="MAIN", initial_device_display_name="Laptop"
    )
    other = await login(account_app, "gina", "gina-pw", device_id="OTHER")
    token = main["access_token"]

    status, data = await call(account_app, "GET", f"{V3}/devices", token=token)
    assert status == 200
    by_id = {d["device_id"]: d for d in data["devices"]}
    assert set(by_id) == {"MAIN", "OTHER"}
    assert by_id["MAIN"]["display_name"] == "Laptop"
    # The authenticated request itself was recorded as "last seen".
    assert isinstance(by_id["MAIN"]["last_seen_ts"], int) and by_id["MAIN"]["last_seen_ip"]

    status, _ = await call(account_app, "PUT", f"{V3}/devices/OTHER", {"display_name": "Phone"}, token=token)
    assert status == 200
    status, dev = await call(account_app, "GET", f"{V3}/devices/OTHER", token=token)
    assert (status, dev["display_name"]) == (200, "Phone")
    status, err = await call(account_app, "GET", f"{V3}/devices/NOPE", token=token)
    assert (status, err["errcode"]) == (404, "M_NOT_FOUND")
    status, err = await call(account_app, "PUT", f"{V3}/devices/NOPE", {"display_name": "x"}, token=token)
    assert (status, err["errcode"]) == (404, "M_NOT_FOUND")
    status, err = await call(account_app, "PUT", f"{V3}/devices/OTHER", {"display_name": 7}, token=token)
    assert (status, err["errcode"]) == (400, "M_INVALID_PARAM")

    # Deleting asks for the password first...
    status, challenge = await call(account_app, "DELETE", f"{V3}/devices/OTHER", token=token)
    assert status == 401 and challenge["flows"] == [{"stages": ["m.login.password"]}]
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "gina"},
        "session": challenge["session"],
    }
    status, err = await call(
        account_app, "DELETE", f"{V3}/devices/OTHER", {"auth": {**auth, "password": "wrong"}}, token=token
    )
    assert status == 401 and err["errcode"] == "M_FORBIDDEN" and "flows" in err
    # ... and someone else's password does not do.
    await register(account_app, "mallory", "mallory-pw")
    mallory_auth = {**auth, "identifier": {"type": "m.id.user", "user": "mallory"}, "password": "mallory-pw"}
    status, err = await call(
        account_app, "DELETE", f"{V3}/devices/OTHER", {"auth": mallory_auth}, token=token
    )
    assert status == 401 and err["errcode"] == "M_FORBIDDEN"
    status, _ = await call(
        account_app, "DELETE", f"{V3}/devices/OTHER", {"auth": {**auth, "password": "gina-pw"}}, token=token
    )
    assert status == 200
    status, err = await call(account_app, "GET", f"{V3}/account/whoami", token=other["access_token"])
    assert (status, err["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    status, data = await call(account_app, "GET", f"{V3}/devices", token=token)
    assert [d["device_id"] for d in data["devices"]] == ["MAIN"]

    # Bulk deletion, with the legacy "user" field in the auth dict.
    extra = await login(account_app, "gina", "gina-pw", device_id="EXTRA")
    legacy_auth = {"type": "m.login.password", "user": "@gina:test.example", "password": "gina-pw"}
    status, _ = await call(
        account_app, "POST", f"{V3}/delete_devices", {"devices": ["EXTRA"], "auth": legacy_auth}, token=token
    )
    assert status == 200
    status, _ = await call(account_app, "GET", f"{V3}/account/whoami", token=extra["access_token"])
    assert status == 401
    status, err = await call(account_app, "POST", f"{V3}/delete_devices", {"auth": legacy_auth}, token=token)
    assert (status, err["errcode"]) == (400, "M_MISSING_PARAM")


# -- profile -----------------------------------------------------------------------------------------


async def test_profile_get_set_and_hook(account_app: AccountApp) -> None:
    hank = await register(account_app, "hank")
    token = hank["access_token"]
    uid = "@hank:test.example"

    status, _ = await call(
        account_app, "PUT", f"{V3}/profile/{uid}/displayname", {"displayname": "Hank H."}, token=token
    )
    assert status == 200
    status, _ = await call(
        account_app,
        "PUT",
        f"{R0}/profile/{uid}/avatar_url",
        {"avatar_url": "mxc://test.example/abc"},
        token=token,
    )
    assert status == 200
    assert account_app.profile_changes == [uid, uid]
    status, profile = await call(account_app, "GET", f"{V3}/profile/{uid}")
    assert (status, profile) == (200, {"displayname": "Hank H.", "avatar_url": "mxc://test.example/abc"})
    status, name = await call(account_app, "GET", f"{V3}/profile/{uid}/displayname")
    assert (status, name) == (200, {"displayname": "Hank H."})
    status, avatar = await call(account_app, "GET", f"{R0}/profile/{uid}/avatar_url")
    assert (status, avatar) == (200, {"avatar_url": "mxc://test.example/abc"})

    # Clearing a field: empty string (what clients send) or DELETE (v1.16); then the field is 404.
    status, _ = await call(
        account_app, "PUT", f"{V3}/profile/{uid}/avatar_url", {"avatar_url": ""}, token=token
    )
    assert status == 200
    status, err = await call(account_app, "GET", f"{V3}/profile/{uid}/avatar_url")
    assert (status, err["errcode"]) == (404, "M_NOT_FOUND")
    status, _ = await call(account_app, "DELETE", f"{V3}/profile/{uid}/displayname", token=token)
    assert status == 200
    status, profile = await call(account_app, "GET", f"{V3}/profile/{uid}")
    assert (status, profile) == (200, {})


async def test_profile_errors(account_app: AccountApp) -> None:
    ivy = await register(account_app, "ivy")
    await register(account_app, "jack")
    token = ivy["access_token"]
    uid = "@ivy:test.example"

    status, err = await call(
        account_app, "PUT", f"{V3}/profile/@jack:test.example/displayname", {"displayname": "x"}, token=token
    )
    assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
    status, err = await call(account_app, "PUT", f"{V3}/profile/{uid}/displayname", {"displayname": "x"})
    assert (status, err["errcode"]) == (401, "M_MISSING_TOKEN")
    status, err = await call(account_app, "PUT", f"{V3}/profile/{uid}/displayname", {}, token=token)
    assert (status, err["errcode"]) == (400, "M_MISSING_PARAM")
    status, err = await call(
        account_app, "PUT", f"{V3}/profile/{uid}/displayname", {"displayname": 5}, token=token
    )
    assert (status, err["errcode"]) == (400, "M_INVALID_PARAM")
    status, err = await call(account_app, "PUT", f"{V3}/profile/{uid}/displayname", raw=b"nope", token=token)
    assert (status, err["errcode"]) == (400, "M_NOT_JSON")
    status, err = await call(
        account_app,
        "PUT",
        f"{V3}/profile/{uid}/avatar_url",
        {"avatar_url": "https://evil/x.png"},
        token=token,
    )
    assert (status, err["errcode"]) == (400, "M_INVALID_PARAM")
    status, err = await call(account_app, "GET", f"{V3}/profile/@nobody:test.example")
    assert (status, err["errcode"]) == (404, "M_NOT_FOUND")
    status, err = await call(account_app, "GET", f"{V3}/profile/@someone:remote.example/displayname")
    assert (status, err["errcode"]) == (404, "M_NOT_FOUND")
    assert account_app.profile_changes == []


# -- versions, well-known, unknown endpoints ---------------------------------------------------------


async def test_versions_well_known_and_unrecognized(account_app: AccountApp) -> None:
    status, data = await call(account_app, "GET", "/_matrix/client/versions")
    assert status == 200
    assert {"r0.6.1", "v1.1", "v1.12"} <= set(data["versions"])
    resp = await account_app.client.get("/.well-known/matrix/client")
    assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == "*"
    assert await resp.json() == {"m.homeserver": {"base_url": "https://matrix.test.example"}}

    status, err = await call(account_app, "GET", f"{V3}/no/such/endpoint")
    assert (status, err["errcode"]) == (404, "M_UNRECOGNIZED")
    status, err = await call(account_app, "PATCH", f"{V3}/account/whoami")
    assert (status, err["errcode"]) == (405, "M_UNRECOGNIZED")
