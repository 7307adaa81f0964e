"""Client-server endpoints for application services: ping (CS "appservice_ping"), and the third-party
look-ups answered from the appservices' protocols (CS "Third-party networks")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..appservice.client import AppServiceClient, AppServiceUnreachable
from .auth import Authenticator
from .errors import MatrixError, forbidden, not_found
from .http_util import read_json_body

V1 = "/_matrix/client/v1"
V3_PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")


class AppServiceHandlers:
    def __init__(
        self,
        authenticator: Authenticator,
        client: AppServiceClient,
        on_reachable: Callable[[str], None] | None = None,
    ) -> None:
        """``on_reachable(appservice id)`` after a successful ping (the pusher ends its back-off)."""
        self._auth = authenticator
        self._client = client
        self._on_reachable = on_reachable

    def routes(self) -> list[web.RouteDef]:
        r = [web.post(V1 + "/appservice/{appservice_id}/ping", self.ping)]
        for p in V3_PREFIXES:
            r += [
                web.get(p + "/thirdparty/protocols", self.protocols),
                web.get(p + "/thirdparty/protocol/{protocol}", self.protocol),
                web.get(p + "/thirdparty/location/{protocol}", self._lookup("location")),
                web.get(p + "/thirdparty/user/{protocol}", self._lookup("user")),
                web.get(p + "/thirdparty/location", self._reverse("location")),
                web.get(p + "/thirdparty/user", self._reverse("user")),
            ]
        return r

    async def ping(self, request: web.Request) -> web.Response:
        service = self._auth.require_appservice(request)
        if service.id != request.match_info["appservice_id"]:
            raise forbidden("The as_token does not belong to this application service")
        body = await read_json_body(request)
        txn_id = body.get("transaction_id")
        if txn_id is not None and not isinstance(txn_id, str):
            raise MatrixError(400, "M_INVALID_PARAM", "'transaction_id' must be a string")
        if service.url is None:
            raise MatrixError(400, "M_URL_NOT_SET", "The application service has no url")
        try:
            duration = await self._client.ping(service, txn_id)
        except AppServiceUnreachable as e:
            if e.kind == "timeout":
                raise MatrixError(504, "M_CONNECTION_TIMEOUT", str(e)) from None
            if e.kind == "status":
                bad_status = MatrixError(502, "M_BAD_STATUS", str(e))
                bad_status.extra.update(status=e.status, body=e.body)  # the appservice's answer
                raise bad_status from None
            raise MatrixError(502, "M_CONNECTION_FAILED", str(e)) from None
        if self._on_reachable is not None:
            self._on_reachable(service.id)
        return web.json_response({"duration_ms": duration})

    # -- third-party networks ---------------------------------------------------------------------------

    async def protocols(self, request: web.Request) -> web.Response:
        await self._auth.require_user(request)
        out: dict[str, Any] = {}
        for service in self._auth.appservices.all:
            for protocol in service.protocols:
                if protocol in out:
                    continue
                info = await self._client.thirdparty(service, f"protocol/{protocol}", {})
                if isinstance(info, dict):
                    out[protocol] = info
        return web.json_response(out)

    async def protocol(self, request: web.Request) -> web.Response:
        await self._auth.require_user(request)
        protocol = request.match_info["protocol"]
        for service in self._auth.appservices.with_protocol(protocol):
            info = await self._client.thirdparty(service, f"protocol/{protocol}", {})
            if isinstance(info, dict):
                return web.json_response(info)
        raise not_found(f"Unknown protocol {protocol}")

    def _lookup(self, kind: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            await self._auth.require_user(request)
            protocol = request.match_info["protocol"]
            results: list[Any] = []
            for service in self._auth.appservices.with_protocol(protocol):
                found = await self._client.thirdparty(service, f"{kind}/{protocol}", dict(request.query))
                if isinstance(found, list):
                    results += found
            return web.json_response(results)

        return handler

    def _reverse(self, kind: str) -> Any:
        key = "alias" if kind == "location" else "userid"

        async def handler(request: web.Request) -> web.Response:
            await self._auth.require_user(request)
            if key not in request.query:
                raise MatrixError(400, "M_MISSING_PARAM", f"Missing {key!r} query parameter")
            results: list[Any] = []
            for service in self._auth.appservices.all:
                if not service.protocols:
                    continue
                found = await self._client.thirdparty(service, kind, {key: request.query[key]})
                if isinstance(found, list):
                    results += found
            return web.json_response(results)

        return handler
