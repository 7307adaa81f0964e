"""mautrix-python's media calls against a real Ranvier: upload, create + upload to the created mxc,
download and thumbnail (authenticated media, which mautrix picks because /versions says v1.11), config."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import aiohttp
import pytest
from mautrix.api import HTTPAPI
from mautrix.client import ClientAPI
from mautrix.types import UserID
from PIL import Image

from ranvier.app import Homeserver

from .conftest import image_bytes, register


@pytest.fixture
async def mautrix_client(media_server: Homeserver) -> AsyncIterator[ClientAPI]:
    async with aiohttp.ClientSession() as session:
        user = await register(media_server, session, "mautrix")
        api = HTTPAPI(base_url=user.base, token=user.token, client_session=session)
        yield ClientAPI(mxid=UserID(user.user_id), api=api)


async def test_mautrix_media_calls(mautrix_client: ClientAPI, media_server: Homeserver) -> None:
    client = mautrix_client
    data = image_bytes("JPEG", (640, 480))
    mxc = await client.upload_media(data, mime_type="image/jpeg", filename="m.jpg")
    assert mxc.startswith(f"mxc://{media_server.server_name}/")
    assert await client.download_media(mxc) == data
    thumb = await client.download_thumbnail(mxc, width=96, height=96, resize_method="crop")
    assert Image.open(io.BytesIO(thumb)).size == (96, 96)

    created = await client.create_mxc()
    same = await client.upload_media(b"later", mime_type="text/plain", mxc=created.content_uri)
    assert same == created.content_uri
    assert await client.download_media(created.content_uri) == b"later"

    config = await client.get_media_repo_config()
    assert config.upload_size == media_server.config.media.max_upload_size
