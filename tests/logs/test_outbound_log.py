"""Outbound federation request lines (ranvier.access.outbound_federation): destination, method, redacted
path, status, duration and the retry count of the same request."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiohttp import web

from ranvier.federation.client import DestinationUnreachable, FederationError
from ranvier.federation.keys import Keyring
from ranvier.logs.redact import REDACTED
from tests.federation.fedserver import start_fed_server
from tests.ports import free_port

PATH = "/_matrix/federation/v1/flaky"


def outbound(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [r.access for r in caplog.records if r.name == "ranvier.access.outbound_federation"]  # type: ignore[attr-defined]


async def test_outbound_lines_count_retries_of_the_same_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    answers = [503, 200, 200]

    def routes(app: web.Application, keyring: Keyring) -> None:
        async def flaky(request: web.Request) -> web.Response:
            return web.json_response({}, status=answers.pop(0))

        app.router.add_get(PATH, flaky)

    (tmp_path / "s").mkdir()
    (tmp_path / "c").mkdir()
    server = await start_fed_server(tmp_path / "s", routes=routes)
    caller = await start_fed_server(tmp_path / "c")
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    try:
        for _ in range(2):
            with pytest.raises(DestinationUnreachable):
                await caller.client.request("GET", dead, PATH, {"access_token": "s3cr3t"}, authenticate=False)
        with pytest.raises(FederationError):  # a 503: the next attempt is a retry
            await caller.client.request("GET", server.server_name, PATH, authenticate=False)
        for _ in range(2):  # answered: the count starts again
            await caller.client.request("GET", server.server_name, PATH, authenticate=False)
    finally:
        await caller.close()
        await server.close()
    lines = outbound(caplog)
    assert [(x["destination"], x["status"], x["retry"]) for x in lines] == [
        (dead, None, 0),
        (dead, None, 1),
        (server.server_name, 503, 0),
        (server.server_name, 200, 1),
        (server.server_name, 200, 0),
    ]
    assert lines[0]["path"] == f"{PATH}?access_token={REDACTED}"
    assert lines[0]["error"]
    assert all(x["method"] == "GET" for x in lines)
    assert "s3cr3t" not in caplog.text
