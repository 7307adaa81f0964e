"""The account endpoints over HTTP against a real server: password change, refresh tokens, whoami,
OpenID, login tokens, capabilities, 3PID answers, TURN and the support well-known."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest

from ranvier.storage.sql.aux_streams import write
from tests.accounts.conftest import TURN_SECRET, Pair
from tests.scenarios.servers import Client

pytestmark = pytest.mark.asyncio(loop_scope="package")

V3 = "/_matrix/client/v3"


def password_of(name: str) -> str:
    return "pw-" + name * 3  # what tests.scenarios.servers.Client.register sets


async def login(pair: Pair, hs: Any, user_id: str, password: str, **extra: Any) -> tuple[int, Any]:
    body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id}}
    return await pair.request(hs, "POST", V3 + "/login", {**body, "password": password, **extra})


def password_auth(user_id: str, password: str, session: str | None = None) -> dict[str, Any]:
    auth: dict[str, Any] = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": password,
    }
    if session is not None:
        auth["session"] = session
    return auth


async def test_change_password_logs_out_other_devices_and_their_pushers(pair: Pair) -> None:
    alice = await pair.register(pair.b, "pwalice")
    status, other = await login(pair, pair.b, alice.user_id, password_of("pwalice"))
    assert status == 200
    for token, key in ((alice.token, "mine"), (other["access_token"], "theirs")):
        pusher = {
            "kind": "http",
            "app_id": "org.example.app",
            "pushkey": key,
            "app_display_name": "App",
            "device_display_name": "Device",
            "lang": "en",
            "data": {"url": "https://push.example.org/_matrix/push/v1/notify"},
        }
        status, _ = await pair.request(pair.b, "POST", V3 + "/pushers/set", pusher, token)
        assert status == 200

    # First a UIA challenge, then a wrong password, then the right one.
    body: dict[str, Any] = {"new_password": "new-password-1"}
    status, challenge = await pair.request(pair.b, "POST", V3 + "/account/password", body, alice.token)
    assert status == 401 and challenge["flows"] == [{"stages": ["m.login.password"]}]
    body["auth"] = password_auth(alice.user_id, "wrong", challenge["session"])
    status, failed = await pair.request(pair.b, "POST", V3 + "/account/password", body, alice.token)
    assert status == 401 and failed["errcode"] == "M_FORBIDDEN"
    body["auth"] = password_auth(alice.user_id, password_of("pwalice"), challenge["session"])
    status, _ = await pair.request(pair.b, "POST", V3 + "/account/password", body, alice.token)
    assert status == 200

    # The other device is gone with its token and pusher; this one stays.
    status, gone = await pair.request(pair.b, "GET", V3 + "/account/whoami", token=other["access_token"])
    assert status == 401 and gone["errcode"] == "M_UNKNOWN_TOKEN"
    status, pushers = await pair.request(pair.b, "GET", V3 + "/pushers", token=alice.token)
    assert status == 200 and [p["pushkey"] for p in pushers["pushers"]] == ["mine"]
    assert (await login(pair, pair.b, alice.user_id, password_of("pwalice")))[0] == 403
    assert (await login(pair, pair.b, alice.user_id, "new-password-1"))[0] == 200


async def test_change_password_keeping_devices(pair: Pair) -> None:
    bob = await pair.register(pair.b, "pwbob")
    status, other = await login(pair, pair.b, bob.user_id, password_of("pwbob"))
    body = {
        "new_password": "new-password-2",
        "logout_devices": False,
        "auth": password_auth(bob.user_id, password_of("pwbob")),
    }
    status, _ = await pair.request(pair.b, "POST", V3 + "/account/password", body, bob.token)
    assert status == 200
    status, me = await pair.request(pair.b, "GET", V3 + "/account/whoami", token=other["access_token"])
    assert status == 200 and me["user_id"] == bob.user_id
    bad = {**body, "logout_devices": "yes"}
    status, error = await pair.request(pair.b, "POST", V3 + "/account/password", bad, bob.token)
    assert status == 400 and error["errcode"] == "M_INVALID_PARAM"


async def test_whoami(pair: Pair) -> None:
    carol = await pair.register(pair.b, "whoamicarol")
    status, me = await pair.request(pair.b, "GET", V3 + "/account/whoami", token=carol.token)
    devices = (await carol.ok("GET", "/devices"))["devices"]
    assert status == 200
    assert me == {"user_id": carol.user_id, "device_id": devices[0]["device_id"], "is_guest": False}


async def test_refresh_tokens(pair: Pair) -> None:
    dave = await pair.register(pair.a, "refreshdave")
    status, plain = await login(pair, pair.a, dave.user_id, password_of("refreshdave"))
    assert status == 200 and "refresh_token" not in plain and "expires_in_ms" not in plain
    status, first = await login(pair, pair.a, dave.user_id, password_of("refreshdave"), refresh_token=True)
    assert status == 200 and first["expires_in_ms"] == 600_000 and first["refresh_token"]
    assert (await pair.request(pair.a, "GET", V3 + "/account/whoami", token=first["access_token"]))[0] == 200

    # Let the access token expire (as the clock would), then: soft logout, and a refresh brings it back.
    await write(
        pair.a.storage.db,
        "UPDATE access_tokens SET expires_ts = 1 WHERE device_id = ?",
        (first["device_id"],),
    )
    status, expired = await pair.request(pair.a, "GET", V3 + "/account/whoami", token=first["access_token"])
    assert status == 401 and expired["errcode"] == "M_UNKNOWN_TOKEN" and expired["soft_logout"] is True
    refresh = {"refresh_token": first["refresh_token"]}
    status, second = await pair.request(pair.a, "POST", V3 + "/refresh", refresh)
    assert status == 200 and second["expires_in_ms"] == 600_000
    assert second["refresh_token"] != first["refresh_token"]
    status, me = await pair.request(pair.a, "GET", V3 + "/account/whoami", token=second["access_token"])
    assert status == 200 and me["device_id"] == first["device_id"]

    # A refresh token is single-use; the unrelated device's plain token is untouched.
    status, reused = await pair.request(pair.a, "POST", V3 + "/refresh", refresh)
    assert status == 401 and reused["errcode"] == "M_UNKNOWN_TOKEN" and reused["soft_logout"] is False
    assert (await pair.request(pair.a, "GET", V3 + "/account/whoami", token=plain["access_token"]))[0] == 200
    # Logging out the device ends its refresh token too.
    assert (await pair.request(pair.a, "POST", V3 + "/logout", {}, second["access_token"]))[0] == 200
    status, _ = await pair.request(
        pair.a, "POST", V3 + "/refresh", {"refresh_token": second["refresh_token"]}
    )
    assert status == 401


async def test_refresh_tokens_off_by_default(pair: Pair) -> None:
    erin = await pair.register(pair.b, "refresherin")
    status, answer = await login(pair, pair.b, erin.user_id, password_of("refresherin"), refresh_token=True)
    assert status == 200 and "refresh_token" not in answer and "expires_in_ms" not in answer
    status, _ = await pair.request(pair.b, "POST", V3 + "/refresh", {"refresh_token": "rvr_unknown"})
    assert status == 401


async def test_register_with_refresh_token(pair: Pair) -> None:
    body = {"username": "regrefresh", "password": "pw-regrefresh", "refresh_token": True}
    body["auth"] = {"type": "m.login.dummy"}
    status, answer = await pair.request(pair.a, "POST", V3 + "/register", body)
    assert status == 200 and answer["refresh_token"] and answer["expires_in_ms"] == 600_000


async def test_openid_tokens(pair: Pair) -> None:
    fred = await pair.register(pair.a, "openidfred")
    status, token = await pair.request(
        pair.a, "POST", V3 + f"/user/{fred.user_id}/openid/request_token", {}, fred.token
    )
    assert status == 200 and token["token_type"] == "Bearer"
    assert token["matrix_server_name"] == pair.a.server_name and token["expires_in"] == 3600
    status, _ = await pair.request(pair.a, "POST", V3 + "/user/@other:x/openid/request_token", {}, fred.token)
    assert status == 403

    # The third party asks the federation listener (TLS, self-signed in tests).
    url = f"https://{pair.a.server_name}/_matrix/federation/v1/openid/userinfo"
    async with pair.session.get(url, params={"access_token": token["access_token"]}, ssl=False) as resp:
        assert resp.status == 200 and await resp.json() == {"sub": fred.user_id}
    async with pair.session.get(url, params={"access_token": "rvo_nope"}, ssl=False) as resp:
        assert resp.status == 401 and (await resp.json())["errcode"] == "M_UNKNOWN_TOKEN"


async def test_login_token(pair: Pair) -> None:
    gina = await pair.register(pair.a, "logintokengina")
    status, flows = await pair.request(pair.a, "GET", V3 + "/login")
    assert {"type": "m.login.token", "get_login_token": True} in flows["flows"]
    url = "/_matrix/client/v1/login/get_token"
    status, challenge = await pair.request(pair.a, "POST", url, {}, gina.token)
    assert status == 401
    body = {"auth": password_auth(gina.user_id, password_of("logintokengina"), challenge["session"])}
    status, issued = await pair.request(pair.a, "POST", url, body, gina.token)
    assert status == 200 and issued["expires_in_ms"] == 120_000
    login_body = {"type": "m.login.token", "token": issued["login_token"]}
    status, new_device = await pair.request(pair.a, "POST", V3 + "/login", login_body)
    assert status == 200 and new_device["user_id"] == gina.user_id
    status, again = await pair.request(pair.a, "POST", V3 + "/login", login_body)
    assert status == 403 and again["errcode"] == "M_FORBIDDEN"

    # Off by default: not offered, and refused.
    harry = await pair.register(pair.b, "logintokenharry")
    status, flows = await pair.request(pair.b, "GET", V3 + "/login")
    assert all(f["type"] != "m.login.token" for f in flows["flows"])
    status, refused = await pair.request(pair.b, "POST", url, {}, harry.token)
    assert status == 400 and refused["errcode"] == "M_FORBIDDEN"


async def test_capabilities_follow_the_config(pair: Pair) -> None:
    for hs, get_login_token in ((pair.a, True), (pair.b, False)):
        user = await pair.register(hs, f"caps{int(get_login_token)}")
        caps = (await user.ok("GET", "/capabilities"))["capabilities"]
        assert caps["m.get_login_token"] == {"enabled": get_login_token}
        assert caps["m.change_password"] == {"enabled": True}
        assert caps["m.3pid_changes"] == {"enabled": False}
        assert caps["m.profile_fields"] == {"enabled": True, "allowed": ["displayname", "avatar_url"]}


async def test_threepid_endpoints_answer_without_an_identity_server(pair: Pair) -> None:
    ivy = await pair.register(pair.b, "threepidivy")
    assert await ivy.ok("GET", "/account/3pid") == {"threepids": []}
    email = {"client_secret": "s3cret", "email": "ivy@example.org", "send_attempt": 1}
    status, answer = await pair.request(pair.b, "POST", V3 + "/register/email/requestToken", email)
    assert status == 403 and answer["errcode"] == "M_THREEPID_DENIED"
    status, answer = await pair.request(pair.b, "POST", V3 + "/account/password/email/requestToken", email)
    assert status == 403 and answer["errcode"] == "M_THREEPID_DENIED"
    status, answer = await pair.request(
        pair.b, "POST", V3 + "/account/3pid/email/requestToken", email, ivy.token
    )
    assert status == 400 and answer["errcode"] == "M_THREEPID_MEDIUM_NOT_SUPPORTED"
    phone = {"client_secret": "s3cret", "country": "GB", "phone_number": "07700900000", "send_attempt": 1}
    status, answer = await pair.request(
        pair.b, "POST", V3 + "/account/3pid/msisdn/requestToken", phone, ivy.token
    )
    assert status == 400 and answer["errcode"] == "M_THREEPID_MEDIUM_NOT_SUPPORTED"
    status, answer = await pair.request(pair.b, "POST", V3 + "/register/email/requestToken", {"email": "x"})
    assert status == 400 and answer["errcode"] == "M_MISSING_PARAM"

    add = {"client_secret": "s3cret", "sid": "nosuchsession"}
    status, challenge = await pair.request(pair.b, "POST", V3 + "/account/3pid/add", add, ivy.token)
    assert status == 401 and "flows" in challenge
    add["auth"] = password_auth(ivy.user_id, password_of("threepidivy"), challenge["session"])
    status, answer = await pair.request(pair.b, "POST", V3 + "/account/3pid/add", add, ivy.token)
    assert status == 400 and answer["errcode"] == "M_THREEPID_AUTH_FAILED"
    unbind = {"medium": "email", "address": "ivy@example.org"}
    assert await ivy.ok("POST", "/account/3pid/unbind", unbind) == {"id_server_unbind_result": "no-support"}
    status, answer = await pair.request(pair.b, "POST", V3 + "/account/3pid/delete", unbind, ivy.token)
    assert status == 400 and answer["errcode"] == "M_THREEPID_NOT_FOUND"


async def test_turn_server(pair: Pair) -> None:
    jack = await pair.register(pair.a, "turnjack")
    turn = await jack.ok("GET", "/voip/turnServer")
    assert turn["uris"] == ["turn:turn.example.org:3478?transport=udp"] and turn["ttl"] == 3600
    expiry, user_id = turn["username"].split(":", 1)
    assert user_id == jack.user_id and int(expiry) > 0
    expected = hmac.new(TURN_SECRET.encode(), turn["username"].encode(), hashlib.sha1).digest()
    assert base64.b64decode(turn["password"]) == expected
    # Unconfigured: an empty object, as Synapse answers.
    kate: Client = await pair.register(pair.b, "turnkate")
    assert await kate.ok("GET", "/voip/turnServer") == {}


async def test_support_well_known(pair: Pair) -> None:
    status, support = await pair.request(pair.a, "GET", "/.well-known/matrix/support")
    assert status == 200
    assert support == {
        "contacts": [{"role": "m.role.admin", "matrix_id": "@admin:example.org"}],
        "support_page": "https://example.org/support",
    }
    status, missing = await pair.request(pair.b, "GET", "/.well-known/matrix/support")
    assert status == 404 and missing["errcode"] == "M_NOT_FOUND"


async def test_capabilities_when_displayname_changes_are_off() -> None:
    # The profile capabilities follow the config when display names are off.
    from ranvier.client_api.capabilities import CapabilitiesHandlers
    from ranvier.config import Accounts

    body = CapabilitiesHandlers(None, "12", Accounts(set_displayname=False)).body()  # type: ignore[arg-type]
    caps = body["capabilities"]
    assert caps["m.set_displayname"] == {"enabled": False}
    assert caps["m.profile_fields"] == {"enabled": True, "allowed": ["avatar_url"]}
