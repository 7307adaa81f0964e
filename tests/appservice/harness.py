"""A Ranvier with one appservice registered, and mautrix-python's appservice module as that appservice
(its own HTTP listener on loopback), for the appservice tests and the benchmark."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import aiohttp
import yaml
from aiohttp import web
from mautrix.appservice import AppService
from mautrix.appservice.state_store.file import FileASStateStore
from mautrix.types import Event

from ranvier.app import Homeserver
from ranvier.config import load_config
from tests.ports import free_port
from tests.workers.target import start_deployed_from_config_file, workers_target

AS_ID = "bridge"
AS_TOKEN = "as_token_for_tests_0123456789"
HS_TOKEN = "hs_token_for_tests_9876543210"


def write_config(
    tmp_path: Path,
    *,
    rate_limited: bool = False,
    ephemeral: bool = True,
    tls: bool = False,
    database_url: str = "sqlite:///homeserver.db",
    message_burst: int | None = None,
) -> tuple[Path, int]:
    """homeserver.yaml and bridge.yaml in ``tmp_path``; returns the config path and the appservice's port."""
    as_port = free_port()
    fed_port = free_port()
    server_name = f"127.0.0.1:{fed_port}"
    esc = server_name.replace(".", "\\.")
    registration = {
        "id": AS_ID,
        "url": f"http://127.0.0.1:{as_port}",
        "as_token": AS_TOKEN,
        "hs_token": HS_TOKEN,
        "sender_localpart": "bridgebot",
        "namespaces": {
            "users": [{"exclusive": True, "regex": f"@bridge_.*:{esc}"}],
            "aliases": [{"exclusive": True, "regex": f"#bridge_.*:{esc}"}],
            "rooms": [],
        },
        "rate_limited": rate_limited,
        "protocols": ["irc"],
        "receive_ephemeral": ephemeral,
        "org.matrix.msc3202": True,
    }
    (tmp_path / "bridge.yaml").write_text(yaml.safe_dump(registration))
    config = {
        "server_name": server_name,
        "data_dir": ".",
        "signing_key_path": "signing.key",
        "database": {"url": database_url},
        "listeners": {
            "client": {"bind": "127.0.0.1", "port": free_port()},
            "federation": {"bind": "127.0.0.1", "port": fed_port, "tls": tls},
        },
        "registration": {"enabled": True},
        "federation": {"verify_tls": False, "allow_loopback": True},
        "app_service_config_files": ["bridge.yaml"],
    }
    if message_burst is not None:
        config["rate_limits"] = {"message": {"per_second": 0.01, "burst": message_burst}}
    path = tmp_path / "homeserver.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, as_port


async def start_homeserver(config_path: Path) -> Homeserver:
    """The server of ``write_config``'s file; ``RANVIER_TARGET=workers``: a deployment with its settings and
    registration (tests/workers/target.py), pushing to the appservice from its background role."""
    if workers_target():
        return cast(Homeserver, await start_deployed_from_config_file(config_path))
    hs = Homeserver(load_config(config_path))
    await hs.start()
    return hs


class Bridge:
    """mautrix's AppService on its port, recording every pushed event (and ephemeral one)."""

    def __init__(self, hs_url: str, server_name: str, port: int, state_path: Path) -> None:
        self.port = port
        self.received: list[Event] = []
        self.user_queries: list[str] = []
        self.alias_queries: list[str] = []
        self.on_alias: Callable[[str], Any] | None = None
        self.appservice = AppService(
            server=hs_url,
            domain=server_name,
            as_token=AS_TOKEN,
            hs_token=HS_TOKEN,
            bot_localpart="bridgebot",
            id=AS_ID,
            state_store=FileASStateStore(path=str(state_path), binary=False),
            query_user=self._query_user,
            query_alias=self._query_alias,
            ephemeral_events=True,
            encryption_events=True,
        )
        self.to_device: list[Any] = []
        self.appservice.to_device_handler = self._on_to_device
        self.device_lists: list[Any] = []
        self.otk_counts: list[Any] = []
        self.appservice.device_list_handler = self._on_device_lists
        self.appservice.otk_handler = self._on_otk_counts
        self.appservice.matrix_event_handler(self._on_event)
        # Third-party look-ups, which mautrix leaves to the bridge: answered from these.
        self.protocols: dict[str, Any] = {}
        self.locations: list[dict[str, Any]] = []
        self.appservice.app.router.add_get("/_matrix/app/v1/thirdparty/protocol/{protocol}", self._protocol)
        self.appservice.app.router.add_get("/_matrix/app/v1/thirdparty/location/{protocol}", self._location)

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {HS_TOKEN}"

    async def _protocol(self, request: web.Request) -> web.Response:
        info = self.protocols.get(request.match_info["protocol"])
        if not self._authorized(request) or info is None:
            return web.json_response({"errcode": "M_NOT_FOUND"}, status=404 if info is None else 403)
        return web.json_response(info)

    async def _location(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        wanted = dict(request.query)
        found = [
            loc
            for loc in self.locations
            if loc["protocol"] == request.match_info["protocol"]
            and all(loc["fields"].get(k) == v for k, v in wanted.items())
        ]
        return web.json_response(found)

    async def _on_device_lists(self, lists: Any) -> None:
        self.device_lists.append(lists)

    async def _on_otk_counts(self, counts: Any) -> None:
        self.otk_counts.append(counts)

    async def _on_to_device(self, event: Any) -> None:
        self.to_device.append(event)

    async def _on_event(self, event: Event) -> None:
        self.received.append(event)

    async def _query_user(self, user_id: str) -> dict[str, Any] | None:
        self.user_queries.append(user_id)
        if not user_id.startswith("@bridge_known"):
            return None
        await self.appservice.intent.user(user_id).ensure_registered()  # type: ignore[arg-type]
        return {"registered": True}  # (mautrix answers 404 for a falsy value, {} included)

    async def _query_alias(self, alias: str) -> dict[str, Any] | None:
        self.alias_queries.append(alias)
        if self.on_alias is None:
            return None
        await self.on_alias(alias)
        return {"created": True}

    async def start(self) -> None:
        await self.appservice.start(host="127.0.0.1", port=self.port)

    async def stop(self) -> None:
        await self.appservice.stop()

    def event_ids(self, event_type: str = "m.room.message") -> list[str]:
        return [str(e.event_id) for e in self.received if str(e.type) == event_type]


class Client:
    """A plain client-API user over HTTP (a person, not the bridge)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str = "", user_id: str = "") -> None:
        self.session, self.base, self.token, self.user_id = session, base, token, user_id

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(
            method, self.base + path, json=body, headers=headers, params=params
        ) as resp:
            return resp.status, await resp.json()

    async def register(self, name: str) -> Client:
        status, body = await self.call(
            "POST",
            "/_matrix/client/v3/register",
            {"username": name, "password": "pw-" + name, "auth": {"type": "m.login.dummy"}},
        )
        assert status == 200, body
        return Client(self.session, self.base, body["access_token"], body["user_id"])

    async def send_text(self, room_id: str, text: str, txn: str, **params: str) -> str:
        status, body = await self.call(
            "PUT",
            f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}",
            {"msgtype": "m.text", "body": text},
            **params,
        )
        assert status == 200, body
        return str(body["event_id"])


async def wait_until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` (a hang guard, not a figure)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
