"""Server-side key backup over HTTP: version create/get/update/delete, keys at the three levels, the
replacement rule, etags and the wrong-version errors; and the store on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import aiohttp

from ranvier.app import Homeserver
from ranvier.storage.sql.e2ee_backup import RoomKey
from ranvier.storage.sql.engine import Database
from ranvier.storage.sql.storage import SqlStorage
from tests.scenarios.servers import Client

ALG = "m.megolm_backup.v1.curve25519-aes-sha2"


def key(index: int, forwarded: int = 0, verified: bool = False, tag: str = "x") -> dict[str, Any]:
    return {
        "first_message_index": index,
        "forwarded_count": forwarded,
        "is_verified": verified,
        "session_data": {"ciphertext": tag, "ephemeral": "e", "mac": "m"},
    }


async def test_key_backup_versions_and_keys(hs: Homeserver, session: aiohttp.ClientSession) -> None:
    alice = await Client.register(session, hs, "alice")
    bob = await Client.register(session, hs, "bob")
    status, err = await alice.call("GET", "/room_keys/version")
    assert status == 404 and err["errcode"] == "M_NOT_FOUND"
    v1 = (
        await alice.ok("POST", "/room_keys/version", {"algorithm": ALG, "auth_data": {"public_key": "p1"}})
    )["version"]
    current = await alice.ok("GET", "/room_keys/version")
    assert current == {
        "algorithm": ALG,
        "auth_data": {"public_key": "p1"},
        "count": 0,
        "etag": current["etag"],
        "version": v1,
    }
    status, _ = await bob.call("GET", f"/room_keys/version/{v1}")  # another user's backup is not visible
    assert status == 404

    # Keys at three levels; GET answers at three levels.
    put = await alice.ok(
        "PUT", "/room_keys/keys", {"rooms": {"!r1:x": {"sessions": {"s1": key(5)}}}}, version=v1
    )
    assert put["count"] == 1 and put["etag"] != current["etag"]
    await alice.ok("PUT", "/room_keys/keys/!r1:x", {"sessions": {"s2": key(0)}}, version=v1)
    await alice.ok("PUT", "/room_keys/keys/!r2:x/s3", key(1), version=v1)
    everything = await alice.ok("GET", "/room_keys/keys", version=v1)
    assert set(everything["rooms"]) == {"!r1:x", "!r2:x"}
    assert set(everything["rooms"]["!r1:x"]["sessions"]) == {"s1", "s2"}
    assert (await alice.ok("GET", "/room_keys/keys/!r2:x", version=v1)) == {"sessions": {"s3": key(1)}}
    assert (await alice.ok("GET", "/room_keys/keys/!nothing:x", version=v1)) == {"sessions": {}}
    assert (await alice.ok("GET", "/room_keys/keys/!r1:x/s1", version=v1)) == key(5)
    status, err = await alice.call("GET", "/room_keys/keys/!r1:x/nope", version=v1)
    assert status == 404 and err["errcode"] == "M_NOT_FOUND"

    # The replacement rule: a worse key does not replace (etag unchanged), a better one does.
    before = (await alice.ok("GET", "/room_keys/version"))["etag"]
    worse = await alice.ok("PUT", "/room_keys/keys/!r1:x/s1", key(7), version=v1)
    assert worse["etag"] == before and (await alice.ok("GET", "/room_keys/keys/!r1:x/s1", version=v1)) == key(
        5
    )
    await alice.ok("PUT", "/room_keys/keys/!r1:x/s1", key(9, verified=True, tag="v"), version=v1)
    assert (await alice.ok("GET", "/room_keys/keys/!r1:x/s1", version=v1))["session_data"][
        "ciphertext"
    ] == "v"
    await alice.ok(
        "PUT", "/room_keys/keys/!r1:x/s1", key(9, verified=True, forwarded=0, tag="same"), version=v1
    )
    assert (await alice.ok("GET", "/room_keys/keys/!r1:x/s1", version=v1))["session_data"][
        "ciphertext"
    ] == "v"
    await alice.ok("PUT", "/room_keys/keys/!r1:x/s1", key(2, verified=True, tag="lower"), version=v1)
    assert (await alice.ok("GET", "/room_keys/keys/!r1:x/s1", version=v1))["session_data"][
        "ciphertext"
    ] == "lower"

    # Updating auth_data: same algorithm only, matching version.
    status, err = await alice.call("PUT", f"/room_keys/version/{v1}", {"algorithm": "other", "auth_data": {}})
    assert status == 400 and err["errcode"] == "M_INVALID_PARAM"
    status, err = await alice.call(
        "PUT", f"/room_keys/version/{v1}", {"algorithm": ALG, "auth_data": {}, "version": "99"}
    )
    assert status == 400
    await alice.ok("PUT", f"/room_keys/version/{v1}", {"algorithm": ALG, "auth_data": {"public_key": "p1b"}})
    assert (await alice.ok("GET", f"/room_keys/version/{v1}"))["auth_data"] == {"public_key": "p1b"}

    # A new version becomes current: writing to the old one is refused, naming the current one.
    v2 = (
        await alice.ok("POST", "/room_keys/version", {"algorithm": ALG, "auth_data": {"public_key": "p2"}})
    )["version"]
    assert int(v2) > int(v1)
    status, err = await alice.call("PUT", "/room_keys/keys/!r1:x/s9", key(0), version=v1)
    assert status == 403 and err == {
        "errcode": "M_WRONG_ROOM_KEYS_VERSION",
        "error": err["error"],
        "current_version": v2,
    }
    status, err = await alice.call("PUT", "/room_keys/keys/!r1:x/s9", key(0), version="12345")
    assert status == 404
    status, err = await alice.call("PUT", "/room_keys/keys/!r1:x/s9", key(0))
    assert status == 400 and err["errcode"] == "M_MISSING_PARAM"

    # Deleting keys at each level, then the version itself (twice is fine; an unknown one is 404).
    deleted = await alice.ok("DELETE", "/room_keys/keys/!r1:x/s2", version=v1)
    assert deleted["count"] == 2
    deleted = await alice.ok("DELETE", "/room_keys/keys/!r1:x", version=v1)
    assert deleted["count"] == 1
    deleted = await alice.ok("DELETE", "/room_keys/keys", version=v1)
    assert deleted["count"] == 0
    await alice.ok("DELETE", f"/room_keys/version/{v2}")
    await alice.ok("DELETE", f"/room_keys/version/{v2}")
    status, _ = await alice.call("DELETE", "/room_keys/version/777")
    assert status == 404
    assert (await alice.ok("GET", "/room_keys/version"))["version"] == v1  # the newest live version
    v3 = (await alice.ok("POST", "/room_keys/version", {"algorithm": ALG, "auth_data": {}}))["version"]
    assert int(v3) > int(v2)  # deleted versions are never reused
    status, err = await alice.call("POST", "/room_keys/version", {"algorithm": ALG})
    assert status == 400


async def test_backup_store(db: Database) -> None:
    storage = await SqlStorage.open(db)
    store = storage.key_backup
    version = await store.create_version("@a:x", ALG, {"k": 1})
    etag, count = await store.put_keys("@a:x", version, [RoomKey("!r:x", "s", 3, 1, False, {"c": 1})])
    assert count == 1
    same_etag, _ = await store.put_keys("@a:x", version, [RoomKey("!r:x", "s", 3, 2, False, {"c": 2})])
    assert same_etag == etag
    new_etag, _ = await store.put_keys("@a:x", version, [RoomKey("!r:x", "s", 3, 0, False, {"c": 3})])
    assert new_etag != etag
    assert [k.session_data for k in await store.get_keys("@a:x", version)] == [{"c": 3}]
    assert await store.delete_version("@a:x", version)
    assert await store.get_version("@a:x") is None
    assert await store.get_keys("@a:x", version) == []
