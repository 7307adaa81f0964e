"""The outbound federation HTTP client: discovery, TLS, the IP blocklist and X-Matrix signing.

One request, one answer: retries and back-off belong to the callers (the transaction sender has its own).
Responses are parsed strictly (canonical JSON numbers) unless the caller asks otherwise for room versions
1-5, whose events may carry floats.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import yarl

import ranvier
from ranvier.logs.redact import redact_path
from ranvier.logs.tracing import Tracing, set_status
from ranvier.protocol.canonical_json import encode_canonical_json, parse_json
from ranvier.protocol.errors import CanonicalJsonError
from ranvier.protocol.signing import SigningKey

from .discovery import ResolvedServer, ServerDiscovery
from .http_read import read_capped
from .ip_blocklist import BlockedAddress, BlocklistingResolver, IpBlocklist
from .tls import client_ssl_context
from .x_matrix import sign_encoded_request, sign_request

log = logging.getLogger(__name__)
# One line per request we send (the request log's outbound half; ranvier.logs.access is the inbound one).
access_log = logging.getLogger("ranvier.access.outbound_federation")

DEFAULT_TIMEOUT = 60.0
MAX_RESPONSE_BYTES = 256 * 1024 * 1024  # send_join answers for big rooms are large
QueryParams = Mapping[str, str | int | bool | Sequence[str]]


class FederationError(Exception):
    """A federation request failed. ``status`` is the HTTP status, 0 when no response came back;
    ``errcode``/``message`` are the remote's Matrix error when it sent one."""

    def __init__(self, status: int, errcode: str | None, message: str, destination: str = "") -> None:
        super().__init__(f"{destination}: {status} {errcode or ''} {message}".strip())
        self.status = status
        self.errcode = errcode
        self.message = message
        self.destination = destination


class DestinationUnreachable(FederationError):
    """No HTTP response: DNS, connection, TLS, timeout, or the destination is blocklisted.

    ``reason`` says which in a few words, for messages shown to users and other servers (the raw
    exception text stays in ``message``, for logs); ``timed_out`` when no answer came in time."""

    def __init__(
        self, message: str, destination: str = "", *, reason: str | None = None, timed_out: bool = False
    ) -> None:
        super().__init__(0, None, message, destination)
        self.reason = reason or message
        self.timed_out = timed_out


def unreachable(e: BaseException, destination: str, timeout: float) -> DestinationUnreachable:
    """A ``DestinationUnreachable`` for a transport-level failure, with a short human-readable reason."""
    timed_out = isinstance(e, TimeoutError)
    if timed_out:
        reason = f"no answer within {timeout:g}s"
    elif isinstance(e, aiohttp.ClientConnectorCertificateError | ssl.SSLError) or isinstance(
        getattr(e, "os_error", None), ssl.SSLError
    ):
        reason = "TLS handshake failed"
    elif isinstance(e, aiohttp.ClientConnectorDNSError):
        reason = "its name could not be resolved"
    elif isinstance(e, aiohttp.ClientConnectorError) and isinstance(e.os_error, ConnectionRefusedError):
        reason = "connection refused"
    elif isinstance(e, aiohttp.ClientConnectorError):
        reason = f"could not connect: {e.os_error.strerror or type(e.os_error).__name__}"
    elif isinstance(e, aiohttp.ServerDisconnectedError | ConnectionResetError):
        reason = "the connection was closed before an answer came"
    else:
        reason = type(e).__name__
    return DestinationUnreachable(f"{type(e).__name__}: {e}", destination, reason=reason, timed_out=timed_out)


def path_segment(value: str) -> str:
    """Percent-encode one path segment (room ids, event ids, user ids all contain reserved characters)."""
    return quote(value, safe="")


def _encode_query(query: QueryParams | None) -> str:
    if not query:
        return ""
    pairs: list[tuple[str, str]] = []
    for name, value in query.items():
        if isinstance(value, bool):
            pairs.append((name, "true" if value else "false"))
        elif isinstance(value, str | int):
            pairs.append((name, str(value)))
        else:
            pairs.extend((name, v) for v in value)
    return "?" + urlencode(pairs, quote_via=quote, safe="")


class FederationClient:
    def __init__(
        self,
        server_name: str,
        signing_key: SigningKey,
        *,
        discovery: ServerDiscovery | None = None,
        verify_tls: bool = True,
        blocklist: IpBlocklist | None = None,
        default_timeout: float = DEFAULT_TIMEOUT,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        tracing: Tracing | None = None,
    ) -> None:
        self.server_name = server_name
        self.signing_key = signing_key
        self.discovery = discovery if discovery is not None else ServerDiscovery()
        self.blocklist = blocklist if blocklist is not None else IpBlocklist()
        self._verify_tls = verify_tls
        self._default_timeout = default_timeout
        self._max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None
        self.tracing = tracing if tracing is not None else Tracing(server_name, [], env={})
        # Consecutive failed attempts (no answer, or a 5xx) of each (destination, method, uri): the request
        # log's retry count (callers retry a transaction under the same id, so the same uri).
        self._failed_attempts: dict[tuple[str, str, str], int] = {}
        # Told of every finished request: (destination, uri, status or None when unreachable, seconds).
        self.on_request: Callable[[str, str, int | None, float], None] | None = None

    def _log_outbound(
        self, destination: str, method: str, uri: str, status: int | None, start: float, error: str = ""
    ) -> None:
        """The request line of one outbound request; ``status`` None when no answer came."""
        if self.on_request is not None:
            self.on_request(destination, uri, status, time.perf_counter() - start)
        key = (destination, method, uri)
        retries = self._failed_attempts.get(key, 0)
        if status is None or status >= 500:
            if len(self._failed_attempts) > 10_000:
                self._failed_attempts.clear()  # a bound on memory: retry counts restart from zero
            self._failed_attempts[key] = retries + 1
        else:
            self._failed_attempts.pop(key, None)
        if not access_log.isEnabledFor(logging.INFO):
            return
        duration_ms = (time.perf_counter() - start) * 1000
        # Outbound paths carry no secrets (the X-Matrix signature is a header, never logged), but query
        # strings go through the same redaction as inbound ones.
        path = redact_path(uri)
        access_log.info(
            '%s "%s %s" %s %.1fms retry=%d%s',
            destination,
            method,
            path,
            "-" if status is None else status,
            duration_ms,
            retries,
            f" ({error})" if error else "",
            extra={
                "access": {
                    "destination": destination,
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": round(duration_ms, 3),
                    "retry": retries,
                    "error": error or None,
                }
            },
        )

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily so that the client can be constructed outside the event loop (in app wiring).
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=BlocklistingResolver(self.blocklist),
                ssl=client_ssl_context(self._verify_tls),
                limit=0,
                limit_per_host=8,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": f"Ranvier/{ranvier.__version__}"}
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def resolve(self, destination: str) -> ResolvedServer:
        return await self.discovery.resolve(destination, self._get_session())

    async def request(
        self,
        method: str,
        destination: str,
        path: str,
        query: QueryParams | None = None,
        json_body: Any | None = None,
        *,
        timeout: float | None = None,
        authenticate: bool = True,
        strict_json: bool = True,
    ) -> Any:
        """Send one request and return the parsed JSON answer, or raise ``FederationError``.

        ``path`` is already percent-encoded (use ``path_segment``). The signed ``uri`` is exactly the path
        and query string we send (S2S "Request Authentication"); ``authenticate=False`` is for the key
        endpoints, which are not authenticated.
        """
        if destination == self.server_name:
            # Federation with ourselves would deadlock some flows and never makes sense.
            raise FederationError(0, None, "refusing to send a federation request to ourselves", destination)
        method = method.upper()
        uri = path + _encode_query(query)
        session = self._get_session()
        try:
            target = await self.discovery.resolve(destination, session)
            if target.tls_server_name is None:
                # aiohttp does not consult the resolver for IP literals: check them here.
                self.blocklist.check(target.connect_host)
        except (BlockedAddress, ValueError) as e:
            raise DestinationUnreachable(str(e), destination, reason=f"not allowed: {e}") from e
        headers = {"Host": target.host_header, "Accept": "application/json"}
        data: bytes | None = None
        if json_body is not None:
            data = encode_canonical_json(json_body, strict=strict_json)
            headers["Content-Type"] = "application/json"
        if authenticate:
            # The signed object's canonical JSON is the body's bytes with the other members around them.
            headers["Authorization"] = sign_encoded_request(
                method, uri, self.server_name, destination, data, self.signing_key
            )
        url = yarl.URL(f"https://{target.url_host}:{target.port}{uri}", encoded=True)
        total = timeout if timeout is not None else self._default_timeout
        # No rounding up to the next whole second (aiohttp's default above 5 s): a key fetch given 5 s
        # gets 5 s, not up to 6.
        client_timeout = aiohttp.ClientTimeout(total=total, ceil_threshold=total + 1)
        start = time.perf_counter()
        with self.tracing.client_span(method, destination, redact_path(uri), headers) as span:
            try:
                async with session.request(
                    method,
                    url,
                    data=data,
                    headers=headers,
                    timeout=client_timeout,
                    allow_redirects=False,
                    server_hostname=target.tls_server_name,
                ) as resp:
                    body = await read_capped(resp, self._max_response_bytes)
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                failure = unreachable(e, destination, total)
                self._log_outbound(destination, method, uri, None, start, failure.reason)
                set_status(span, None)
                raise failure from e
            set_status(span, status)
            self._log_outbound(destination, method, uri, status, start)
        if len(body) > self._max_response_bytes:
            raise FederationError(status, None, "response too large", destination)
        return _interpret(status, body, destination, strict_json)

    @asynccontextmanager
    async def stream(
        self,
        destination: str,
        path: str,
        query: QueryParams | None = None,
        *,
        timeout: float,
        authenticate: bool = True,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A signed GET whose answer is read by the caller, as a stream (media, which may be big): the
        response, whatever its status, is yielded with its body unread. The whole exchange, reading included,
        is bounded by ``timeout``. Raises ``DestinationUnreachable`` when no answer comes."""
        if destination == self.server_name:
            raise FederationError(0, None, "refusing to send a federation request to ourselves", destination)
        uri = path + _encode_query(query)
        session = self._get_session()
        try:
            target = await self.discovery.resolve(destination, session)
            if target.tls_server_name is None:
                self.blocklist.check(target.connect_host)
        except (BlockedAddress, ValueError) as e:
            raise DestinationUnreachable(str(e), destination, reason=f"not allowed: {e}") from e
        headers = {"Host": target.host_header}
        if authenticate:
            headers["Authorization"] = sign_request(
                "GET", uri, self.server_name, destination, None, self.signing_key
            )
        url = yarl.URL(f"https://{target.url_host}:{target.port}{uri}", encoded=True)
        client_timeout = aiohttp.ClientTimeout(total=timeout, ceil_threshold=timeout + 1)
        start = time.perf_counter()
        status: int | None = None
        try:
            async with session.get(
                url,
                headers=headers,
                timeout=client_timeout,
                allow_redirects=False,
                server_hostname=target.tls_server_name,
            ) as resp:
                status = resp.status
                yield resp
        except (aiohttp.ClientConnectionError, TimeoutError, OSError) as e:
            failure = unreachable(e, destination, timeout)
            self._log_outbound(destination, "GET", uri, status, start, failure.reason)
            raise failure from e
        self._log_outbound(destination, "GET", uri, status, start)

    # -- typed helpers for the endpoints the room layer reads from ------------------------------------

    async def get_event(self, destination: str, event_id: str) -> dict[str, Any]:
        """GET /v1/event: a single-PDU transaction ``{origin, origin_server_ts, pdus: [pdu]}``."""
        return await self._get_object(destination, f"/_matrix/federation/v1/event/{path_segment(event_id)}")

    async def get_state_ids(self, destination: str, room_id: str, event_id: str) -> dict[str, Any]:
        return await self._get_object(
            destination, f"/_matrix/federation/v1/state_ids/{path_segment(room_id)}", {"event_id": event_id}
        )

    async def get_state(self, destination: str, room_id: str, event_id: str) -> dict[str, Any]:
        return await self._get_object(
            destination, f"/_matrix/federation/v1/state/{path_segment(room_id)}", {"event_id": event_id}
        )

    async def get_event_auth(self, destination: str, room_id: str, event_id: str) -> dict[str, Any]:
        return await self._get_object(
            destination,
            f"/_matrix/federation/v1/event_auth/{path_segment(room_id)}/{path_segment(event_id)}",
        )

    async def backfill(
        self, destination: str, room_id: str, event_ids: Sequence[str], limit: int
    ) -> dict[str, Any]:
        return await self._get_object(
            destination,
            f"/_matrix/federation/v1/backfill/{path_segment(room_id)}",
            {"v": list(event_ids), "limit": limit},
        )

    async def get_missing_events(
        self,
        destination: str,
        room_id: str,
        *,
        earliest_events: Sequence[str],
        latest_events: Sequence[str],
        limit: int = 10,
        min_depth: int = 0,
    ) -> dict[str, Any]:
        body = {
            "earliest_events": list(earliest_events),
            "latest_events": list(latest_events),
            "limit": limit,
            "min_depth": min_depth,
        }
        return await self._object(
            "POST",
            destination,
            f"/_matrix/federation/v1/get_missing_events/{path_segment(room_id)}",
            body=body,
        )

    async def query_profile(self, destination: str, user_id: str, field: str | None = None) -> dict[str, Any]:
        query: dict[str, str] = {"user_id": user_id}
        if field is not None:
            query["field"] = field
        return await self._get_object(destination, "/_matrix/federation/v1/query/profile", query)

    async def query_directory(self, destination: str, room_alias: str) -> dict[str, Any]:
        return await self._get_object(
            destination, "/_matrix/federation/v1/query/directory", {"room_alias": room_alias}
        )

    async def timestamp_to_event(
        self, destination: str, room_id: str, ts: int, direction: str
    ) -> dict[str, Any]:
        if direction not in ("f", "b"):
            raise ValueError("direction must be 'f' or 'b'")
        return await self._get_object(
            destination,
            f"/_matrix/federation/v1/timestamp_to_event/{path_segment(room_id)}",
            {"ts": ts, "dir": direction},
        )

    async def make_join(
        self, destination: str, room_id: str, user_id: str, supported_versions: Sequence[str]
    ) -> dict[str, Any]:
        return await self._get_object(
            destination,
            f"/_matrix/federation/v1/make_join/{path_segment(room_id)}/{path_segment(user_id)}",
            {"ver": list(supported_versions)},
        )

    async def send_join_v2(
        self,
        destination: str,
        room_id: str,
        event_id: str,
        event: Mapping[str, Any],
        *,
        omit_members: bool = False,
    ) -> dict[str, Any]:
        query = {"omit_members": True} if omit_members else None
        return await self._object(
            "PUT",
            destination,
            f"/_matrix/federation/v2/send_join/{path_segment(room_id)}/{path_segment(event_id)}",
            query,
            body=dict(event),
        )

    async def make_leave(self, destination: str, room_id: str, user_id: str) -> dict[str, Any]:
        return await self._get_object(
            destination, f"/_matrix/federation/v1/make_leave/{path_segment(room_id)}/{path_segment(user_id)}"
        )

    async def send_leave_v2(
        self, destination: str, room_id: str, event_id: str, event: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._object(
            "PUT",
            destination,
            f"/_matrix/federation/v2/send_leave/{path_segment(room_id)}/{path_segment(event_id)}",
            body=dict(event),
        )

    async def make_knock(
        self, destination: str, room_id: str, user_id: str, supported_versions: Sequence[str]
    ) -> dict[str, Any]:
        return await self._get_object(
            destination,
            f"/_matrix/federation/v1/make_knock/{path_segment(room_id)}/{path_segment(user_id)}",
            {"ver": list(supported_versions)},
        )

    async def send_knock(
        self, destination: str, room_id: str, event_id: str, event: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._object(
            "PUT",
            destination,
            f"/_matrix/federation/v1/send_knock/{path_segment(room_id)}/{path_segment(event_id)}",
            body=dict(event),
        )

    async def hierarchy(self, destination: str, room_id: str, suggested_only: bool) -> dict[str, Any]:
        return await self._get_object(
            destination,
            f"/_matrix/federation/v1/hierarchy/{path_segment(room_id)}",
            {"suggested_only": "true" if suggested_only else "false"},
        )

    async def invite_v2(
        self,
        destination: str,
        room_id: str,
        event_id: str,
        *,
        room_version: str,
        event: Mapping[str, Any],
        invite_room_state: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        body = {
            "room_version": room_version,
            "event": dict(event),
            "invite_room_state": list(invite_room_state),
        }
        return await self._object(
            "PUT",
            destination,
            f"/_matrix/federation/v2/invite/{path_segment(room_id)}/{path_segment(event_id)}",
            body=body,
        )

    async def send_transaction(
        self,
        destination: str,
        txn_id: str,
        *,
        origin_server_ts: int,
        pdus: Sequence[Mapping[str, Any]] = (),
        edus: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        body = {
            "origin": self.server_name,
            "origin_server_ts": origin_server_ts,
            "pdus": [dict(p) for p in pdus],
            "edus": [dict(e) for e in edus],
        }
        return await self._object(
            "PUT", destination, f"/_matrix/federation/v1/send/{path_segment(txn_id)}", body=body
        )

    async def _get_object(
        self, destination: str, path: str, query: QueryParams | None = None
    ) -> dict[str, Any]:
        return await self._object("GET", destination, path, query)

    async def _object(
        self,
        method: str,
        destination: str,
        path: str,
        query: QueryParams | None = None,
        *,
        body: Any | None = None,
    ) -> dict[str, Any]:
        # Room versions 1-5 allow floats in events; callers that know the room version can use
        # ``request(strict_json=False)`` directly. The helpers parse leniently and leave per-event
        # canonical-JSON checks to event validation, which knows the room version.
        result = await self.request(method, destination, path, query, body, strict_json=False)
        if not isinstance(result, dict):
            raise FederationError(200, None, "response is not a JSON object", destination)
        return result


def _interpret(status: int, body: bytes, destination: str, strict_json: bool) -> Any:
    if 200 <= status < 300:
        try:
            return parse_json(body, strict=strict_json)
        except CanonicalJsonError as e:
            raise FederationError(status, None, f"invalid JSON in response: {e.message}", destination) from e
    errcode: str | None = None
    message = body[:500].decode("utf-8", "replace")
    try:
        parsed = parse_json(body, strict=False)
    except CanonicalJsonError:
        parsed = None
    if isinstance(parsed, dict):
        if isinstance(parsed.get("errcode"), str):
            errcode = parsed["errcode"]
        if isinstance(parsed.get("error"), str):
            message = parsed["error"]
    raise FederationError(status, errcode, message, destination)
