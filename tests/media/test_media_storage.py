"""The media metadata store on SQLite and PostgreSQL, and the content-addressed file store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ranvier.media.errors import BodyTooLarge
from ranvier.media.files import FileStore
from ranvier.storage.sql.engine import Database
from ranvier.storage.sql.media import MediaExists, MediaStore, RemoteMedia, Thumbnail

SHA_A = "a" * 64
SHA_B = "b" * 64


async def test_local_media_lifecycle(db: Database) -> None:
    store = MediaStore(db)
    await store.store_local("m1", "@alice:x", 1000, "image/png", "cat.png", 10, SHA_A)
    row = await store.get_local("m1")
    assert row is not None and row.uploaded and not row.quarantined
    assert (row.user_id, row.content_type, row.upload_name, row.size, row.sha256) == (
        "@alice:x",
        "image/png",
        "cat.png",
        10,
        SHA_A,
    )
    with pytest.raises(MediaExists):
        await store.store_local("m1", "@bob:x", 1000, "text/plain", None, 1, SHA_B)
    await store.set_local_quarantined("m1", True)
    row = await store.get_local("m1")
    assert row is not None and row.quarantined
    assert await store.sha256_in_use(SHA_A)
    assert await store.delete_local("m1") == SHA_A
    assert not await store.sha256_in_use(SHA_A)
    assert await store.get_local("m1") is None


async def test_pending_media(db: Database) -> None:
    store = MediaStore(db)
    await store.create_pending("p1", "@alice:x", 1000, 5000)
    await store.create_pending("p2", "@alice:x", 1000, 2000)
    assert await store.count_pending("@alice:x", 1500) == 2
    assert await store.count_pending("@alice:x", 3000) == 1  # p2 lapsed
    row = await store.get_local("p1")
    assert row is not None and not row.uploaded
    assert await store.complete_pending("p1", 1600, "text/plain", "a.txt", 3, SHA_A)
    assert not await store.complete_pending("p1", 1700, "text/plain", "b.txt", 3, SHA_B)  # never overwritten
    row = await store.get_local("p1")
    assert row is not None and row.sha256 == SHA_A and row.upload_name == "a.txt"
    assert await store.count_pending("@alice:x", 1500) == 1
    assert await store.delete_expired_pending(3000) == 1
    assert await store.get_local("p2") is None
    assert [m.media_id for m in await store.local_media_of_user("@alice:x")] == ["p1"]


async def test_remote_media_stored_once_and_thumbnails(db: Database) -> None:
    store = MediaStore(db)
    first = RemoteMedia("other.example", "r1", 10, "image/jpeg", None, 5, SHA_A, False)
    second = RemoteMedia("other.example", "r1", 20, "image/png", "x", 6, SHA_B, False)
    assert await store.store_remote(first) == first
    assert await store.store_remote(second) == first  # the first fetch wins
    assert await store.get_remote("other.example", "r1") == first
    await store.set_remote_quarantined("other.example", "r1", True)
    got = await store.get_remote("other.example", "r1")
    assert got is not None and got.quarantined
    thumb = Thumbnail(SHA_A, 32, 32, "crop", "image/jpeg", 32, 32, 100, SHA_B)
    await store.store_thumbnail(thumb)
    await store.store_thumbnail(thumb)
    assert await store.get_thumbnail(SHA_A, 32, 32, "crop") == thumb
    assert await store.get_thumbnail(SHA_A, 32, 32, "scale") is None
    assert await store.sha256_in_use(SHA_B)


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_file_store_streams_and_refuses_past_the_limit(tmp_path: Path) -> None:
    files = FileStore(tmp_path / "media")
    files.prepare()
    stored = await files.write_stream(_chunks(b"hello ", b"world"), limit=11)
    assert stored.size == 11
    assert files.path_for(stored.sha256).read_bytes() == b"hello world"
    again = await files.write_stream(_chunks(b"hello world"), limit=100)
    assert again == stored
    with pytest.raises(BodyTooLarge):
        await files.write_stream(_chunks(b"x" * 10, b"y" * 10), limit=15)
    assert list((tmp_path / "media" / "tmp").iterdir()) == []
    assert sum(1 for p in (tmp_path / "media" / "content").rglob("*") if p.is_file()) == 1
    with pytest.raises(ValueError):
        files.path_for("../../etc/passwd")
