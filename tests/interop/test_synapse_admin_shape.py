"""The admin API's answers compared with Synapse 1.163.2's for the same calls over the same setup (an admin,
a user with a room, a message and a report): every key Ranvier answers must be one Synapse answers, with
the same JSON type, and every key Synapse answers that Ranvier leaves out must be in the commented list
below. Here (in tests/interop) rather than in tests/admin so that it shares the session's one Synapse."""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.error
import urllib.request
from typing import Any

import aiohttp

from tests.scenarios.servers import Homeserver

from .synapse import SynapseServer

# Keys Synapse answers that Ranvier leaves out, and why (a field is computed or left out, never faked):
# matched as the end of the key's path.
LEFT_OUT = {
    # Legacy top-level fields Synapse still puts on client events; the spec's ClientEvent has neither
    # (CS "Room Events": age is in unsigned, the sender is "sender").
    ".event.age",
    ".event.user_id",
    "[].age",
    ".state[].user_id",
    ".chunk[].user_id",
    ".events_before[].user_id",
    ".events_after[].user_id",
    # Deprecated, and removed from the report request in Matrix 1.18: kept only when a client sent one.
    ".score",
    # Ranvier has no appservice-registered marker or consent tracking.
    ".appservice_id",
    ".consent_server_notice_sent",
    ".consent_version",
    ".consent_ts",
    # Ranvier does not record user agents.
    ".last_seen_user_agent",
    ".user_agent",
    # Ranvier does not track Synapse's "forgotten by every local member" or when an event was received.
    ".forgotten",
    ".received_ts",
    # Synapse adds its own unsigned data (age_ts) to the stored event it shows; Ranvier shows the event as
    # it was received or built, which has none.
    ".event_json.unsigned",
}


def shape(value: Any, path: str = "") -> dict[str, str]:
    """key path -> JSON type; lists are described by their first element."""
    if isinstance(value, dict):
        out: dict[str, str] = {path or ".": "object"}
        for key, item in value.items():
            out.update(shape(item, f"{path}.{key}"))
        return out
    if isinstance(value, list):
        out = {path: "array"}
        if value:
            out.update(shape(value[0], path + "[]"))
        return out
    if value is None:
        return {path: "null"}
    if isinstance(value, bool):
        return {path: "boolean"}
    if isinstance(value, (int, float)):
        return {path: "number"}
    return {path: "string"}


def compare(name: str, ours: Any, theirs: Any, dynamic: tuple[str, ...] = ()) -> list[str]:
    """Differences between the two answers' shapes; ``dynamic``: paths of maps keyed by ids that differ
    between the servers (only the map itself is compared)."""

    def relevant(s: dict[str, str]) -> dict[str, str]:
        # Event contents differ by event type (and lists are described by their first element); maps keyed
        # by ids (devices, signatures by server, background updates) hold entries that are not ours to match.
        return {
            k: v
            for k, v in s.items()
            if ".content." not in k and not any(k.startswith(prefix + ".") for prefix in dynamic)
        }

    a, b = relevant(shape(ours)), relevant(shape(theirs))
    problems = []
    for key, kind in a.items():
        if key not in b:
            problems.append(f"{name}: {key} ({kind}) is not in Synapse's answer")
        elif kind != b[key] and "null" not in (kind, b[key]):
            problems.append(f"{name}: {key} is {kind} here, {b[key]} in Synapse")
    for key in b:
        if key not in a and not any(key.endswith(suffix) for suffix in LEFT_OUT):
            # A key below one we left out, or below an empty list of ours, is not a difference of its own.
            parent = key.rsplit(".", 1)[0]
            if parent in a and a[parent] != "array":
                problems.append(f"{name}: Synapse's {key} ({b[key]}) is missing here")
    return problems


def synapse_call(server: SynapseServer, method: str, path: str, token: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        server.client_url + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


class Side:
    """The same setup on one server: an admin, a user with a room, a message in it, a report of it."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.ids: dict[str, str] = {}

    async def setup(self, user_id: str, user_token: str, admin_token: str) -> None:
        call = self.call
        room = await call(
            "POST", "/_matrix/client/v3/createRoom", user_token, {"preset": "public_chat", "name": "R"}
        )
        room_id = room["room_id"]
        sent = await call(
            "PUT",
            f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1",
            user_token,
            {"msgtype": "m.text", "body": "hello"},
        )
        await call(
            "POST",
            f"/_matrix/client/v3/rooms/{room_id}/report/{sent['event_id']}",
            user_token,
            {"reason": "r"},
        )
        await call(
            "POST",
            f"/_synapse/admin/v1/users/{user_id}/override_ratelimit",
            admin_token,
            {"messages_per_second": 10, "burst_count": 20},
        )
        self.ids = {"user": user_id, "room": room_id, "event": sent["event_id"], "tag": secrets.token_hex(4)}


CALLS = [
    ("users list", "GET", "/_synapse/admin/v2/users", ()),
    ("user", "GET", "/_synapse/admin/v2/users/{user}", ()),
    ("whois", "GET", "/_synapse/admin/v1/whois/{user}", (".devices",)),
    ("joined rooms", "GET", "/_synapse/admin/v1/users/{user}/joined_rooms", ()),
    ("devices", "GET", "/_synapse/admin/v2/users/{user}/devices", ()),
    ("override", "GET", "/_synapse/admin/v1/users/{user}/override_ratelimit", ()),
    ("admin flag", "GET", "/_synapse/admin/v1/users/{user}/admin", ()),
    ("pushers", "GET", "/_synapse/admin/v1/users/{user}/pushers", ()),
    ("username available", "GET", "/_synapse/admin/v1/username_available?username=nobody{tag}", ()),
    ("rooms list", "GET", "/_synapse/admin/v1/rooms", ()),
    ("room", "GET", "/_synapse/admin/v1/rooms/{room}", ()),
    ("members", "GET", "/_synapse/admin/v1/rooms/{room}/members", ()),
    ("state", "GET", "/_synapse/admin/v1/rooms/{room}/state", ()),
    ("block", "GET", "/_synapse/admin/v1/rooms/{room}/block", ()),
    ("extremities", "GET", "/_synapse/admin/v1/rooms/{room}/forward_extremities", ()),
    ("context", "GET", "/_synapse/admin/v1/rooms/{room}/context/{event}", ()),
    ("messages", "GET", "/_synapse/admin/v1/rooms/{room}/messages?limit=3", ()),
    ("event reports", "GET", "/_synapse/admin/v1/event_reports", ()),
    ("server version", "GET", "/_synapse/admin/v1/server_version", ()),
    ("background updates", "GET", "/_synapse/admin/v1/background_updates/status", (".current_updates",)),
    ("registration tokens", "GET", "/_synapse/admin/v1/registration_tokens", ()),
    ("new registration token", "POST", "/_synapse/admin/v1/registration_tokens/new", ()),
]


async def test_admin_answers_have_synapses_shape(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession
) -> None:
    base = f"http://127.0.0.1:{ranvier.ports['client']}"

    async def ranvier_call(method: str, path: str, token: str, body: Any = None) -> Any:
        async with session.request(
            method,
            base + path,
            json=body if body is not None else ({} if method != "GET" else None),
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            answer = await resp.json()
            assert resp.status == 200, (method, path, resp.status, answer)
            return answer

    async def synapse_async(method: str, path: str, token: str, body: Any = None) -> Any:
        if body is None and method != "GET":
            body = {}
        try:
            return await asyncio.to_thread(synapse_call, synapse, method, path, token, body)
        except urllib.error.HTTPError as e:
            raise AssertionError(f"Synapse {method} {path}: {e.code} {e.read()!r}") from None

    # Ranvier: users registered over the client API, the admin flag set in storage.
    tag = secrets.token_hex(3)
    tokens = {}
    for name in ("admin", "user"):
        async with session.post(
            base + "/_matrix/client/v3/register",
            json={"username": f"{name}{tag}", "password": "pw-" + tag, "auth": {"type": "m.login.dummy"}},
        ) as resp:
            answer = await resp.json()
        tokens[name] = (answer["user_id"], answer["access_token"])
    await ranvier.storage.users.set_admin(tokens["admin"][0], True)
    ours = Side(ranvier_call)
    await ours.setup(tokens["user"][0], tokens["user"][1], tokens["admin"][1])

    s_admin = await asyncio.to_thread(synapse.register, f"admin{tag}", admin=True)
    s_user = await asyncio.to_thread(synapse.register, f"user{tag}")
    theirs = Side(synapse_async)
    await theirs.setup(s_user[0], s_user[1], s_admin[1])

    problems = []
    for name, method, template, dynamic in CALLS:
        ours_answer = await ranvier_call(method, template.format(**ours.ids), tokens["admin"][1])
        theirs_answer = await synapse_async(method, template.format(**theirs.ids), s_admin[1])
        problems += compare(name, ours_answer, theirs_answer, dynamic)
    reports = (await ranvier_call("GET", "/_synapse/admin/v1/event_reports", tokens["admin"][1]))[
        "event_reports"
    ]
    s_reports = (await synapse_async("GET", "/_synapse/admin/v1/event_reports", s_admin[1]))["event_reports"]
    problems += compare(
        "event report",
        await ranvier_call("GET", f"/_synapse/admin/v1/event_reports/{reports[0]['id']}", tokens["admin"][1]),
        await synapse_async("GET", f"/_synapse/admin/v1/event_reports/{s_reports[0]['id']}", s_admin[1]),
        (".event_json.signatures",),
    )
    assert not problems, "\n".join(problems)
