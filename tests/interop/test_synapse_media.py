"""Media over federation with a real Synapse, both ways (authenticated media, S2S "Content Repository"):
a Synapse user downloads Ranvier media through Synapse, and a Ranvier user downloads Synapse media (and a
thumbnail of it) through Ranvier."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import aiohttp
import pytest
from PIL import Image

from tests.media.conftest import image_bytes, register
from tests.scenarios.servers import Homeserver, start_server
from tests.workers.target import MEDIA_LAYOUT, start_deployed_server, workers_target

from .synapse import SynapseServer

pytestmark = pytest.mark.interop


@pytest.fixture
async def ranvier(tmp_path: Path) -> AsyncIterator[Homeserver]:
    """The interop suite's Ranvier; ``RANVIER_TARGET=workers``: a deployment with a media worker, which
    serves uploads, downloads and thumbnails (and federation inbound the other server's media requests)."""
    if workers_target():
        deployed = await start_deployed_server(tmp_path / "ranvier", None, None, None, {}, MEDIA_LAYOUT)
        hs = cast(Homeserver, deployed)
    else:
        hs = await start_server(tmp_path / "ranvier")
    yield hs
    await hs.stop()


def _ids(uri: str) -> tuple[str, str]:
    server, _, media_id = uri[len("mxc://") :].partition("/")
    return server, media_id


async def test_synapse_user_downloads_ranvier_media(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession
) -> None:
    alice = await register(ranvier, session, "alice")
    data = image_bytes("PNG", (640, 480))
    uri = await alice.upload(data, "image/png", filename="from ranvier.png")
    server, media_id = _ids(uri)
    assert server == ranvier.server_name

    _user, token = synapse.register("media_reader_1")
    auth = {"Authorization": f"Bearer {token}"}
    url = f"{synapse.client_url}/_matrix/client/v1/media/download/{server}/{media_id}"
    async with session.get(url, headers=auth) as resp:
        body = await resp.read()
        assert resp.status == 200, body[:500]
        assert body == data
        assert resp.headers["Content-Type"] == "image/png"
        # Our file name, as Synapse writes it (a space makes it use filename*).
        disposition = resp.headers["Content-Disposition"]
        assert (
            'filename="from ranvier.png"' in disposition
            or "filename*=utf-8''from%20ranvier.png" in disposition
        )
    # Synapse's thumbnail of it, fetched from our federation thumbnail endpoint or made from the download.
    url = f"{synapse.client_url}/_matrix/client/v1/media/thumbnail/{server}/{media_id}"
    async with session.get(
        url, params={"width": "32", "height": "32", "method": "crop"}, headers=auth
    ) as resp:
        body = await resp.read()
        assert resp.status == 200, body[:500]
        assert Image.open(io.BytesIO(body)).size == (32, 32)


async def test_ranvier_user_downloads_synapse_media(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession
) -> None:
    _user, token = synapse.register("media_writer_1")
    data = image_bytes("JPEG", (1024, 768))
    async with session.post(
        f"{synapse.client_url}/_matrix/media/v3/upload",
        params={"filename": "from synapse.jpg"},
        data=data,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "image/jpeg"},
    ) as resp:
        answer = await resp.json()
        assert resp.status == 200, answer
    server, media_id = _ids(answer["content_uri"])
    assert server == synapse.server_name

    bob = await register(ranvier, session, "bob")
    status_body_headers = []
    for _ in range(2):  # the second one from Ranvier's cache
        async with session.get(
            bob.url(f"/_matrix/client/v1/media/download/{server}/{media_id}"), headers=bob.auth
        ) as resp:
            status_body_headers.append((resp.status, await resp.read(), dict(resp.headers)))
    for status, body, headers in status_body_headers:
        assert status == 200, body[:500]
        assert body == data
        assert headers["Content-Type"] == "image/jpeg"
        assert headers["Content-Disposition"] == 'inline; filename="from synapse.jpg"'
    assert await ranvier.storage.db.fetchval("SELECT COUNT(*) FROM remote_media") == 1

    async with session.get(
        bob.url(f"/_matrix/client/v1/media/thumbnail/{server}/{media_id}"),
        params={"width": "320", "height": "240", "method": "scale"},
        headers=bob.auth,
    ) as resp:
        body = await resp.read()
        assert resp.status == 200, body[:500]
        assert Image.open(io.BytesIO(body)).size == (320, 240)
