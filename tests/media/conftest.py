"""A real Ranvier (client listener on loopback, SQLite) with a registered user, for the media tests."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from PIL import Image

from ranvier.app import Homeserver
from ranvier.config import parse_config
from tests.ports import free_port

# The storage suite's database fixtures (db_spec -> raw_db -> db), parametrized over both engines.
from tests.storage.conftest import db, db_spec, raw_db  # noqa: F401
from tests.workers.target import MEDIA_LAYOUT, start_deployed_server, workers_target


async def start_media_server(
    tmp_path: Path, *, tls: bool = False, request_limits: dict[str, Any] | None = None, **media: Any
) -> Homeserver:
    """A server; ``tls`` for one that federates (our federation client speaks only HTTPS).

    ``RANVIER_TARGET=workers``: a deployment with a media worker instead (tests/workers/target.py; its
    federation listener always has TLS), seen through its routing proxy."""
    if workers_target():
        extra = {"media": media, "request_limits": request_limits or {}}
        deployed = await start_deployed_server(tmp_path, None, None, extra, {}, MEDIA_LAYOUT)
        return cast(Homeserver, deployed)
    tmp_path.mkdir(parents=True, exist_ok=True)
    fed_port = free_port()
    config = parse_config(
        {
            "server_name": f"127.0.0.1:{fed_port}",
            "data_dir": str(tmp_path),
            "signing_key_path": str(tmp_path / "signing.key"),
            "database": {"url": f"sqlite:///{tmp_path / 'homeserver.db'}"},
            "listeners": {
                "client": {"bind": "127.0.0.1", "port": 0},
                "federation": {"bind": "127.0.0.1", "port": fed_port, "tls": tls},
            },
            "registration": {"enabled": True},
            "federation": {"verify_tls": False, "allow_loopback": True},
            "media": media,
            "request_limits": request_limits or {},
        }
    )
    hs = Homeserver(config)
    await hs.start()
    return hs


class MediaClient:
    """Raw HTTP against the client listener, as one registered user."""

    def __init__(self, hs: Homeserver, session: aiohttp.ClientSession, token: str, user_id: str) -> None:
        self.hs = hs
        self.session = session
        self.token = token
        self.user_id = user_id
        self.base = f"http://127.0.0.1:{hs.ports['client']}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def url(self, path: str) -> str:
        return self.base + path

    async def upload(self, data: bytes, content_type: str = "application/octet-stream", **query: str) -> str:
        async with self.session.post(
            self.url("/_matrix/media/v3/upload"),
            data=data,
            params=query,
            headers={**self.auth, "Content-Type": content_type},
        ) as resp:
            body = await resp.json()
            assert resp.status == 200, body
            uri = body["content_uri"]
            assert isinstance(uri, str)
            return uri


async def register(hs: Homeserver, session: aiohttp.ClientSession, name: str) -> MediaClient:
    base = f"http://127.0.0.1:{hs.ports['client']}"
    async with session.post(
        base + "/_matrix/client/v3/register",
        json={"username": name, "password": "correct horse battery", "auth": {"type": "m.login.dummy"}},
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    return MediaClient(hs, session, body["access_token"], body["user_id"])


@pytest.fixture
async def media_server(tmp_path: Path) -> AsyncIterator[Homeserver]:
    hs = await start_media_server(tmp_path, max_upload_size=1024 * 1024, max_image_pixels=20_000_000)
    try:
        yield hs
    finally:
        await hs.stop()


@pytest.fixture
async def alice(media_server: Homeserver) -> AsyncIterator[MediaClient]:
    async with aiohttp.ClientSession() as session:
        yield await register(media_server, session, "alice")


def image_bytes(fmt: str, size: tuple[int, int], mode: str = "RGB") -> bytes:
    """A real image: a gradient, so that resizing and cropping have something to work on."""
    im = Image.new(mode, size)
    px = im.load()
    assert px is not None
    for x in range(0, size[0], max(1, size[0] // 64)):
        for y in range(0, size[1], max(1, size[1] // 64)):
            px[x, y] = (x % 256, y % 256, 128) if mode == "RGB" else (x % 256, y % 256, 128, 255)
    out = io.BytesIO()
    im.save(out, fmt)
    return out.getvalue()
