"""Federation routes of end-to-end encryption (S2S "Device Management" and "End-to-End Encryption"):
``GET /user/devices/{userId}``, ``POST /user/keys/query`` and ``POST /user/keys/claim``. Authentication
and (de)serialisation only; the answers come from ``handler`` (ranvier.devices.federation), passed in so
this transport module never imports the E2EE domain package.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from .errors import BadRequest, NotFound
from .keys import Keyring
from .request_auth import PARSED_BODY, authenticate_request

V1 = "/_matrix/federation/v1"


class E2eeHandler(Protocol):
    def is_local(self, user_id: str) -> bool: ...
    async def local_device_list(self, user_id: str) -> dict[str, Any]: ...
    async def query_local_keys(self, wanted: dict[str, list[str]]) -> dict[str, Any]: ...
    async def claim_local_keys(self, wanted: dict[str, dict[str, str]]) -> dict[str, Any]: ...


def add_e2ee_routes(app: web.Application, keyring: Keyring, server_name: str, handler: E2eeHandler) -> None:
    async def user_devices(request: web.Request) -> web.Response:
        await authenticate_request(request, keyring, server_name)
        user_id = request.match_info["user"]
        if not handler.is_local(user_id):
            raise NotFound(f"{user_id} is not a user of this server")
        return web.json_response(await handler.local_device_list(user_id))

    async def keys_query(request: web.Request) -> web.Response:
        await authenticate_request(request, keyring, server_name)
        body = request.get(PARSED_BODY)
        wanted = body.get("device_keys") if isinstance(body, dict) else None
        if not isinstance(wanted, dict) or not all(
            isinstance(v, list) and all(isinstance(d, str) for d in v) for v in wanted.values()
        ):
            raise BadRequest("device_keys must map user ids to lists of device ids")
        local = {u: d for u, d in wanted.items() if handler.is_local(u)}
        return web.json_response(await handler.query_local_keys(local))

    async def keys_claim(request: web.Request) -> web.Response:
        await authenticate_request(request, keyring, server_name)
        body = request.get(PARSED_BODY)
        wanted = body.get("one_time_keys") if isinstance(body, dict) else None
        if not isinstance(wanted, dict) or not all(
            isinstance(v, dict) and all(isinstance(a, str) for a in v.values()) for v in wanted.values()
        ):
            raise BadRequest("one_time_keys must map user ids to {device id: algorithm}")
        local = {u: d for u, d in wanted.items() if handler.is_local(u)}
        return web.json_response(await handler.claim_local_keys(local))

    app.router.add_get(V1 + "/user/devices/{user}", user_devices)
    app.router.add_post(V1 + "/user/keys/query", keys_query)
    app.router.add_post(V1 + "/user/keys/claim", keys_claim)
