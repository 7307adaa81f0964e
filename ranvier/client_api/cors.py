"""CORS for browser clients (CS "Web Browser Clients"): the recommended headers on every response, errors
included, and ``OPTIONS`` pre-flight requests answered here without running any endpoint logic."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "X-Requested-With, Content-Type, Authorization",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # "All endpoints in this specification support the OPTIONS method, however the server MUST NOT
    # perform any logic defined for the endpoints when approached with an OPTIONS request."
    if request.method == "OPTIONS":
        return web.Response(status=200, headers=CORS_HEADERS)
    try:
        response = await handler(request)
    except web.HTTPException as e:
        e.headers.update(CORS_HEADERS)
        raise
    if not response.prepared:  # a streamed response has sent its headers already
        response.headers.update(CORS_HEADERS)
    return response
