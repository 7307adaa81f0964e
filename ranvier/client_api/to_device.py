"""``PUT /sendToDevice/{eventType}/{txnId}`` (CS "Send-to-Device messaging"). Thin: the work is in
ranvier.devices.to_device."""

from __future__ import annotations

from aiohttp import web

from ..devices.to_device import InvalidMessages, ToDeviceService
from .auth import Authenticator
from .errors import bad_json, missing_param
from .http_util import read_json_body

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")


class ToDeviceHandlers:
    def __init__(self, service: ToDeviceService, authenticator: Authenticator) -> None:
        self._service = service
        self._auth = authenticator

    def routes(self) -> list[web.RouteDef]:
        return [web.put(p + "/sendToDevice/{event_type}/{txn_id}", self.send) for p in PREFIXES]

    async def send(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        body = await read_json_body(request)
        if "messages" not in body:
            raise missing_param("Missing 'messages'")
        try:
            await self._service.send(
                requester.user_id,
                requester.device_id,
                request.match_info["event_type"],
                request.match_info["txn_id"],
                body["messages"],
            )
        except InvalidMessages as e:
            raise bad_json(str(e)) from None
        return web.json_response({})
