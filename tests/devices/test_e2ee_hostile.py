"""Malformed input to the E2EE endpoints is a 4xx with an errcode (never a 5xx), and nothing of it is
stored."""

from __future__ import annotations

from typing import Any

import aiohttp

from ranvier.app import Homeserver
from tests.scenarios.servers import Client

from .test_keys_local import _user

BAD: list[tuple[str, str, Any]] = [
    ("POST", "/keys/upload", {"device_keys": "nope"}),
    ("POST", "/keys/upload", {"device_keys": {"user_id": 1}}),
    ("POST", "/keys/upload", {"one_time_keys": []}),
    ("POST", "/keys/upload", {"one_time_keys": {"signed_curve25519:A": 5}}),
    ("POST", "/keys/upload", {"one_time_keys": {"signed_curve25519:A": {"key": 1}}}),
    ("POST", "/keys/upload", {"fallback_keys": {":": "x"}}),
    ("POST", "/keys/upload", {"fallback_keys": "x"}),
    ("POST", "/keys/query", {}),
    ("POST", "/keys/query", {"device_keys": []}),
    ("POST", "/keys/query", {"device_keys": {"@a:b": "x"}}),
    ("POST", "/keys/query", {"device_keys": {}, "timeout": "soon"}),
    ("POST", "/keys/claim", {"one_time_keys": {"@a:b": {"D": 5}}}),
    ("POST", "/keys/claim", {"one_time_keys": "x"}),
    ("POST", "/keys/device_signing/upload", {"master_key": "x"}),
    (
        "POST",
        "/keys/device_signing/upload",
        {"master_key": {"user_id": "@someone:else", "usage": ["master"], "keys": {}}},
    ),
    ("POST", "/keys/device_signing/upload", {"self_signing_key": {}}),
    ("PUT", "/sendToDevice/m.t/1", {}),
    ("PUT", "/sendToDevice/m.t/2", {"messages": []}),
    ("PUT", "/sendToDevice/m.t/3", {"messages": {"@a:b": "x"}}),
    ("PUT", "/sendToDevice/m.t/4", {"messages": {"not a user": {}}}),
    ("POST", "/room_keys/version", {"algorithm": 5, "auth_data": {}}),
    ("GET", "/room_keys/version/abc", None),
    ("GET", "/room_keys/version/99999999999999999999999", None),
    ("PUT", "/room_keys/keys?version=1", {"rooms": "x"}),
    ("PUT", "/room_keys/keys/!r:x?version=1", {"sessions": {"s": {"first_message_index": -1}}}),
    (
        "PUT",
        "/room_keys/keys/!r:x/s?version=1",
        {"first_message_index": 0, "forwarded_count": 0, "is_verified": "yes", "session_data": {}},
    ),
    ("GET", "/keys/changes?from=s1&to=bad", None),
]

# Well-formed JSON of the wrong shape where an object of signatures is expected: the answer is per-key
# failures (200), as the endpoint reports errors per key.
ODD_SIGNATURES: list[Any] = [
    {"@x:y": "nope"},
    {"@x:y": {"KEY": "nope"}},
    {"@x:y": {"KEY": {"signatures": []}}},
    {"not a user": {"KEY": {}}},
]


async def test_malformed_e2ee_requests_are_4xx(hs: Homeserver, session: aiohttp.ClientSession) -> None:
    alice, adev = await _user(session, hs, "alice")
    await alice.ok(
        "POST", "/room_keys/version", {"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {}}
    )
    for method, path, body in BAD:
        status, answer = await _raw(alice, method, path, body)
        assert 400 <= status < 500 and "errcode" in answer, (method, path, body, status, answer)
    uid = alice.user_id
    device_keys = adev.device_keys()
    await alice.ok("POST", "/keys/upload", {"device_keys": device_keys})
    unsigned = {k: v for k, v in device_keys.items() if k != "signatures"}
    for odd in ([], {uid: []}, {uid: {"ed25519:nope": "sig"}}, {uid: {adev.ed_key_id: 5}}):
        status, answer = await _raw(
            alice, "POST", "/keys/signatures/upload", {uid: {adev.device_id: {**unsigned, "signatures": odd}}}
        )
        assert status == 200 and answer["failures"][uid][adev.device_id]["errcode"], (odd, answer)
    for body in [
        *ODD_SIGNATURES,
        {uid: {adev.device_id: {"signatures": {uid: "x"}}}},
        {uid: {adev.device_id: 5}},
    ]:
        status, answer = await _raw(alice, "POST", "/keys/signatures/upload", body)
        assert status < 500, (body, status, answer)
    for raw in (b"not json", b"[]", b'{"device_keys": {"@a:b": [1]}}'):
        async with session.post(
            f"{alice.base}/keys/query", data=raw, headers={"Authorization": f"Bearer {alice.token}"}
        ) as resp:
            assert 400 <= resp.status < 500, (raw, resp.status)
    # Nothing was stored.
    assert await hs.storage.e2e_keys.get_device_keys(uid, adev.device_id) == device_keys
    assert await hs.storage.e2e_keys.get_signatures([uid]) == {}
    assert await hs.storage.e2e_keys.count_one_time_keys(uid, adev.device_id) == {}
    assert await hs.storage.e2e_keys.get_cross_signing_keys(uid) == {}


async def _raw(client: Client, method: str, path: str, body: Any) -> tuple[int, Any]:
    async with client.session.request(
        method, client.base + path, json=body, headers={"Authorization": f"Bearer {client.token}"}
    ) as resp:
        return resp.status, await resp.json()


async def test_spoofed_or_malformed_e2ee_edus_change_nothing(
    hs: Homeserver, session: aiohttp.ClientSession
) -> None:
    alice, adev = await _user(session, hs, "alice")
    lists_before = await hs.storage.device_lists.max_position()
    # A to-device message whose sender is not of the origin server, and malformed ones.
    for origin, content in [
        (
            "evil.example",
            {
                "sender": "@mallory:other.example",
                "type": "m.t",
                "message_id": "1",
                "messages": {alice.user_id: {adev.device_id: {"x": 1}}},
            },
        ),
        (
            "other.example",
            {"sender": "@mallory:other.example", "type": "m.t", "message_id": "2", "messages": []},
        ),
        ("other.example", {"sender": 5, "type": "m.t", "message_id": "3", "messages": {}}),
        (
            "other.example",
            {
                "sender": "@mallory:other.example",
                "type": "m.t",
                "message_id": "4",
                "messages": {alice.user_id: {adev.device_id: "not an object"}},
            },
        ),
    ]:
        await hs.to_device.on_direct_to_device(origin, content)
    assert await hs.storage.to_device.inbox(alice.user_id, adev.device_id, 0, 1 << 62, 10) == []
    # Device list and signing key updates about users of another server, or of ours, or malformed.
    for origin, content in [
        ("evil.example", {"user_id": "@mallory:other.example", "device_id": "D", "stream_id": 1}),
        ("other.example", {"user_id": "@mallory:other.example", "device_id": "D", "stream_id": "1"}),
        ("other.example", {"user_id": alice.user_id, "device_id": "D", "stream_id": 1}),
        (
            "other.example",
            {"user_id": "@mallory:other.example", "device_id": "D", "stream_id": 1, "prev_id": "x"},
        ),
    ]:
        await hs.device_lists.on_device_list_update(origin, content)
    await hs.device_lists.on_signing_key_update(
        "evil.example", {"user_id": alice.user_id, "master_key": {"user_id": alice.user_id, "keys": {}}}
    )
    assert await hs.storage.device_lists.get_remote_list("@mallory:other.example") is None
    assert await hs.storage.e2e_keys.get_cross_signing_keys(alice.user_id) == {}
    assert await hs.storage.device_lists.max_position() == lists_before
