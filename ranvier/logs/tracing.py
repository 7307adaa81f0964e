"""OpenTelemetry traces, configured by the standard ``OTEL_*`` environment variables.

Tracing is on when the environment asks for it: ``OTEL_TRACES_EXPORTER`` set to an exporter (``otlp``,
``console``), or an OTLP endpoint set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``..._TRACES_ENDPOINT``), and not
``OTEL_SDK_DISABLED=true``. Otherwise the SDK is never imported and every hook here is a no-op. The SDK reads
the rest itself: ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` (and
``_ARG``), the OTLP endpoint, headers and timeout; ``OTEL_EXPORTER_OTLP_PROTOCOL`` picks ``http/protobuf``
(the default here) or ``grpc`` (needs opentelemetry-exporter-otlp-proto-grpc).

Each homeserver has its own tracer provider (several servers can run in one process, as in the tests).

W3C trace context crosses federation only with the servers listed in ``tracing.federation_peers`` (globs
over server names; none by default): ``traceparent`` is sent on requests to them and honoured on requests
claiming to come from them. From anyone else an incoming ``traceparent`` starts no trace of ours: the
request gets a new root span with the remote context kept as a span link. A malformed ``traceparent`` is
ignored. The peer check on incoming requests uses the origin the X-Matrix header claims, before the handler
verifies its signature (the span starts first); a forged claim is refused by the handler (401), and at worst
parents that one span.
"""

from __future__ import annotations

import fnmatch
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import ranvier

from .context import current_request_id

TRACEPARENT = "traceparent"


class TracingError(Exception):
    """The environment asks for an exporter that cannot be set up (named in the message)."""


def tracing_requested(env: Mapping[str, str] = os.environ) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER")
    if exporter is not None:
        return exporter.strip().lower() not in ("", "none")
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _exporters(env: Mapping[str, str]) -> list[Any]:
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    out: list[Any] = []
    for name in names:
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            out.append(ConsoleSpanExporter())
        elif name == "otlp":
            protocol = (
                env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf"
            )
            if protocol == "http/protobuf":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                out.append(OTLPSpanExporter())
            elif protocol == "grpc":
                try:
                    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                        OTLPSpanExporter as GrpcExporter,
                    )
                except ImportError as e:
                    raise TracingError(
                        "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc"
                    ) from e
                out.append(GrpcExporter())
            else:
                raise TracingError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use http/protobuf or grpc")
        elif name != "none":
            raise TracingError(f"OTEL_TRACES_EXPORTER={name!r}: use otlp, console or none")
    return out


def check_environment(env: Mapping[str, str] = os.environ) -> None:
    """Refuse (``TracingError``, naming the variable or the missing package) an environment that asks for
    traces this installation cannot produce; the CLI checks it before starting (exit code 2)."""
    if not tracing_requested(env):
        return
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as e:
        raise TracingError(
            "the OTEL_* environment asks for traces but the OpenTelemetry SDK is not installed "
            "(pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http)"
        ) from e
    try:
        _exporters(env)
    except ImportError as e:
        raise TracingError(f"OTEL_TRACES_EXPORTER: the exporter is not installed ({e.name})") from e


def claimed_origin(authorization_headers: list[str]) -> str | None:
    """The ``origin`` an X-Matrix Authorization header claims (unverified), for the peer check."""
    for header in authorization_headers:
        if header[:8].lower() != "x-matrix":
            continue
        for part in header[8:].split(","):
            key, _, value = part.strip().partition("=")
            if key.strip().lower() == "origin":
                return value.strip().strip('"') or None
    return None


class Tracing:
    def __init__(
        self, server_name: str, federation_peers: list[str], env: Mapping[str, str] = os.environ
    ) -> None:
        self.server_name = server_name
        self.federation_peers = list(federation_peers)
        self._tracer: Any = None
        self._provider: Any = None
        if tracing_requested(env):
            self._setup(env)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def _setup(self, env: Mapping[str, str]) -> None:
        check_environment(env)
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        attributes: dict[str, Any] = {"ranvier.server_name": self.server_name}
        if not env.get("OTEL_SERVICE_NAME"):
            attributes[SERVICE_NAME] = "ranvier"
        provider = TracerProvider(
            resource=Resource.create(attributes)
        )  # the sampler from OTEL_TRACES_SAMPLER
        for exporter in _exporters(env):
            provider.add_span_processor(BatchSpanProcessor(exporter))
        self._provider = provider
        self._tracer = provider.get_tracer("ranvier", ranvier.__version__)

    def is_peer(self, server_name: str | None) -> bool:
        return server_name is not None and any(
            fnmatch.fnmatchcase(server_name, glob) for glob in self.federation_peers
        )

    @contextmanager
    def server_span(
        self,
        method: str,
        route: str,
        path: str,
        headers: Mapping[str, str],
        origin_claim: str | None,
        listener: str,
    ) -> Iterator[Any]:
        """The span of one incoming request (HTTP semantic conventions). Yields None when tracing is off."""
        if self._tracer is None:
            yield None
            return
        from opentelemetry import context as otel_context
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        parent = otel_context.Context()  # a new root unless a peer's context is honoured
        links: list[Any] = []
        if TRACEPARENT in headers:
            carrier = {TRACEPARENT: headers[TRACEPARENT]}
            if "tracestate" in headers:
                carrier["tracestate"] = headers["tracestate"]
            remote = TraceContextTextMapPropagator().extract(carrier)  # malformed: an empty context
            remote_span = trace.get_current_span(remote).get_span_context()
            if remote_span.is_valid:
                if listener == "federation" and self.is_peer(origin_claim):
                    parent = remote
                else:
                    links.append(trace.Link(remote_span, {"ranvier.untrusted_remote_parent": True}))
        with self._tracer.start_as_current_span(
            f"{method} {route}",
            context=parent,
            kind=trace.SpanKind.SERVER,
            links=links,
            attributes={
                "http.request.method": method,
                "http.route": route,
                "url.path": path,
                "ranvier.listener": listener,
            },
        ) as span:
            yield span

    @contextmanager
    def client_span(
        self, method: str, destination: str, path: str, headers: MutableMapping[str, str]
    ) -> Iterator[Any]:
        """The span of one outgoing federation request; ``traceparent`` goes into ``headers`` (peers only)."""
        if self._tracer is None:
            yield None
            return
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        with self._tracer.start_as_current_span(
            f"{method} {path.partition('?')[0]}",
            kind=trace.SpanKind.CLIENT,
            attributes={"http.request.method": method, "server.address": destination, "url.path": path},
        ) as span:
            if self.is_peer(destination):
                TraceContextTextMapPropagator().inject(headers)
            yield span

    @contextmanager
    def internal_span(
        self,
        name: str,
        attributes: Mapping[str, Any] | None = None,
        parent: Any = None,
        links: list[Any] | None = None,
    ) -> Iterator[Any]:
        """A span for work inside the server (persisting, a PDU's checks, state resolution, a /sync wait),
        child of the current span, or of ``parent`` (a context from ``capture``). None when tracing is off."""
        if self._tracer is None:
            yield None
            return
        with self._tracer.start_as_current_span(
            name, context=parent, attributes=dict(attributes or {}), links=links or ()
        ) as span:
            yield span

    def capture(self) -> Any:
        """The current trace context, to carry work on in another task (None when tracing is off)."""
        if self._tracer is None:
            return None
        from opentelemetry import context as otel_context

        return otel_context.get_current()

    @contextmanager
    def resumed(self, captured: Any) -> Iterator[None]:
        """Run the block in a context from ``capture`` (a no-op for None)."""
        if captured is None or self._tracer is None:
            yield
            return
        from opentelemetry import context as otel_context

        token = otel_context.attach(captured)
        try:
            yield
        finally:
            otel_context.detach(token)

    def force_flush(self) -> None:
        """Export what is buffered (blocking: call it in a worker thread from the event loop)."""
        if self._provider is not None:
            self._provider.force_flush()

    def shutdown(self) -> None:
        """Flush and stop (blocking: call it in a worker thread)."""
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = None
            self._tracer = None


def set_status(span: Any, status: int | None) -> None:
    """The response status on a server or client span (5xx, or no answer, marks it as an error)."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    if status is not None:
        span.set_attribute("http.response.status_code", status)
    if status is None or status >= 500:
        span.set_status(Status(StatusCode.ERROR))


@dataclass(frozen=True)
class Origin:
    """Where an event entered this server: the request id and trace context of the request that persisted
    it (a client's send, a federation /send), for work on it later in other tasks."""

    request_id: str
    trace_context: Any


class EventOrigins:
    """Event id -> its ``Origin``, for the newest ``capacity`` events persisted (a bound on memory).

    The federation sender runs each transaction as the request that created its first event (its log lines
    carry that request id, its client span joins that trace), and /sync marks the delivery of an event in
    the event's trace. An event persisted outside any request has no entry."""

    def __init__(self, tracing: Tracing, capacity: int = 10_000) -> None:
        self._tracing = tracing
        self._capacity = capacity
        self._origins: OrderedDict[str, Origin] = OrderedDict()

    def remember(self, event_ids: Iterable[str]) -> None:
        request_id = current_request_id.get()
        captured = self._tracing.capture()
        if captured is None and request_id == "-":
            return
        origin = Origin(request_id, captured)
        for event_id in event_ids:
            self._origins[event_id] = origin
            self._origins.move_to_end(event_id)
        while len(self._origins) > self._capacity:
            self._origins.popitem(last=False)

    def get(self, event_id: str) -> Origin | None:
        return self._origins.get(event_id)

    def first_of(self, event_ids: Iterable[str]) -> Origin | None:
        found = self.all_of(event_ids)
        return found[0] if found else None

    def all_of(self, event_ids: Iterable[str]) -> list[Origin]:
        """The distinct origins of these events, in the order of the events."""
        out: list[Origin] = []
        for event_id in event_ids:
            origin = self._origins.get(event_id)
            if origin is not None and origin not in out:
                out.append(origin)
        return out

    @contextmanager
    def span(self, name: str, destination: str, txn_id: str) -> Iterator[Any]:
        with self._tracing.internal_span(
            name, {"server.address": destination, "ranvier.txn_id": txn_id}
        ) as s:
            yield s

    def current_link(self) -> Any:
        """A link to the current span (None when tracing is off or no span is current)."""
        if not self._tracing.enabled:
            return None
        from opentelemetry import trace

        here = trace.get_current_span().get_span_context()
        return trace.Link(here) if here.is_valid else None

    def mark_carried(self, origin: Origin, link: Any, destination: str, txn_id: str) -> None:
        """A span in ``origin``'s trace: a transaction of another trace (``link``) carried its event."""
        if origin.trace_context is None or not self._tracing.enabled:
            return
        attributes = {"server.address": destination, "ranvier.txn_id": txn_id}
        links = [link] if link is not None else []
        with self._tracing.internal_span(
            "federation transaction carried event", attributes, parent=origin.trace_context, links=links
        ):
            pass

    @contextmanager
    def running_as(self, origin: Origin | None) -> Iterator[None]:
        """Run the block as the request ``origin`` came from: its request id on every log record, its
        trace as the parent of spans. Meant for a task of its own (the context is changed, then restored)."""
        if origin is None:
            yield
            return
        token = current_request_id.set(origin.request_id)
        try:
            with self._tracing.resumed(origin.trace_context):
                yield
        finally:
            current_request_id.reset(token)

    def mark_delivered(self, event_ids: Iterable[str], user_id: str) -> None:
        """A short span in each event's own trace: this /sync delivered it (linked to the /sync's span)."""
        if not self._tracing.enabled:
            return
        from opentelemetry import trace

        here = trace.get_current_span().get_span_context()
        for event_id in event_ids:
            origin = self._origins.get(event_id)
            if origin is None or origin.trace_context is None:
                continue
            links = [trace.Link(here)] if here.is_valid else []
            attributes = {"ranvier.event_id": event_id, "ranvier.user_id": user_id}
            with self._tracing.internal_span(
                "sync delivered event", attributes, parent=origin.trace_context, links=links
            ):
                pass
