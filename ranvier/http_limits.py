"""Limits on what one HTTP connection may hold: time to send a request head and body, body sizes, bodies
buffered before a request is authenticated, and the number of open connections (issue 12, defect 5).

aiohttp has no timeout on reading a request head or body: a client that sends one header line every ten
seconds (slowloris), or a body that never ends, holds its socket, and a handler waiting in
``request.read()``, forever. The guard has two halves:

* ``GuardedRequestHandler``, aiohttp's connection protocol with two deadlines: the head (request line and
  headers) must be complete within ``header_timeout`` of the connection being made or of the first byte of
  a later request on it, and the body within ``body_timeout`` of its head; a connection that misses either
  is closed. It also keeps the listener under ``max_connections``: when a new connection would exceed it,
  the least recently active connection that is not handling a request is closed (a half-sent head or an
  idle keep-alive), so that an attacker holding thousands of sockets cannot lock out /versions.
  ``GuardedSite`` listens with it (and with the TLS handshake bounded by ``header_timeout``).
* ``body_limits_middleware``, which reads a request's body before its handler does: a declared
  ``Content-Length`` above the endpoint's limit is refused with 413 ``M_TOO_LARGE`` before a byte of it
  is read, and while a body is being received, and until the request is authenticated
  (``release_body_budget``, called by federation request authentication) or finished, it counts against
  the listener's budget of unauthenticated bodies (how many, and how many bytes). Beyond the budget a
  request is answered 429 ``M_LIMIT_EXCEEDED`` at once rather than buffered: memory stays bounded whatever
  is sent.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The body limit of an endpoint: given the request (its path), the largest body accepted, in bytes.
BodyLimit = Callable[[web.Request], int]
# A protocol whose body is late is closed this long after the middleware's own deadline has passed, so
# that a handler reading the body answers 408 itself before the socket goes.
BACKSTOP_GRACE = 1.0
RETRY_AFTER_MS = 2000
LINGER_AFTER_REFUSAL = 2.0


@dataclass(frozen=True)
class ListenerLimits:
    header_timeout: float
    body_timeout: float
    idle_timeout: float
    max_connections: int
    max_body_bytes: int  # the largest body of any endpoint on the listener
    max_unauthenticated_bodies: int
    max_unauthenticated_body_bytes: int
    # Per-endpoint limit (at most max_body_bytes); None: max_body_bytes everywhere.
    body_limit: BodyLimit | None = None
    # Endpoints whose handler streams the body itself (media uploads, to disk): only the declared
    # Content-Length is checked here; the handler authenticates first, then reads under the same limit and
    # the connection's body deadline. Such bodies are never buffered, so they take no unauthenticated budget.
    streamed: Callable[[web.Request], bool] | None = None


@dataclass
class GuardStats:
    """What the guard did; for tests, logs and metrics."""

    head_timeouts: int = 0
    body_timeouts: int = 0
    evicted: int = 0
    refused: int = 0
    too_large: int = 0
    over_budget: int = 0


@dataclass
class _Budget:
    bodies: int = 0
    bytes: int = 0
    holders: dict[int, int] = field(default_factory=dict)  # id(request) -> bytes held


class ConnectionGuard:
    """The shared state of one listener: its limits, open connections (least recently active first) and
    the unauthenticated-body budget."""

    def __init__(self, name: str, limits: ListenerLimits) -> None:
        self.name = name
        self.limits = limits
        self.stats = GuardStats()
        self._connections: OrderedDict[GuardedRequestHandler, None] = OrderedDict()
        self._budget = _Budget()

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    @property
    def unauthenticated_bodies(self) -> int:
        return self._budget.bodies

    @property
    def unauthenticated_body_bytes(self) -> int:
        return self._budget.bytes

    # -- connections ---------------------------------------------------------------------------------

    def admit(self, conn: GuardedRequestHandler) -> bool:
        """Register a new connection; at the cap, make room by closing the least recently active idle
        one. False when every connection is busy with a request: the new one is then refused."""
        if len(self._connections) >= self.limits.max_connections:
            victim = next((c for c in self._connections if not c.busy), None)
            if victim is None:
                self.stats.refused += 1
                logger.warning(
                    "%s listener: %d connections, all busy; refusing one", self.name, len(self._connections)
                )
                return False
            self.stats.evicted += 1
            self.forget(victim)
            victim.force_close()
        self._connections[conn] = None
        return True

    def touch(self, conn: GuardedRequestHandler) -> None:
        if conn in self._connections:
            self._connections.move_to_end(conn)

    def forget(self, conn: GuardedRequestHandler) -> None:
        self._connections.pop(conn, None)

    # -- the unauthenticated-body budget -------------------------------------------------------------

    def take_body_slot(self, request: web.Request) -> bool:
        if self._budget.bodies >= self.limits.max_unauthenticated_bodies:
            return False
        self._budget.bodies += 1
        self._budget.holders[id(request)] = 0
        return True

    def take_body_bytes(self, request: web.Request, n: int) -> bool:
        if self._budget.bytes + n > self.limits.max_unauthenticated_body_bytes:
            return False
        self._budget.bytes += n
        self._budget.holders[id(request)] = self._budget.holders.get(id(request), 0) + n
        return True

    def release(self, request: web.Request) -> None:
        held = self._budget.holders.pop(id(request), None)
        if held is not None:
            self._budget.bodies -= 1
            self._budget.bytes -= held


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection protocol, with a deadline on each request's head and body."""

    def __init__(self, manager: web.Server, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the body of the newest request, while incomplete
        self.body_deadline: float | None = None  # loop time by which that body must be complete

    @property
    def busy(self) -> bool:
        """A request of this connection is being handled (its body read, or its answer computed)."""
        return bool(self._request_in_progress)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self.guard.admit(self):
            self.force_close()
            return
        self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_timers()
        self.guard.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._upgraded or self._payload_parser is not None:
            # An upgraded connection (a WebSocket): its frames are not request heads.
            self._cancel_timers()
            super().data_received(data)
            return
        if not data or self._force_close or self._close:
            super().data_received(data)
            return
        in_body = self._body is not None and not self._body.is_eof()
        if not in_body and self._head_timer is None:
            self._arm_head_timer()  # the first byte of a new request (or of the first one)
        heads_before = self._request_count
        super().data_received(data)
        self.guard.touch(self)
        if self._request_count != heads_before:
            # A head was completed in this chunk: its body (if any) is now on the clock.
            self._cancel(self._head_timer)
            self._head_timer = None
            payload = self._messages[-1][1] if self._messages else None
            self._cancel(self._body_timer)
            self._body_timer = None
            if payload is not None and not payload.is_eof():
                self._body = payload
                loop = asyncio.get_running_loop()
                self.body_deadline = loop.time() + self.guard.limits.body_timeout
                self._body_timer = loop.call_at(self.body_deadline + BACKSTOP_GRACE, self._body_late)
            else:
                self._body = None
                self.body_deadline = None
        elif self._body is not None and self._body.is_eof():
            self._body = None
            self._cancel(self._body_timer)
            self._body_timer = None

    def _arm_head_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(self.guard.limits.header_timeout, self._head_late)

    def _head_late(self) -> None:
        self._head_timer = None
        self.guard.stats.head_timeouts += 1
        logger.info(
            "%s listener: closing a connection from %s: no complete request head within %ss",
            self.guard.name,
            self.peername,
            self.guard.limits.header_timeout,
        )
        self.force_close()

    def _body_late(self) -> None:
        self._body_timer = None
        if self._body is None or self._body.is_eof():
            return
        self.guard.stats.body_timeouts += 1
        logger.info(
            "%s listener: closing a connection from %s: request body incomplete after %ss",
            self.guard.name,
            self.peername,
            self.guard.limits.body_timeout,
        )
        self.force_close()

    def extend_body_deadline(self, seconds: float) -> None:
        """Allow the body being received ``seconds`` from now instead of ``body_timeout`` from its head: for
        an authenticated upload that its handler streams (a big file over a slow link)."""
        if self._body is None or self._body.is_eof():
            return
        loop = asyncio.get_running_loop()
        self.body_deadline = loop.time() + seconds
        self._cancel(self._body_timer)
        self._body_timer = loop.call_at(self.body_deadline + BACKSTOP_GRACE, self._body_late)

    def linger_briefly(self) -> None:
        """Once the current answer is sent, read and drop what is left of the request's body for at most
        ``LINGER_AFTER_REFUSAL`` seconds, then close (aiohttp's default is ten). Not zero: closing a socket
        with unread data resets it, and a client still sending would lose the answer."""
        self._lingering_time = min(self._lingering_time, LINGER_AFTER_REFUSAL)

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()

    def _cancel_timers(self) -> None:
        self._cancel(self._head_timer)
        self._cancel(self._body_timer)
        self._head_timer = self._body_timer = None


class GuardedSite(web.BaseSite):
    """A TCP listener whose connections are ``GuardedRequestHandler`` protocols."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        guard: ConnectionGuard,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=1024)
        self._host = host
        self._port = port
        self.guard = guard
        self.bound_port = port

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self.bound_port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        manager = self._runner.server
        assert manager is not None, "runner.setup() first"
        limits = self.guard.limits

        def protocol() -> GuardedRequestHandler:
            return GuardedRequestHandler(
                manager, self.guard, loop=loop, access_log=None, keepalive_timeout=limits.idle_timeout
            )

        self._server = await loop.create_server(
            protocol,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=True,
            # A TLS handshake is part of the request head, as far as slow clients go.
            ssl_handshake_timeout=limits.header_timeout if self._ssl_context else None,
        )
        sockets = self._server.sockets
        if sockets:
            self.bound_port = sockets[0].getsockname()[1]


# -- bodies --------------------------------------------------------------------------------------------

_GUARD_KEY: web.RequestKey[ConnectionGuard] = web.RequestKey("ranvier.body_guard", ConnectionGuard)


def _refuse(request: web.Request, status: int, errcode: str, message: str, **extra: Any) -> web.Response:
    """An error answer after which the connection is closed: the rest of the body is not wanted."""
    resp = web.json_response({"errcode": errcode, "error": message, **extra}, status=status)
    resp.force_close()
    if isinstance(request.protocol, GuardedRequestHandler):
        request.protocol.linger_briefly()
    return resp


def release_body_budget(request: web.Request) -> None:
    """The request is authenticated: its body no longer counts as an unauthenticated one."""
    guard = request.get(_GUARD_KEY)
    if guard is not None:
        guard.release(request)


def body_limits_middleware(guard: ConnectionGuard) -> Middleware:
    """Read each routed request's body under the endpoint's size limit, the body deadline and the
    listener's unauthenticated-body budget, before the handler runs (its ``request.read()`` then returns
    what was read here)."""
    limits = guard.limits

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.body_exists or request.match_info.http_exception is not None:
            return await handler(request)  # no body, or no such endpoint (its 404 reads nothing)
        limit = min(limits.body_limit(request), limits.max_body_bytes) if limits.body_limit else None
        limit = limit if limit is not None else limits.max_body_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            guard.stats.too_large += 1
            return _refuse(
                request,
                413,
                "M_TOO_LARGE",
                f"request body of {declared} bytes exceeds the limit of {limit}",
                close=True,
            )
        if limits.streamed is not None and limits.streamed(request):
            return await handler(request)
        if not guard.take_body_slot(request):
            guard.stats.over_budget += 1
            return _refuse(
                request,
                429,
                "M_LIMIT_EXCEEDED",
                "too many request bodies in flight; try again later",
                close=True,
                retry_after_ms=RETRY_AFTER_MS,
            )
        request[_GUARD_KEY] = guard
        try:
            failure = await _read_body(request, guard, limit)
            if failure is not None:
                return failure
            return await handler(request)
        finally:
            guard.release(request)

    return middleware


async def _read_body(request: web.Request, guard: ConnectionGuard, limit: int) -> web.Response | None:
    loop = asyncio.get_running_loop()
    deadline = getattr(request.protocol, "body_deadline", None)
    if deadline is None:
        deadline = loop.time() + guard.limits.body_timeout
    # A list of chunks rather than one growing bytearray: no reallocation copies while a body arrives
    # (each would briefly double what a big body holds), and the chunks' memory is reused once freed.
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout_at(deadline):
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                if size + len(chunk) > limit:
                    guard.stats.too_large += 1
                    return _refuse(request, 413, "M_TOO_LARGE", f"request body exceeds the limit of {limit}")
                if not guard.take_body_bytes(request, len(chunk)):
                    guard.stats.over_budget += 1
                    return _refuse(
                        request,
                        429,
                        "M_LIMIT_EXCEEDED",
                        "too many request body bytes in flight; try again later",
                        close=True,
                        retry_after_ms=RETRY_AFTER_MS,
                    )
                chunks.append(chunk)
                size += len(chunk)
    except TimeoutError:
        guard.stats.body_timeouts += 1
        return _refuse(
            request, 408, "M_UNKNOWN", f"request body not received within {guard.limits.body_timeout}s"
        )
    except (ConnectionError, RequestPayloadError) as e:
        # The client went away or sent a malformed chunked body; nobody may be there to read this.
        return _refuse(request, 400, "M_UNKNOWN", f"request body could not be read: {e}")
    # aiohttp's request.read() returns _read_bytes once set: handlers get the body read here (covered by
    # test_handlers_get_the_body_read_by_the_guard in tests/hostile/test_limits_connections.py, which would
    # fail if aiohttp stopped honouring it).
    request._read_bytes = b"".join(chunks)
    return None


# -- metrics -------------------------------------------------------------------------------------------


class GuardCollector(Collector):
    """Prometheus view of every listener's guard: what it holds now and what it refused or closed."""

    def __init__(self, guards: Mapping[str, ConnectionGuard]) -> None:
        self._guards = guards

    def collect(self) -> Iterator[Metric]:
        held = GaugeMetricFamily(
            "ranvier_http_open_connections", "Open connections, per listener", labels=["listener"]
        )
        bodies = GaugeMetricFamily(
            "ranvier_http_unauthenticated_bodies",
            "Request bodies being received or held before their request is authenticated",
            labels=["listener"],
        )
        body_bytes = GaugeMetricFamily(
            "ranvier_http_unauthenticated_body_bytes", "Bytes of those bodies", labels=["listener"]
        )
        closed = CounterMetricFamily(
            "ranvier_http_connections_limited",
            "Connections closed or requests refused by the request limits, per listener and reason",
            labels=["listener", "reason"],
        )
        for name, guard in sorted(self._guards.items()):
            held.add_metric([name], guard.open_connections)
            bodies.add_metric([name], guard.unauthenticated_bodies)
            body_bytes.add_metric([name], guard.unauthenticated_body_bytes)
            st = guard.stats
            for reason, value in (
                ("head_timeout", st.head_timeouts),
                ("body_timeout", st.body_timeouts),
                ("evicted", st.evicted),
                ("refused", st.refused),
                ("too_large", st.too_large),
                ("over_budget", st.over_budget),
            ):
                closed.add_metric([name, reason], value)
        yield from (held, bodies, body_bytes, closed)


# -- file descriptors ----------------------------------------------------------------------------------


def connection_cap(configured: int, listeners: int) -> int:
    """``configured``, lowered when the process's file-descriptor limit cannot hold that many connections
    on every listener (with room left for the database, outbound federation and logs)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    room = max(16, (soft - 256) // max(1, listeners))
    if configured > room:
        logger.warning(
            "max_connections %d per listener exceeds what the file descriptor limit %d allows; using %d",
            configured,
            soft,
            room,
        )
        return room
    return configured
