"""Device lists on one server: /sync device_lists.changed/left and /keys/changes follow key uploads, joins,
leaves and device deletion (with its user-interactive auth); cross-signing and signatures round-trip."""

from __future__ import annotations

import aiohttp
import nacl.signing

from ranvier.app import Homeserver

from .helpers import public, sign
from .test_keys_local import PASSWORD_OF, _login, _user


async def test_device_list_changes_in_sync_and_keys_changes(
    hs: Homeserver, session: aiohttp.ClientSession
) -> None:
    alice, adev = await _user(session, hs, "alice")
    bob, bdev = await _user(session, hs, "bob")
    carol, cdev = await _user(session, hs, "carol")
    room_id = await alice.create_room()
    await bob.ok("POST", f"/join/{room_id}")
    await alice.sync()
    start = alice.since

    # Bob uploads keys: Alice shares a room with him and sees the change; Carol's upload is not hers.
    await bob.ok("POST", "/keys/upload", {"device_keys": bdev.device_keys()})
    await carol.ok("POST", "/keys/upload", {"device_keys": cdev.device_keys()})
    sync = await alice.sync(timeout_ms=2000)
    assert sync["device_lists"] == {"changed": [bob.user_id], "left": []}

    # Carol joins: she now shares a room, so she is "changed" for Alice.
    await carol.ok("POST", f"/join/{room_id}")
    sync = await alice.sync(timeout_ms=2000)
    assert carol.user_id in sync["device_lists"]["changed"]

    # Bob leaves: no room shared any more.
    await bob.ok("POST", f"/rooms/{room_id}/leave", {})
    sync = await alice.sync(timeout_ms=2000)
    assert sync["device_lists"]["left"] == [bob.user_id]
    assert bob.user_id not in sync["device_lists"]["changed"]

    changes = await alice.ok("GET", "/keys/changes", **{"from": start, "to": alice.since})
    assert changes["left"] == [bob.user_id]
    assert carol.user_id in changes["changed"] and bob.user_id not in changes["changed"]
    status, err = await alice.call("GET", "/keys/changes", **{"from": "garbage", "to": alice.since})
    assert status == 400 and err["errcode"] == "M_INVALID_PARAM"
    assert adev.device_id


async def test_deleting_a_device_needs_the_password_and_removes_its_keys(
    hs: Homeserver, session: aiohttp.ClientSession
) -> None:
    alice, adev = await _user(session, hs, "alice")
    bob, _ = await _user(session, hs, "bob")
    alice2, adev2 = await _login(session, hs, "alice")
    room_id = await alice.create_room()
    await bob.ok("POST", f"/join/{room_id}")
    await alice2.ok(
        "POST", "/keys/upload", {"device_keys": adev2.device_keys(), "one_time_keys": adev2.one_time_keys(2)}
    )
    await bob.ok("PUT", "/sendToDevice/m.test/1", {"messages": {alice.user_id: {adev2.device_id: {"x": 1}}}})
    await bob.sync()

    status, challenge = await alice.call("DELETE", f"/devices/{adev2.device_id}", {})
    assert status == 401 and challenge["flows"] == [{"stages": ["m.login.password"]}]
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "wrong",
        "session": challenge["session"],
    }
    status, _ = await alice.call("DELETE", f"/devices/{adev2.device_id}", {"auth": auth})
    assert status == 401
    auth["password"] = PASSWORD_OF["alice"]
    await alice.ok("DELETE", f"/devices/{adev2.device_id}", {"auth": auth})

    # Keys, one-time keys, inbox and token are gone; Bob is told Alice's devices changed.
    status, _ = await alice2.call("GET", "/account/whoami")
    assert status == 401
    queried = await bob.ok("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert adev2.device_id not in queried["device_keys"][alice.user_id]
    claim = await bob.ok(
        "POST", "/keys/claim", {"one_time_keys": {alice.user_id: {adev2.device_id: "signed_curve25519"}}}
    )
    assert claim["one_time_keys"] == {}
    assert await hs.storage.to_device.inbox(alice.user_id, adev2.device_id, 0, 1 << 62, 10) == []
    sync = await bob.sync(timeout_ms=2000)
    assert alice.user_id in sync["device_lists"]["changed"]
    assert adev.device_id


async def test_cross_signing_and_signatures(hs: Homeserver, session: aiohttp.ClientSession) -> None:
    alice, adev = await _user(session, hs, "alice")
    bob, bdev = await _user(session, hs, "bob")
    await alice.ok("POST", "/keys/upload", {"device_keys": adev.device_keys()})
    uid = alice.user_id
    master, ssk, usk = (nacl.signing.SigningKey.generate() for _ in range(3))

    def cs_key(key: nacl.signing.SigningKey, usage: str) -> dict[str, object]:
        return {"user_id": uid, "usage": [usage], "keys": {f"ed25519:{public(key)}": public(key)}}

    master_key = sign(cs_key(master, "master"), uid, adev.ed_key_id, adev.ed)
    ssk_key = sign(cs_key(ssk, "self_signing"), uid, f"ed25519:{public(master)}", master)
    usk_key = sign(cs_key(usk, "user_signing"), uid, f"ed25519:{public(master)}", master)
    bad_ssk = sign(cs_key(ssk, "self_signing"), uid, f"ed25519:{public(master)}", usk)  # wrong signer
    status, err = await alice.call(
        "POST", "/keys/device_signing/upload", {"master_key": master_key, "self_signing_key": bad_ssk}
    )
    assert status == 400 and err["errcode"] == "M_INVALID_SIGNATURE"
    # First upload: no UIA needed (CS v1.11); repeating the same keys neither.
    body = {"master_key": master_key, "self_signing_key": ssk_key, "user_signing_key": usk_key}
    await alice.ok("POST", "/keys/device_signing/upload", body)
    await alice.ok("POST", "/keys/device_signing/upload", body)
    # Replacing them needs the password.
    new_master = nacl.signing.SigningKey.generate()
    status, challenge = await alice.call(
        "POST", "/keys/device_signing/upload", {"master_key": cs_key(new_master, "master")}
    )
    assert status == 401 and "session" in challenge

    # The self-signing key signs Alice's device; the master key's signature by the device is kept too.
    device_keys = await hs.storage.e2e_keys.get_device_keys(uid, adev.device_id)
    signed = sign(dict(device_keys, signatures={}), uid, f"ed25519:{public(ssk)}", ssk)
    answer = await alice.ok("POST", "/keys/signatures/upload", {uid: {adev.device_id: signed}})
    assert answer["failures"] == {}
    wrong_role = sign(
        dict(device_keys, signatures={}), uid, f"ed25519:{public(usk)}", usk
    )  # a valid signature
    answer = await alice.ok("POST", "/keys/signatures/upload", {uid: {adev.device_id: wrong_role}})
    assert answer["failures"][uid][adev.device_id]["errcode"] == "M_INVALID_SIGNATURE"
    forged = sign(dict(device_keys, signatures={}), uid, f"ed25519:{public(ssk)}", usk)
    answer = await alice.ok("POST", "/keys/signatures/upload", {uid: {adev.device_id: forged}})
    assert answer["failures"][uid][adev.device_id]["errcode"] == "M_INVALID_SIGNATURE"

    # Bob signs Alice's master key with his user-signing key: only Bob sees that signature.
    await bob.ok("POST", "/keys/upload", {"device_keys": bdev.device_keys()})
    bmaster, busk = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    bob_master = {
        "user_id": bob.user_id,
        "usage": ["master"],
        "keys": {f"ed25519:{public(bmaster)}": public(bmaster)},
    }
    bob_usk = sign(
        {
            "user_id": bob.user_id,
            "usage": ["user_signing"],
            "keys": {f"ed25519:{public(busk)}": public(busk)},
        },
        bob.user_id,
        f"ed25519:{public(bmaster)}",
        bmaster,
    )
    await bob.ok(
        "POST", "/keys/device_signing/upload", {"master_key": bob_master, "user_signing_key": bob_usk}
    )
    cross = sign(
        {k: v for k, v in master_key.items() if k != "signatures"},
        bob.user_id,
        f"ed25519:{public(busk)}",
        busk,
    )
    answer = await bob.ok("POST", "/keys/signatures/upload", {uid: {public(master): cross}})
    assert answer["failures"] == {}

    seen_by_bob = await bob.ok("POST", "/keys/query", {"device_keys": {uid: []}})
    assert seen_by_bob["master_keys"][uid]["signatures"][bob.user_id] == cross["signatures"][bob.user_id]
    assert seen_by_bob["self_signing_keys"][uid] == ssk_key
    assert uid not in seen_by_bob["user_signing_keys"]
    device_sigs = seen_by_bob["device_keys"][uid][adev.device_id]["signatures"][uid]
    assert device_sigs[f"ed25519:{public(ssk)}"] == signed["signatures"][uid][f"ed25519:{public(ssk)}"]
    assert adev.ed_key_id in device_sigs

    seen_by_alice = await alice.ok("POST", "/keys/query", {"device_keys": {uid: []}})
    assert bob.user_id not in seen_by_alice["master_keys"][uid].get("signatures", {})
    assert seen_by_alice["user_signing_keys"][uid] == usk_key


async def test_renaming_a_device_is_a_device_list_change(
    hs: Homeserver, session: aiohttp.ClientSession
) -> None:
    alice, adev = await _user(session, hs, "alice")
    bob, _ = await _user(session, hs, "bob")
    room_id = await alice.create_room()
    await bob.ok("POST", f"/join/{room_id}")
    await alice.ok("POST", "/keys/upload", {"device_keys": adev.device_keys()})
    await bob.sync()
    await alice.ok("PUT", f"/devices/{adev.device_id}", {"display_name": "Laptop"})
    sync = await bob.sync(timeout_ms=2000)
    assert sync["device_lists"]["changed"] == [alice.user_id]
    queried = await bob.ok("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert queried["device_keys"][alice.user_id][adev.device_id]["unsigned"] == {
        "device_display_name": "Laptop"
    }
    # The same name again changes nothing.
    await alice.ok("PUT", f"/devices/{adev.device_id}", {"display_name": "Laptop"})
    assert (await bob.sync())["device_lists"]["changed"] == []
