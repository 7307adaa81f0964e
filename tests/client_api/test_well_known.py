"""``GET /.well-known/matrix/client`` of a whole server (CS "Well-known URIs"): the base URL it advertises is
the configured ``public_baseurl`` and nothing else. Found by the browser tests (tests/interop/
test_browser_clients.py): Hydrogen follows well-known, and a server on an ephemeral port used to send it to
``http://127.0.0.1:0``."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.scenarios.servers import start_server


async def _well_known(port: int) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/.well-known/matrix/client") as resp,
    ):
        return resp.status, await resp.json()


async def test_without_public_baseurl_well_known_is_404(tmp_path: Path) -> None:
    hs = await start_server(tmp_path / "hs")
    try:
        status, body = await _well_known(hs.ports["client"])
        # 404: "the client should use the URL it has" rather than the listener's bind address and port 0
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    finally:
        await hs.stop()


async def test_public_baseurl_is_advertised(tmp_path: Path) -> None:
    hs = await start_server(tmp_path / "hs", extra={"public_baseurl": "https://matrix.example.org/"})
    try:
        status, body = await _well_known(hs.ports["client"])
        assert status == 200
        assert body == {"m.homeserver": {"base_url": "https://matrix.example.org"}}
    finally:
        await hs.stop()
