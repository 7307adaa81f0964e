"""matrix-nio's media calls against a real Ranvier: upload (plain and encrypted), download, thumbnail and
the content repository config, on the paths nio really uses (authenticated media, query-string tokens)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nio import (
    AsyncClient,
    ContentRepositoryConfigResponse,
    MemoryDownloadResponse,
    RegisterResponse,
    ThumbnailResponse,
    UploadResponse,
)
from nio.crypto.attachments import decrypt_attachment
from PIL import Image

from ranvier.app import Homeserver

from .conftest import image_bytes, start_media_server


@pytest.fixture
async def nio_client(tmp_path: Path) -> AsyncIterator[tuple[Homeserver, AsyncClient]]:
    hs = await start_media_server(tmp_path)
    client = AsyncClient(f"http://127.0.0.1:{hs.ports['client']}", "@alice:ignored")
    try:
        resp = await client.register("alice", "correct horse battery staple")
        assert isinstance(resp, RegisterResponse), resp
        yield hs, client
    finally:
        await client.close()
        await hs.stop()


async def test_nio_upload_download_thumbnail(nio_client: tuple[Homeserver, AsyncClient]) -> None:
    hs, client = nio_client
    data = image_bytes("PNG", (800, 600))
    uploaded, keys = await client.upload(
        lambda _got, _limit: io.BytesIO(data),
        content_type="image/png",
        filename="photo.png",
        filesize=len(data),
    )
    assert isinstance(uploaded, UploadResponse), uploaded
    assert keys is None
    assert uploaded.content_uri.startswith(f"mxc://{hs.server_name}/")

    downloaded = await client.download(mxc=uploaded.content_uri)
    assert isinstance(downloaded, MemoryDownloadResponse), downloaded
    assert downloaded.body == data
    assert downloaded.content_type == "image/png"
    assert downloaded.filename == "photo.png"

    renamed = await client.download(mxc=uploaded.content_uri, filename="other.png")
    assert isinstance(renamed, MemoryDownloadResponse) and renamed.filename == "other.png"

    server_name, media_id = uploaded.content_uri[len("mxc://") :].split("/")
    thumb = await client.thumbnail(server_name, media_id, 96, 96)
    assert isinstance(thumb, ThumbnailResponse), thumb
    # nio asks for scale 96x96: the smallest scale size at least that big is 320x240 (4:3 fills it).
    assert Image.open(io.BytesIO(thumb.body)).size == (320, 240)
    assert thumb.content_type == "image/png"

    config = await client.content_repository_config()
    assert isinstance(config, ContentRepositoryConfigResponse), config
    assert config.upload_size == hs.config.media.max_upload_size


async def test_nio_encrypted_attachment_round_trip(nio_client: tuple[Homeserver, AsyncClient]) -> None:
    _hs, client = nio_client
    secret = b"an encrypted attachment " * 500
    uploaded, keys = await client.upload(
        lambda _got, _limit: io.BytesIO(secret),
        content_type="application/octet-stream",
        encrypt=True,
        filesize=len(secret),
    )
    assert isinstance(uploaded, UploadResponse), uploaded
    assert keys is not None
    downloaded = await client.download(mxc=uploaded.content_uri)
    assert isinstance(downloaded, MemoryDownloadResponse), downloaded
    assert downloaded.body != secret
    plain = decrypt_attachment(downloaded.body, keys["key"]["k"], keys["hashes"]["sha256"], keys["iv"])
    assert plain == secret
