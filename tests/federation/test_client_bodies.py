"""The federation client reads whole response bodies: a send_join answer for a big room is megabytes,
far more than one network read returns."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from ranvier.federation.client import FederationError
from ranvier.federation.keys import Keyring

from .fedserver import start_fed_server


def _big_routes(app: web.Application, keyring: Keyring) -> None:
    state = [
        {"type": "m.room.custom", "state_key": str(i), "content": {"pad": "x" * 300}} for i in range(5000)
    ]

    async def big(request: web.Request) -> web.Response:
        return web.json_response({"state": state})

    app.router.add_get("/_matrix/federation/v1/big", big)


async def test_a_multi_megabyte_answer_is_read_whole(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "c").mkdir()
    server = await start_fed_server(tmp_path / "s", routes=_big_routes)
    caller = await start_fed_server(tmp_path / "c")
    try:
        answer = await caller.client.request(
            "GET", server.server_name, "/_matrix/federation/v1/big", authenticate=False
        )
        assert len(answer["state"]) == 5000
        assert answer["state"][-1]["state_key"] == "4999"
        small = caller.client._max_response_bytes
        caller.client._max_response_bytes = 100_000
        with pytest.raises(FederationError, match="too large"):
            await caller.client.request(
                "GET", server.server_name, "/_matrix/federation/v1/big", authenticate=False
            )
        caller.client._max_response_bytes = small
    finally:
        await caller.close()
        await server.close()
