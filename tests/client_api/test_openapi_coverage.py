"""Every operation of the spec's client-server OpenAPI (shared/spec/data/api/client-server), called once
against a real Ranvier with a plausible valid request. An operation answering 404 ``M_UNRECOGNIZED`` or
405 (no route) is not implemented; the test fails for any such operation not listed below with its
reason, and for any 5xx (a plausible request must never crash the server).

Issue 16 measured 57 of 164 operations; Synapse answers 148. The figure is printed (run with ``-s``).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, start_server
from tests.spec_path import SPEC

pytestmark = pytest.mark.asyncio(loop_scope="module")

API_DIR = SPEC / "data" / "api" / "client-server"

# Left out on purpose: what this server does not offer, answered 404 M_UNRECOGNIZED as the spec allows
# for features a server does not have.
LEFT_OUT_ON_PURPOSE: dict[tuple[str, str], str] = {
    # SSO (CS "Client login via SSO"): Ranvier has no identity provider; /login does not offer m.login.sso.
    ("GET", "/_matrix/client/v3/login/sso/redirect"): "no SSO identity provider",
    ("GET", "/_matrix/client/v3/login/sso/redirect/{idpId}"): "no SSO identity provider",
    # OAuth 2.0 API (CS "OAuth 2.0 API", v1.15): the server metadata is only for servers delegating
    # authentication to an OAuth authorization server; Ranvier authenticates itself (legacy API).
    ("GET", "/_matrix/client/v1/auth_metadata"): "no OAuth 2.0 authorization server",
    # Policy servers (v1.17 /.well-known/matrix/policy_server): only a policy server serves it.
    ("GET", "/.well-known/matrix/policy_server"): "Ranvier is not a policy server",
}

# Being built by other engineers while this list was kept (issue 16): every one has landed, so it is
# empty; an operation added to the spec without a route belongs here or above, with its reason.
EXPECTED_MISSING: dict[tuple[str, str], str] = {}

# Path parameters with plausible values (filled from the fixture's world where they name real things).
STATIC_PARAMS = {
    "type": "org.example.coverage",
    "eventType": "m.room.message",
    "stateKey": "",
    "kind": "override",
    "ruleId": ".m.rule.master",
    "receiptType": "m.read",
    "tag": "u.work",
    "keyName": "displayname",
    "sessionId": "coverage-session",
    "fileName": "coverage.txt",
    "protocol": "irc",
    "relType": "m.annotation",
    "networkId": "irc",
    "appserviceId": "coverage",
    "idpId": "oidc",
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # the full path template, e.g. /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}
    spec_file: str
    example: Any


def operations() -> list[Operation]:
    """The spec's operations, unique by (method, path): a path described twice (the invite endpoint of
    inviting.yaml and third_party_membership.yaml, /events of old_sync and peeking) counts once."""
    found: dict[tuple[str, str], Operation] = {}
    for spec_file in sorted(API_DIR.glob("*.yaml")):
        doc = yaml.safe_load(spec_file.read_text())
        if not isinstance(doc, dict) or "paths" not in doc:
            continue
        servers = doc.get("servers") or [{}]
        base = servers[0].get("variables", {}).get("basePath", {}).get("default", "")
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                if method not in ("get", "put", "post", "delete"):
                    continue
                full = (base + path.strip()).replace("//", "/")
                key = (method.upper(), full)
                if key not in found:
                    found[key] = Operation(method.upper(), full, spec_file.name, _example(op))
    return list(found.values())


def _example(op: dict[str, Any]) -> Any:
    schema = op.get("requestBody", {}).get("content", {}).get("application/json", {})
    return schema.get("example") if isinstance(schema, dict) else None


@dataclass
class World:
    hs: Homeserver
    session: aiohttp.ClientSession
    alice: Client
    bob: Client
    params: dict[str, str]
    counter: itertools.count[int]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.hs.ports['client']}{path}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    root: Path = tmp_path_factory.mktemp("coverage")
    # Optional features switched on, so that their endpoints are counted (each has its own tests).
    extra = {
        "accounts": {"support_contacts": [{"role": "m.role.admin", "email_address": "a@example.org"}]},
        "media": {"url_preview": {"enabled": True}},
    }
    hs = await start_server(root / "hs", extra=extra)
    try:
        async with aiohttp.ClientSession() as session:
            alice = await Client.register(session, hs, "covalice")
            bob = await Client.register(session, hs, "covbob")
            room_id = await alice.create_room(room_alias_name="coverage")
            await bob.ok("POST", f"/join/{room_id}", {})
            event_id = await alice.send_text(room_id, "hello coverage")
            devices = (await alice.ok("GET", "/devices"))["devices"]
            filter_id = (await alice.ok("POST", f"/user/{alice.user_id}/filter", {"room": {}}))["filter_id"]
            async with session.post(
                f"http://127.0.0.1:{hs.ports['client']}/_matrix/media/v3/upload",
                data=b"coverage",
                headers={"Authorization": f"Bearer {alice.token}", "Content-Type": "text/plain"},
            ) as resp:
                mxc = (await resp.json())["content_uri"]
            backup = await alice.ok(
                "POST",
                "/room_keys/version",
                {"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {}},
            )
            server_name, media_id = mxc[len("mxc://") :].split("/", 1)
            params = {
                **STATIC_PARAMS,
                "userId": alice.user_id,
                "roomId": room_id,
                "roomIdOrAlias": room_id,
                "roomAlias": f"#coverage-extra:{hs.server_name}",
                "eventId": event_id,
                "deviceId": devices[0]["device_id"],
                "filterId": str(filter_id),
                "version": str(backup["version"]),
                "serverName": server_name,
                "mediaId": media_id,
            }
            yield World(hs, session, alice, bob, params, itertools.count())
    finally:
        await hs.stop()


def _body_for(op: Operation, w: World) -> Any:
    """A plausible body: chosen here where the spec's example names things that do not exist on this
    server, else the spec's example, else an empty object."""
    room, user = w.params["roomId"], w.params["userId"]
    bodies: dict[tuple[str, str], Any] = {
        ("POST", "/_matrix/client/v3/rooms/{roomId}/invite"): {"user_id": w.bob.user_id},
        ("POST", "/_matrix/client/v3/rooms/{roomId}/kick"): {"user_id": "@nobody:" + w.hs.server_name},
        ("POST", "/_matrix/client/v3/rooms/{roomId}/ban"): {"user_id": "@nobody:" + w.hs.server_name},
        ("POST", "/_matrix/client/v3/rooms/{roomId}/unban"): {"user_id": "@nobody:" + w.hs.server_name},
        ("PUT", "/_matrix/client/v3/directory/room/{roomAlias}"): {"room_id": room},
        ("PUT", "/_matrix/client/v3/rooms/{roomId}/typing/{userId}"): {"typing": False},
        ("PUT", "/_matrix/client/v3/presence/{userId}/status"): {"presence": "online"},
        ("PUT", "/_matrix/client/v3/profile/{userId}/{keyName}"): {"displayname": "Coverage Alice"},
        ("POST", "/_matrix/client/v3/rooms/{roomId}/read_markers"): {"m.fully_read": w.params["eventId"]},
        ("POST", "/_matrix/client/v3/rooms/{roomId}/upgrade"): {"new_version": "12"},
        ("POST", "/_matrix/client/v3/user_directory/search"): {"search_term": "cov"},
        ("POST", "/_matrix/client/v3/search"): {
            "search_categories": {"room_events": {"search_term": "hello"}}
        },
        ("POST", "/_matrix/client/v3/users/{userId}/report"): {"reason": "coverage"},
        ("POST", "/_matrix/client/v3/rooms/{roomId}/report"): {"reason": "coverage"},
        ("POST", "/_matrix/client/v3/rooms/{roomId}/report/{eventId}"): {"reason": "coverage"},
        ("PUT", "/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}"): {"order": 0.5},
        ("POST", "/_matrix/client/v3/keys/query"): {"device_keys": {user: []}},
        ("POST", "/_matrix/client/v3/keys/claim"): {"one_time_keys": {}},
        ("POST", "/_matrix/client/v3/keys/upload"): {},
        ("PUT", "/_matrix/client/v3/sendToDevice/{eventType}/{txnId}"): {"messages": {}},
        ("POST", "/_matrix/client/v3/pushers/set"): {"kind": None, "app_id": "x", "pushkey": "y"},
        ("PUT", "/_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled"): {"enabled": True},
        ("PUT", "/_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions"): {"actions": []},
        ("PUT", "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}"): {
            "msgtype": "m.text",
            "body": "x",
        },
        ("PUT", "/_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}"): {"reason": "coverage"},
        ("POST", "/_matrix/client/v3/createRoom"): {},
        ("POST", "/_matrix/client/v3/register"): {
            "username": f"covreg{next(w.counter)}",
            "auth": {"type": "m.login.dummy"},
        },
        ("POST", "/_matrix/client/v3/login"): {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": w.alice.user_id},
            "password": "pw-" + "covalice" * 3,
        },
        ("POST", "/_matrix/client/v3/refresh"): {"refresh_token": "rvr_unknown"},
        ("POST", "/_matrix/client/v3/user/{userId}/filter"): {"room": {"timeline": {"limit": 10}}},
    }
    key = (op.method, op.path)
    if key in bodies:
        return bodies[key]
    if op.method in ("PUT", "POST"):
        return op.example if isinstance(op.example, dict) else {}
    return None


# Operations that end the caller's session or account: called as a fresh user each.
SESSION_ENDING = {
    ("POST", "/_matrix/client/v3/logout"),
    ("POST", "/_matrix/client/v3/logout/all"),
    ("POST", "/_matrix/client/v3/account/deactivate"),
    ("POST", "/_matrix/client/v3/account/password"),
    ("DELETE", "/_matrix/client/v3/devices/{deviceId}"),
    ("POST", "/_matrix/client/v3/delete_devices"),
}


async def _call(op: Operation, w: World) -> tuple[int, Any]:
    caller = w.alice
    params = dict(w.params)
    if (op.method, op.path) in SESSION_ENDING:
        caller = await Client.register(w.session, w.hs, f"covend{next(w.counter)}")
        params["userId"] = caller.user_id
        params["deviceId"] = (await caller.ok("GET", "/devices"))["devices"][0]["device_id"]
    params["txnId"] = f"cov{next(w.counter)}"
    path = op.path
    for name, value in params.items():
        path = path.replace(
            "{" + name + "}", aiohttp.helpers.quote(value, safe="") if name != "keyName" else value
        )
    assert "{" not in path, f"no value for a parameter of {op.path}"
    query: dict[str, str] = {}
    if op.path.endswith("/thirdparty/location") or op.path.endswith("/thirdparty/user"):
        query = {"alias" if "location" in op.path else "userid": "x"}
    if op.path.endswith("/register/available"):
        query = {"username": "covfree"}
    if op.path.endswith("/timestamp_to_event"):
        query = {"ts": "0", "dir": "f"}
    if op.path.endswith("/mutual_rooms"):
        query = {"user_id": w.bob.user_id}
    if op.path.endswith("/events"):
        query = {"timeout": "0"}  # the legacy stream would wait for new events
    if op.path.endswith("/preview_url"):
        query = {"url": "http://127.0.0.1:1/"}
    body = _body_for(op, w)
    async with w.session.request(
        op.method,
        w.url(path),
        json=body,
        params=query or None,
        headers={"Authorization": f"Bearer {caller.token}"},
    ) as resp:
        try:
            answer = await resp.json(content_type=None)
        except ValueError:
            answer = None  # media downloads
        return resp.status, answer


def _unrecognized(status: int, answer: Any) -> bool:
    errcode = answer.get("errcode") if isinstance(answer, dict) else None
    return status == 405 or (status == 404 and errcode in ("M_UNRECOGNIZED", None))


async def test_every_spec_operation_is_routed(world: World) -> None:
    ops = operations()
    assert len(ops) == 164, f"the spec has {len(ops)} client-server operations, not 164: revisit the lists"
    missing: dict[tuple[str, str], int] = {}
    crashed: dict[tuple[str, str], Any] = {}
    for op in ops:
        status, answer = await _call(op, world)
        if _unrecognized(status, answer):
            missing[(op.method, op.path)] = status
        if status >= 500:
            crashed[(op.method, op.path)] = (status, answer)
    implemented = len(ops) - len(missing)
    print(f"\nclient-server operations answered: {implemented} of {len(ops)} (issue 16: 57; Synapse: 148)")
    for key in sorted(missing):
        reason = LEFT_OUT_ON_PURPOSE.get(key) or EXPECTED_MISSING.get(key) or "NOT LISTED"
        print(f"  missing {key[0]} {key[1]}: {reason}")
    landed = sorted(k for k in EXPECTED_MISSING if k not in missing)
    if landed:
        print("  now implemented, drop from EXPECTED_MISSING:", landed)
    unlisted = sorted(k for k in missing if k not in LEFT_OUT_ON_PURPOSE and k not in EXPECTED_MISSING)
    assert not unlisted, f"operations without a route that no list explains: {unlisted}"
    assert not crashed, f"plausible requests answered with a server error: {crashed}"
