"""Media administration (Synapse's admin API shape): quarantine and its effect on every way of reading the
media, deleting one media and a user's media (files removed once unused), admins only."""

from __future__ import annotations

from pathlib import Path

from ranvier.app import Homeserver

from .conftest import MediaClient, image_bytes, register

ADMIN = "/_synapse/admin/v1"


async def _admin(alice: MediaClient) -> MediaClient:
    admin = await register(alice.hs, alice.session, "root")
    await alice.hs.storage.db.execute("UPDATE users SET is_admin = 1 WHERE user_id = ?", (admin.user_id,))
    return admin


def _files(hs: Homeserver) -> int:
    return sum(1 for p in (Path(hs.config.data_dir) / "media" / "content").rglob("*") if p.is_file())


async def _status(client: MediaClient, verb: str, path: str, **params: str) -> int:
    async with client.session.request(verb, client.url(path), params=params, headers=client.auth) as resp:
        await resp.read()
        return resp.status


async def test_quarantine_hides_media_everywhere(alice: MediaClient) -> None:
    admin = await _admin(alice)
    uri = await alice.upload(image_bytes("PNG", (300, 300)), "image/png")
    server, _, media_id = uri[len("mxc://") :].partition("/")
    download = f"/_matrix/client/v1/media/download/{server}/{media_id}"
    thumb = f"/_matrix/client/v1/media/thumbnail/{server}/{media_id}"
    assert await _status(alice, "GET", download) == 200
    assert (
        await _status(alice, "POST", f"{ADMIN}/media/quarantine/{server}/{media_id}") == 403
    )  # not an admin
    assert await _status(admin, "POST", f"{ADMIN}/media/quarantine/{server}/{media_id}") == 200
    assert await _status(alice, "GET", download) == 404
    assert await _status(alice, "GET", thumb, width="32", height="32") == 404
    assert await _status(admin, "POST", f"{ADMIN}/media/unquarantine/{server}/{media_id}") == 200
    assert await _status(alice, "GET", download) == 200
    assert await _status(admin, "POST", f"{ADMIN}/media/quarantine/{server}/nosuchmedia") == 404


async def test_delete_media_and_a_users_media(alice: MediaClient) -> None:
    admin = await _admin(alice)
    a = await alice.upload(b"first file", "text/plain")
    await alice.upload(b"second file", "text/plain", filename="b.txt")
    await alice.upload(b"second file", "text/plain")  # the same bytes: one file for both
    await admin.upload(b"admin's own", "text/plain")
    assert _files(alice.hs) == 3
    server, _, a_id = a[len("mxc://") :].partition("/")

    async with admin.session.get(admin.url(f"{ADMIN}/users/{alice.user_id}/media"), headers=admin.auth) as r:
        listed = await r.json()
    assert listed["total"] == 3
    assert {m["media_length"] for m in listed["media"]} == {10, 11}
    assert any(m["upload_name"] == "b.txt" for m in listed["media"])

    async with admin.session.delete(admin.url(f"{ADMIN}/media/{server}/{a_id}"), headers=admin.auth) as r:
        assert await r.json() == {"deleted_media": [a_id], "total": 1}
    assert await _status(alice, "GET", f"/_matrix/client/v1/media/download/{server}/{a_id}") == 404
    assert _files(alice.hs) == 2
    assert await _status(admin, "DELETE", f"{ADMIN}/media/other.example/{a_id}") == 400

    async with admin.session.delete(
        admin.url(f"{ADMIN}/users/{alice.user_id}/media"), headers=admin.auth
    ) as r:
        assert (await r.json())["total"] == 2
    assert _files(alice.hs) == 1  # only the admin's own upload is left


async def test_deleting_media_deletes_its_thumbnails(alice: MediaClient) -> None:
    admin = await _admin(alice)
    uri = await alice.upload(image_bytes("PNG", (500, 400)), "image/png")
    small = await alice.upload(image_bytes("PNG", (20, 20)), "image/png")  # its own thumbnail (fits the box)
    for media in (uri, small):
        server, _, media_id = media[len("mxc://") :].partition("/")
        for w, h, method in ((32, 32, "crop"), (320, 240, "scale")):
            thumb = f"/_matrix/client/v1/media/thumbnail/{server}/{media_id}"
            assert await _status(alice, "GET", thumb, width=str(w), height=str(h), method=method) == 200
    assert _files(alice.hs) == 4  # two originals, two thumbnails of the big one
    async with admin.session.delete(
        admin.url(f"{ADMIN}/users/{alice.user_id}/media"), headers=admin.auth
    ) as r:
        assert (await r.json())["total"] == 2
    assert _files(alice.hs) == 0
    assert await alice.hs.storage.db.fetchval("SELECT COUNT(*) FROM media_thumbnails") == 0


async def test_room_media_listed_and_quarantined(alice: MediaClient) -> None:
    admin = await _admin(alice)
    image = await alice.upload(image_bytes("PNG", (200, 200)), "image/png")
    thumb = await alice.upload(image_bytes("PNG", (20, 20)), "image/png")
    other = await alice.upload(b"not in the room", "text/plain")
    v3 = "/_matrix/client/v3"
    async with alice.session.post(alice.url(f"{v3}/createRoom"), json={}, headers=alice.auth) as r:
        room_id = (await r.json())["room_id"]
    content = {
        "msgtype": "m.image",
        "body": "a picture",
        "url": image,
        "info": {"thumbnail_url": thumb},
        "external": "mxc://remote.example/someRemoteMedia",
    }
    async with alice.session.put(
        alice.url(f"{v3}/rooms/{room_id}/send/m.room.message/t1"), json=content, headers=alice.auth
    ) as r:
        assert r.status == 200, await r.text()

    async with admin.session.get(admin.url(f"{ADMIN}/room/{room_id}/media"), headers=admin.auth) as r:
        listed = await r.json()
    assert listed == {"local": sorted([image, thumb]), "remote": ["mxc://remote.example/someRemoteMedia"]}
    async with admin.session.post(
        admin.url(f"{ADMIN}/room/{room_id}/media/quarantine"), headers=admin.auth
    ) as r:
        assert await r.json() == {"num_quarantined": 2}  # the remote one is not cached here
    for uri, status in ((image, 404), (thumb, 404), (other, 200)):
        server, _, media_id = uri[len("mxc://") :].partition("/")
        assert await _status(alice, "GET", f"/_matrix/client/v1/media/download/{server}/{media_id}") == status
    assert await _status(alice, "GET", f"{ADMIN}/room/{room_id}/media") == 403


async def test_purge_media_cache(alice: MediaClient) -> None:
    """Cached remote media fetched before ``before_ts`` are forgotten with their files (quarantined ones
    stay); admins only; ``before_ts`` is required."""
    from ranvier.storage.sql.media import RemoteMedia

    hs, repo = alice.hs, alice.hs.media
    old_file = await repo.files.write_bytes(b"old remote bytes")
    new_file = await repo.files.write_bytes(b"new remote bytes")
    kept_file = await repo.files.write_bytes(b"quarantined remote bytes")
    for media_id, stored, ts, quarantined in (
        ("old", old_file, 1_000, False),
        ("new", new_file, 5_000, False),
        ("bad", kept_file, 1_000, True),
    ):
        media = RemoteMedia(
            "remote.example", media_id, ts, "text/plain", None, stored.size, stored.sha256, False
        )
        await repo.store.store_remote(media)
        if quarantined:
            await repo.store.set_remote_quarantined("remote.example", media_id, True)
    files_before = _files(hs)
    assert await _status(alice, "POST", f"{ADMIN}/purge_media_cache", before_ts="2000") == 403
    admin = await _admin(alice)
    assert await _status(admin, "POST", f"{ADMIN}/purge_media_cache") == 400
    async with admin.session.post(
        admin.url(f"{ADMIN}/purge_media_cache"), params={"before_ts": "2000"}, headers=admin.auth
    ) as r:
        assert r.status == 200 and await r.json() == {"deleted": 1}
    assert await repo.store.get_remote("remote.example", "old") is None
    assert await repo.store.get_remote("remote.example", "new") is not None
    assert await repo.store.get_remote("remote.example", "bad") is not None
    assert _files(hs) == files_before - 1
