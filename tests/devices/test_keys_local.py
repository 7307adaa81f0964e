"""E2EE on one server over HTTP: key upload/query/claim, to-device messages, device lists in /sync and
/keys/changes, device deletion, cross-signing and signatures."""

from __future__ import annotations

import aiohttp
import nacl.signing

from ranvier.app import Homeserver
from tests.scenarios.servers import Client

from .helpers import TestDevice, sign

PASSWORD_OF = {"alice": "pw-" + "alice" * 3, "bob": "pw-" + "bob" * 3}


async def _user(session: aiohttp.ClientSession, hs: Homeserver, name: str) -> tuple[Client, TestDevice]:
    client = await Client.register(session, hs, name)
    whoami = await client.ok("GET", "/account/whoami")
    return client, TestDevice(client.user_id, whoami["device_id"])


async def _login(session: aiohttp.ClientSession, hs: Homeserver, name: str) -> tuple[Client, TestDevice]:
    async with session.post(
        f"http://127.0.0.1:{hs.ports['client']}/_matrix/client/v3/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": name},
            "password": PASSWORD_OF[name],
        },
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    return Client(session, hs, body["user_id"], body["access_token"]), TestDevice(
        body["user_id"], body["device_id"]
    )


async def test_upload_is_validated(hs: Homeserver, session: aiohttp.ClientSession) -> None:
    alice, device = await _user(session, hs, "alice")
    keys = device.device_keys()
    wrong_user = dict(keys, user_id="@mallory:elsewhere")
    status, body = await alice.call("POST", "/keys/upload", {"device_keys": wrong_user})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    wrong_device = dict(keys, device_id="OTHER")
    status, body = await alice.call("POST", "/keys/upload", {"device_keys": wrong_device})
    assert status == 400
    tampered = dict(keys, algorithms=["m.megolm.v1.aes-sha2"])  # the signature no longer matches
    status, body = await alice.call("POST", "/keys/upload", {"device_keys": tampered})
    assert status == 400 and body["errcode"] == "M_INVALID_SIGNATURE"
    other = nacl.signing.SigningKey.generate()  # signed by a key that is not the device's
    forged = sign(
        {k: v for k, v in keys.items() if k != "signatures"}, device.user_id, device.ed_key_id, other
    )
    status, body = await alice.call("POST", "/keys/upload", {"device_keys": forged})
    assert status == 400 and body["errcode"] == "M_INVALID_SIGNATURE"
    status, body = await alice.call("POST", "/keys/upload", {"one_time_keys": {"nocolon": "x"}})
    assert status == 400
    # Nothing invalid was stored.
    answer = await alice.ok("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert answer["device_keys"][alice.user_id] == {}


async def test_upload_query_claim_and_counts(hs: Homeserver, session: aiohttp.ClientSession) -> None:
    alice, adev = await _user(session, hs, "alice")
    bob, _ = await _user(session, hs, "bob")
    await alice.ok("PUT", f"/devices/{adev.device_id}", {"display_name": "Alice's phone"})
    keys = adev.device_keys()
    answer = await alice.ok(
        "POST", "/keys/upload", {"device_keys": keys, "one_time_keys": adev.one_time_keys(3)}
    )
    assert answer["one_time_key_counts"] == {"signed_curve25519": 3}
    fallback = adev.one_time_keys(1, prefix="FFFF")
    fallback_id = next(iter(fallback))
    next(iter(fallback.values()))["fallback"] = True
    fallback = {fallback_id: sign(dict(fallback[fallback_id]), adev.user_id, adev.ed_key_id, adev.ed)}
    await alice.ok("POST", "/keys/upload", {"fallback_keys": fallback})

    sync = await alice.sync()
    assert sync["device_one_time_keys_count"]["signed_curve25519"] == 3
    assert sync["device_unused_fallback_key_types"] == ["signed_curve25519"]

    queried = await bob.ok("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    got = queried["device_keys"][alice.user_id][adev.device_id]
    assert got["keys"] == keys["keys"] and got["signatures"] == keys["signatures"]
    assert got["unsigned"]["device_display_name"] == "Alice's phone"

    claimed_ids = []
    for _ in range(3):
        claim = await bob.ok(
            "POST", "/keys/claim", {"one_time_keys": {alice.user_id: {adev.device_id: "signed_curve25519"}}}
        )
        (key_id,) = claim["one_time_keys"][alice.user_id][adev.device_id]
        claimed_ids.append(key_id)
    assert len(set(claimed_ids)) == 3 and fallback_id not in claimed_ids
    sync = await alice.sync()
    assert sync["device_one_time_keys_count"]["signed_curve25519"] == 0
    assert sync["device_unused_fallback_key_types"] == ["signed_curve25519"]
    # One-time keys exhausted: the fallback key, again and again, now marked used.
    for _ in range(2):
        claim = await bob.ok(
            "POST", "/keys/claim", {"one_time_keys": {alice.user_id: {adev.device_id: "signed_curve25519"}}}
        )
        assert list(claim["one_time_keys"][alice.user_id][adev.device_id]) == [fallback_id]
    sync = await alice.sync()
    assert sync["device_unused_fallback_key_types"] == []
    # A device without keys of that algorithm: nothing for it.
    claim = await bob.ok(
        "POST", "/keys/claim", {"one_time_keys": {alice.user_id: {adev.device_id: "other_alg"}}}
    )
    assert claim["one_time_keys"] == {}
    # A key id re-uploaded with other content is refused.
    again = adev.one_time_keys(1)
    await alice.ok("POST", "/keys/upload", {"one_time_keys": again})
    changed = {k: sign({"key": "different"}, adev.user_id, adev.ed_key_id, adev.ed) for k in again}
    status, _ = await alice.call("POST", "/keys/upload", {"one_time_keys": changed})
    assert status == 400


async def test_send_to_device(hs: Homeserver, session: aiohttp.ClientSession) -> None:
    alice, _adev = await _user(session, hs, "alice")
    bob, bdev = await _user(session, hs, "bob")
    bob2, _bdev2 = await _login(session, hs, "bob")
    await bob.sync()
    await bob2.sync()
    body = {"messages": {bob.user_id: {bdev.device_id: {"n": 1}}}}
    await alice.ok("PUT", "/sendToDevice/m.test/txn1", body)
    await alice.ok("PUT", "/sendToDevice/m.test/txn1", body)  # a retry: not delivered twice
    await alice.ok("PUT", "/sendToDevice/m.test/txn2", {"messages": {bob.user_id: {"*": {"n": 2}}}})

    before = bob.since
    first = await bob.sync(timeout_ms=1000)
    events = first["to_device"]["events"]
    assert [(e["type"], e["sender"], e["content"]) for e in events] == [
        ("m.test", alice.user_id, {"n": 1}),
        ("m.test", alice.user_id, {"n": 2}),
    ]
    other = await bob2.sync()
    assert [e["content"] for e in other["to_device"]["events"]] == [{"n": 2}]

    # Not acknowledged yet (same since again): delivered again. Acknowledged: gone.
    status, again = await bob.call("GET", "/sync", since=before, timeout="0")
    assert status == 200 and len(again["to_device"]["events"]) == 2
    later = await bob.sync()
    assert later["to_device"]["events"] == []
    assert await hs.storage.to_device.inbox(bob.user_id, bdev.device_id, 0, 1 << 62, 10) == []

    status, err = await alice.call("PUT", "/sendToDevice/m.test/txn3", {"messages": {"not-a-user": {}}})
    assert status == 400 and "errcode" in err
