"""The federation server routes (``/_matrix/federation/v1/...``): HTTP in, room layer calls, JSON out.

This module only parses requests, authenticates them (X-Matrix) and maps errors; the work is done by
objects handed to the constructor (the room layer's inbound transaction handler and its reads), described
here as Protocols so that the federation layer never imports the room layer. Errors of the core carry
their ``errcode``; ``_STATUS`` turns it into the HTTP status. Unknown endpoints answer 404
``M_UNRECOGNIZED`` (S2S "Unsupported endpoints").
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from aiohttp import web

from ranvier.protocol.canonical_json import parse_json
from ranvier.protocol.errors import CanonicalJsonError, ProtocolError

from ..ratelimit import RateLimiter, limit_exceeded_body
from .errors import BadRequest, InvalidParam, MissingParam
from .keys import Keyring
from .request_auth import PARSED_BODY, authenticate_request

logger = logging.getLogger(__name__)

V1 = "/_matrix/federation/v1"

_STATUS = {
    "M_FORBIDDEN": 403,
    "M_NOT_FOUND": 404,
    "M_UNRECOGNIZED": 404,
    "M_BAD_JSON": 400,
    "M_NOT_JSON": 400,
    "M_INVALID_PARAM": 400,
    "M_MISSING_PARAM": 400,
    "M_TOO_LARGE": 413,
    "M_UNSUPPORTED_ROOM_VERSION": 400,
    "M_LIMIT_EXCEEDED": 429,
}


class TransactionHandler(Protocol):
    async def on_send(self, origin: str, txn_id: str, body: Any) -> dict[str, Any]: ...


class ReadHandler(Protocol):
    async def get_event(self, origin: str, event_id: str) -> dict[str, Any]: ...
    async def state_ids(self, origin: str, room_id: str, event_id: str) -> dict[str, Any]: ...
    async def state_text(self, origin: str, room_id: str, event_id: str) -> str:
        """The /state answer as JSON text."""

    async def event_auth(self, origin: str, room_id: str, event_id: str) -> dict[str, Any]: ...
    async def backfill(
        self, origin: str, room_id: str, from_ids: Sequence[str], limit: int
    ) -> dict[str, Any]: ...
    async def missing_events(
        self,
        origin: str,
        room_id: str,
        earliest: Sequence[str],
        latest: Sequence[str],
        limit: int,
        min_depth: int,
    ) -> dict[str, Any]: ...
    async def timestamp_to_event(
        self, origin: str, room_id: str, ts: int, direction: str
    ) -> dict[str, Any]: ...
    async def query_profile(self, user_id: str, field: str | None) -> dict[str, Any]: ...
    async def query_directory(self, alias: str) -> dict[str, Any]: ...


def matrix_error(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status)


@web.middleware
async def federation_error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProtocolError as e:
        return matrix_error(_STATUS.get(e.errcode, 400), e.errcode, e.message)
    except web.HTTPNotFound:
        return matrix_error(404, "M_UNRECOGNIZED", "Unrecognized request")
    except web.HTTPMethodNotAllowed:
        return matrix_error(405, "M_UNRECOGNIZED", "Unrecognized request")
    except web.HTTPException:
        raise  # already a Matrix error (request_auth) or a deliberate HTTP answer
    except Exception:
        # The safety net: a bug still answers a Matrix error (and is logged), never aiohttp's text/plain 500.
        logger.exception("unhandled error serving %s %s", request.method, request.path)
        return matrix_error(500, "M_UNKNOWN", "Internal server error")


def _query_int(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidParam(f"{name} must be an integer") from None


def _required(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if value is None:
        raise MissingParam(f"missing query parameter {name}")
    return value


async def _json_body(request: web.Request) -> Any:
    if PARSED_BODY in request:
        return request[PARSED_BODY]  # parsed while authenticating the request
    try:
        # Lenient numbers: PDUs of room versions 1-5 may carry floats; per-event checks come later.
        return parse_json(await request.read(), strict=False)
    except CanonicalJsonError as e:
        raise BadRequest(f"request body is not JSON: {e.message}") from e


def _str_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{name} must be a list of strings")
    return value


class FederationRoutes:
    def __init__(
        self,
        keyring: Keyring,
        server_name: str,
        transactions: TransactionHandler,
        reads: ReadHandler,
        send_limiter: RateLimiter | None = None,
    ) -> None:
        # Transactions per origin (after authentication, so a spoofed origin cannot drain another's).
        self._send_limiter = send_limiter
        self._keyring = keyring
        self.server_name = server_name
        self._txns = transactions
        self._reads = reads

    def setup(self, app: web.Application) -> None:
        """Add the routes and the error middleware to ``app`` (before it starts)."""
        app.middlewares.append(federation_error_middleware)
        app.router.add_put(V1 + "/send/{txnId}", self.send)
        app.router.add_get(V1 + "/event/{eventId}", self.event)
        app.router.add_get(V1 + "/state_ids/{roomId}", self.state_ids)
        app.router.add_get(V1 + "/state/{roomId}", self.state)
        app.router.add_get(V1 + "/event_auth/{roomId}/{eventId}", self.event_auth)
        app.router.add_get(V1 + "/backfill/{roomId}", self.backfill)
        app.router.add_post(V1 + "/get_missing_events/{roomId}", self.get_missing_events)
        app.router.add_get(V1 + "/timestamp_to_event/{roomId}", self.timestamp_to_event)
        app.router.add_get(V1 + "/query/profile", self.query_profile)
        app.router.add_get(V1 + "/query/directory", self.query_directory)

    async def _origin(self, request: web.Request) -> str:
        return await authenticate_request(request, self._keyring, self.server_name)

    async def send(self, request: web.Request) -> web.Response:
        origin = await self._origin(request)
        if self._send_limiter is not None:
            wait = self._send_limiter.try_acquire(origin)
            if wait is not None:
                # The sender retries the same transaction after a back-off: nothing is lost.
                return web.json_response(limit_exceeded_body(wait), status=429)
        body = await _json_body(request)
        if isinstance(body, dict) and body.get("origin", origin) != origin:
            raise BadRequest("the transaction's origin is not the server that signed the request")
        response = await self._txns.on_send(origin, request.match_info["txnId"], body)
        return web.json_response(response)

    async def event(self, request: web.Request) -> web.Response:
        origin = await self._origin(request)
        return web.json_response(await self._reads.get_event(origin, request.match_info["eventId"]))

    async def state_ids(self, request: web.Request) -> web.Response:
        origin = await self._origin(request)
        room_id, event_id = request.match_info["roomId"], _required(request, "event_id")
        return web.json_response(await self._reads.state_ids(origin, room_id, event_id))

    async def state(self, request: web.Request) -> web.Response:
        origin = await self._origin(request)
        room_id, event_id = request.match_info["roomId"], _required(request, "event_id")
        text = await self._reads.state_text(origin, room_id, event_id)
        return web.Response(text=text, content_type="application/json")

    async def event_auth(self, request: web.Request) -> web.Response:
        origin = await self._origin(request)
        info = request.match_info
        return web.json_response(await self._reads.event_auth(origin, info["roomId"], info["eventId"]))

    async def backfill(self, request: web.Request) -> web.Response:
        origin = await self._origin(request)
        from_ids = request.query.getall("v", [])
        if not from_ids:
            raise MissingParam("missing query parameter v")
        limit = _query_int(request, "limit", 10)
        return web.json_response(
            await self._reads.backfill(origin, request.match_info["roomId"], from_ids, limit)
        )

    async def get_missing_events(self, request: web.Request) -> web.Response:
        origin = await self._origin(request)
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        earliest = _str_list(body.get("earliest_events", []), "earliest_events")
        latest = _str_list(body.get("latest_events", []), "latest_events")
        limit, min_depth = body.get("limit", 10), body.get("min_depth", 0)
        if type(limit) is not int or type(min_depth) is not int:
            raise BadRequest("limit and min_depth must be integers")
        answer = await self._reads.missing_events(
            origin, request.match_info["roomId"], earliest, latest, limit, min_depth
        )
        return web.json_response(answer)

    async def timestamp_to_event(self, request: web.Request) -> web.Response:
        origin = await self._origin(request)
        ts = _query_int(request, "ts", -1)
        if "ts" not in request.query:
            raise MissingParam("missing query parameter ts")
        answer = await self._reads.timestamp_to_event(
            origin, request.match_info["roomId"], ts, _required(request, "dir")
        )
        return web.json_response(answer)

    async def query_profile(self, request: web.Request) -> web.Response:
        await self._origin(request)
        field = request.query.get("field")
        return web.json_response(await self._reads.query_profile(_required(request, "user_id"), field))

    async def query_directory(self, request: web.Request) -> web.Response:
        await self._origin(request)
        return web.json_response(await self._reads.query_directory(_required(request, "room_alias")))
