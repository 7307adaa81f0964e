"""Authenticating incoming federation requests (S2S "Request Authentication"), for aiohttp handlers.

The steps are: parse the X-Matrix header(s), fetch the origin's key (I/O), then verify with the pure
``verify_request``. Room server ACLs are checked later by the room layer, which knows the room.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from aiohttp import web
from aiohttp.typedefs import Middleware

from ranvier.protocol.canonical_json import parse_json
from ranvier.protocol.errors import CanonicalJsonError

from ..http_limits import release_body_budget
from .keys import Keyring
from .x_matrix import RequestAuthError, parse_x_matrix, verify_request


def json_error(status: int, errcode: str, error: str) -> web.HTTPException:
    """An aiohttp exception carrying the spec's standard error body."""
    body = json.dumps({"errcode": errcode, "error": error})
    exc = web.HTTPException(text=body, content_type="application/json")
    exc.set_status(status)
    return exc


# The request key under which authenticate_request leaves the body it parsed (when there is one).
PARSED_BODY: web.RequestKey[Any] = web.RequestKey("ranvier.parsed_body", object)
# The origin whose signature authenticate_request verified.
AUTHENTICATED_ORIGIN: web.RequestKey[str] = web.RequestKey("ranvier.authenticated_origin", str)


def origin_seen_middleware(seen: Callable[[str], None]) -> Middleware:
    """Tell ``seen`` of every server that made a validly signed request, whatever it was answered: proof
    that the server is up (the federation sender resets its back-off towards it)."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            origin = request.get(AUTHENTICATED_ORIGIN)
            if origin is not None:
                seen(origin)

    return middleware


def _unauthorized(message: str) -> NoReturn:
    raise json_error(401, "M_UNAUTHORIZED", message)


async def authenticate_request(request: web.Request, keyring: Keyring, our_server_name: str) -> str:
    """Return the origin server name of a validly signed request, or raise 401 ``M_UNAUTHORIZED``.

    The body is read and parsed here; the parsed body is left in ``request[PARSED_BODY]`` for the handler.
    Once the request is authenticated its body stops counting against the listener's budget of
    unauthenticated bodies. When the origin's key could not be fetched, the 401 says why, naming the key
    server that failed (never a 500, and within the keyring's fetch timeout).
    """
    headers = [h for h in request.headers.getall("Authorization", []) if h[:8].lower() == "x-matrix"]
    if not headers:
        _unauthorized("Missing X-Matrix Authorization header")
    body = await request.read()
    content: Any | None = None
    if body:
        try:
            # Lenient numbers: a PDU of room versions 1-5 may carry floats; per-event checks come later.
            content = parse_json(body, strict=False)
        except CanonicalJsonError as e:
            raise json_error(400, "M_NOT_JSON", f"request body is not JSON: {e.message}") from e
        request[PARSED_BODY] = content  # handlers take it from here instead of parsing the body again
    last_error = "no valid X-Matrix header"
    # A sender may include several headers (one per key); any one that verifies authenticates the request.
    for header in headers:
        try:
            auth = parse_x_matrix(header)
            now_ms = int(time.time() * 1000)
            # Requests must be signed with a current key (old_verify_keys are for events only). The origin
            # is talking to us, so a key we failed to fetch a moment ago is fetched again now (on demand).
            info = await keyring.get_verify_key(
                auth.origin, auth.key, min_valid_until_ts=now_ms, on_demand=True
            )
            if info is None and (failure := keyring.fetch_failure(auth.origin)) is not None:
                raise RequestAuthError(f"unknown key {auth.key} of {auth.origin}: {failure}")
            origin = verify_request(
                auth,
                method=request.method,
                uri=request.raw_path,
                content=content,
                our_server_name=our_server_name,
                lookup=keyring.lookup,
                now_ms=now_ms,
                raw_content=body if content is not None else None,
            )
            release_body_budget(request)
            request[AUTHENTICATED_ORIGIN] = origin
            return origin
        except RequestAuthError as e:
            last_error = e.message
    _unauthorized(last_error)
