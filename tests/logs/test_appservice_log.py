"""The request log names the appservice of a request made with its as_token (issue 24): the user it acts
as (its sender by default, or ``?user_id=``) and ``[as:<id>]``, also on the appservice-only endpoints;
ordinary users' requests are unchanged."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest
import yaml

from ranvier.app import Homeserver
from tests.logs.servers import start

AS_TOKEN = "as_token_log_test_0123456789"


async def test_appservice_requests_are_logged_with_the_appservice(
    tmp_path: Path,
    servers: list[Homeserver],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    registration = tmp_path / "logbridge.yaml"
    registration.write_text(
        yaml.safe_dump(
            {
                "id": "logbridge",
                "url": None,
                "as_token": AS_TOKEN,
                "hs_token": "hs_token_log_test_9876543210",
                "sender_localpart": "logbot",
                "namespaces": {"users": [{"exclusive": True, "regex": "@log_.*"}]},
            }
        )
    )
    hs = await start(tmp_path / "hs", app_service_config_files=[str(registration)])
    servers.append(hs)
    server_name = hs.server_name
    base = f"http://127.0.0.1:{hs.ports['client']}/_matrix/client/v3"
    headers = {"Authorization": f"Bearer {AS_TOKEN}"}

    async def requester_of(method: str, url: str, **kw: object) -> str:
        caplog.clear()
        async with session.request(method, url, headers=headers, **kw) as resp:  # type: ignore[arg-type]
            await resp.read()
        (record,) = [r for r in caplog.records if r.name == "ranvier.access.client"]
        return str(record.access["requester"])  # type: ignore[attr-defined]

    assert await requester_of("GET", f"{base}/account/whoami") == f"@logbot:{server_name}[as:logbridge]"
    body = {"type": "m.login.application_service", "username": "log_alice", "inhibit_login": True}
    assert await requester_of("POST", f"{base}/register", json=body) == f"@logbot:{server_name}[as:logbridge]"
    masquerading = await requester_of(
        "GET", f"{base}/account/whoami", params={"user_id": f"@log_alice:{server_name}"}
    )
    assert masquerading == f"@log_alice:{server_name}[as:logbridge]"
    ping = f"http://127.0.0.1:{hs.ports['client']}/_matrix/client/v1/appservice/logbridge/ping"
    assert await requester_of("POST", ping, json={}) == f"@logbot:{server_name}[as:logbridge]"

    # An ordinary user: as before.
    async with session.post(
        f"{base}/register",
        json={"username": "plain", "password": "pw-plain-1", "auth": {"type": "m.login.dummy"}},
    ) as resp:
        user = await resp.json()
    headers = {"Authorization": f"Bearer {user['access_token']}"}
    assert await requester_of("GET", f"{base}/account/whoami") == f"{user['user_id']}/{user['device_id']}"
