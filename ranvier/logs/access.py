"""The request log: one line per finished request, logger ``ranvier.access.<listener>``, level INFO.

The middleware is the outermost of a listener's stack. It gives the request its id (``context``), counts
the time spent in database statements (``storage.sql.engine.query_timer``), and writes the response itself
once the inner middlewares are done with it, so that the line reports the bytes actually sent and whether
the client was still there to receive them. A line looks like::

    GET-17 127.0.0.1 @alice:example.org/ABCDEF "GET /_matrix/client/v3/sync?access_token=<redacted>" 200 59B
        12.4ms db=3.1ms/6q

(one line; wrapped here).

``59B`` counts every byte written for the answer, status line and headers included (``-`` for a file
sent by aiohttp's sendfile, such as media downloads, which goes out after the line is written). The fields
are also on the record as ``record.access`` (a dict), which the JSON formatter writes out.
Outcomes other than a delivered answer say so at the end: ``abandoned`` (the client closed the connection
before the answer was sent), ``cancelled`` (the server stopped serving it), ``error`` (an unexpected
exception; aiohttp answers 500).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..federation.request_auth import AUTHENTICATED_ORIGIN
from ..storage.sql.engine import QueryTimer, query_timer
from .context import (
    AUTHENTICATED_APPSERVICE,
    AUTHENTICATED_USER,
    current_request_id,
    install_record_factory,
    new_request_id,
)
from .redact import REDACTED, redact_path
from .tracing import Tracing, claimed_origin, set_status

__all__ = ["REDACTED", "access_log_middleware", "client_ip", "redact_path"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def client_ip(request: web.Request, trust_x_forwarded: bool) -> str:
    """The peer's address; with ``x_forwarded`` on the listener (a reverse proxy in front), the first
    address of ``X-Forwarded-For`` instead. Never the header otherwise: anyone can send it."""
    if trust_x_forwarded:
        forwarded = request.headers.get("X-Forwarded-For", "")
        first = forwarded.split(",", 1)[0].strip()
        if first:
            return first
    return request.remote or "-"


def _who(request: web.Request) -> str:
    user = request.get(AUTHENTICATED_USER)
    if user is not None:
        user_id, device_id = user
        who = f"{user_id}/{device_id}" if device_id else user_id
        appservice = request.get(AUTHENTICATED_APPSERVICE)
        # An appservice's as_token: the user it acts as, and which appservice (one field, no spaces).
        return f"{who}[as:{appservice}]" if appservice is not None else who
    origin = request.get(AUTHENTICATED_ORIGIN)
    return origin if origin is not None else "-"


def access_log_middleware(
    listener: str, *, x_forwarded: bool = False, tracing: Tracing | None = None
) -> Middleware:
    """The request log of one listener; put it first in the listener's middleware list. With ``tracing``
    on, each request is also a server span (``ranvier.logs.tracing``)."""
    install_record_factory()
    log = logging.getLogger(f"ranvier.access.{listener}")

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = new_request_id(request.method)
        id_token = current_request_id.set(request_id)
        timer = QueryTimer()
        timer_token = query_timer.set(timer)
        start = time.perf_counter()
        state = _Served()
        try:
            if tracing is None or not tracing.enabled:
                return await _serve(request, handler, state)
            resource = request.match_info.route.resource
            with tracing.server_span(
                request.method,
                resource.canonical if resource is not None else "unmatched",
                request.path,
                request.headers,
                claimed_origin(request.headers.getall("Authorization", [])),
                listener,
            ) as span:
                span.set_attribute("ranvier.request_id", request_id)
                try:
                    return await _serve(request, handler, state)
                finally:
                    set_status(span, state.status)
        finally:
            _log(log, request, x_forwarded, request_id, state, start, timer)
            current_request_id.reset(id_token)
            query_timer.reset(timer_token)

    return middleware


class _Served:
    """What became of one request, for its line."""

    __slots__ = ("outcome", "response", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.response: web.StreamResponse | None = None
        self.outcome = "error"


async def _serve(request: web.Request, handler: Handler, state: _Served) -> web.StreamResponse:
    try:
        try:
            response = await handler(request)
        except web.HTTPException as e:
            state.response = e  # an aiohttp HTTPException is a response too: written here, then re-raised
            state.status = e.status
            state.outcome = await _deliver(request, e)
            raise
        state.response = response
        state.status = response.status
        state.outcome = await _deliver(request, response)
        return response
    except asyncio.CancelledError:
        # aiohttp cancels a handler whose client left when the server is so configured; otherwise a
        # cancellation is the server stopping.
        gone = request.transport is None or request.transport.is_closing()
        state.outcome = "abandoned" if gone else "cancelled"
        raise


async def _deliver(request: web.Request, response: web.StreamResponse) -> str:
    """Write the response now (aiohttp would do it right after the middlewares return; doing it here lets
    the line count the bytes sent and notice a client that left): ``sent`` or ``abandoned``. A response
    its handler already prepared (streamed) is finished the same way; aiohttp's own prepare and write_eof
    afterwards are no-ops."""
    if request.transport is None or request.transport.is_closing():
        return "abandoned"  # nobody to write to
    if isinstance(response, web.FileResponse) and not response.prepared:
        # A file is sent by aiohttp (sendfile) after the middlewares, and its prepare() cannot be repeated:
        # logged before it goes out, its size unknown here.
        return "file"
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        return "abandoned"
    return "sent"


def _log(
    log: logging.Logger,
    request: web.Request,
    x_forwarded: bool,
    request_id: str,
    state: _Served,
    start: float,
    timer: QueryTimer,
) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    total_ms = (time.perf_counter() - start) * 1000
    status, response, outcome = state.status, state.response, state.outcome
    sent = response.body_length if response is not None and outcome == "sent" else None
    if outcome == "file":
        outcome = "sent"  # by aiohttp, after this line
    fields: dict[str, Any] = {
        "request_id": request_id,
        "client_ip": client_ip(request, x_forwarded),
        "requester": _who(request),
        "method": request.method,
        "path": redact_path(request.raw_path),
        "status": status if status is not None else (500 if outcome == "error" else None),
        "bytes": sent,
        "duration_ms": round(total_ms, 3),
        "db_ms": round(timer.seconds * 1000, 3),
        "db_queries": timer.queries,
        "db_round_trips": timer.round_trips,
        "outcome": outcome,
    }
    status_text = "-" if fields["status"] is None else str(fields["status"])
    tail = "" if outcome == "sent" else f" {outcome}"
    log.info(
        '%s %s %s "%s %s" %s %sB %.1fms db=%.1fms/%dq%s',
        request_id,
        fields["client_ip"],
        fields["requester"],
        request.method,
        fields["path"],
        status_text,
        "-" if sent is None else sent,
        total_ms,
        timer.seconds * 1000,
        timer.queries,
        tail,
        extra={"access": fields},
    )
