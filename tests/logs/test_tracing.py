"""OpenTelemetry across federation, with a real OTLP/HTTP receiver (an aiohttp server decoding
opentelemetry-proto): a remote join from B is one trace holding spans of both servers when they list each
other as peers; a traceparent from a server not listed only becomes a link; a malformed one is ignored."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from ranvier.app import Homeserver
from tests.logs.servers import start
from tests.ports import free_port
from tests.scenarios.servers import Client

trace_service_pb2 = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")


@dataclass
class Span:
    server: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent: str
    links: list[str]
    attributes: dict[str, object] = field(default_factory=dict)


class Receiver:
    """An OTLP/HTTP (protobuf) trace receiver on loopback."""

    def __init__(self) -> None:
        self.spans: list[Span] = []

    async def handle(self, request: web.Request) -> web.Response:
        message = trace_service_pb2.ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for resource_spans in message.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    attributes: dict[str, object] = {}
                    for a in s.attributes:
                        v = a.value
                        attributes[a.key] = v.string_value if v.HasField("string_value") else v.int_value
                    self.spans.append(
                        Span(
                            resource["ranvier.server_name"],
                            s.name,
                            s.kind,
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                            [link.trace_id.hex() for link in s.links],
                            attributes,
                        )
                    )
        return web.Response(body=trace_service_pb2.ExportTraceServiceResponse().SerializeToString())


@pytest.fixture
async def receiver(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Receiver]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", r.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    yield r
    await runner.cleanup()


async def flush(*servers: Homeserver) -> None:
    for hs in servers:
        await asyncio.to_thread(hs.tracing.force_flush)


async def test_a_remote_join_is_one_trace_across_two_peers(
    tmp_path: Path, receiver: Receiver, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    peers = {"tracing": {"federation_peers": ["127.0.0.1:*"]}}
    a = await start(tmp_path / "a", **peers)
    servers.append(a)
    b = await start(tmp_path / "b", **peers)
    servers.append(b)
    assert a.tracing.enabled and b.tracing.enabled
    alice = await Client.register(session, a, "alice")
    room = await alice.create_room()
    bob = await Client.register(session, b, "bob")
    await bob.ok("POST", f"/join/{room}", {}, server_name=a.server_name)
    await flush(a, b)

    (join,) = [
        s
        for s in receiver.spans
        if s.server == b.server_name and s.name.startswith("POST /_matrix/client/v3/join/")
    ]
    assert join.attributes["http.request.method"] == "POST"
    assert join.attributes["http.response.status_code"] == 200
    assert join.attributes["http.route"] == "/_matrix/client/v3/join/{room}"
    trace = [s for s in receiver.spans if s.trace_id == join.trace_id]
    by_id = {s.span_id: s for s in trace}
    # B's outbound make_join is a client span under the join, and A served it as a child of that span.
    make_join_client = [
        s for s in trace if s.server == b.server_name and "make_join" in s.name and s.kind == 3
    ]
    assert make_join_client
    served = [s for s in trace if s.server == a.server_name and "make_join" in s.name]
    assert [s.name for s in served] == ["GET /_matrix/federation/v1/make_join/{room}/{user}"]
    assert served[0].kind == 2  # SERVER
    assert served and all(by_id[s.parent].server == b.server_name for s in served)
    assert any(s.server == a.server_name and "send_join" in s.name for s in trace)


async def test_untrusted_and_malformed_traceparent(
    tmp_path: Path, receiver: Receiver, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start(tmp_path / "a", tracing={"federation_peers": ["trusted.example"]})
    servers.append(a)
    url = f"https://127.0.0.1:{int(a.server_name.rsplit(':', 1)[1])}/_matrix/federation/v1/version"
    remote_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with session.get(
        url, ssl=False, headers={"traceparent": f"00-{remote_trace}-00f067aa0ba902b7-01"}
    ) as resp:
        assert resp.status == 200
    async with session.get(url, ssl=False, headers={"traceparent": "00-zzzz-not-a-traceparent"}) as resp:
        assert resp.status == 200
    await flush(a)
    linked, malformed = [s for s in receiver.spans if s.name == "GET /_matrix/federation/v1/version"]
    assert linked.trace_id != remote_trace and linked.parent == ""  # a new root...
    assert linked.links == [remote_trace]  # ...keeping the remote context as a link
    assert malformed.parent == "" and malformed.links == []


def test_without_otel_environment_the_sdk_is_not_imported(tmp_path: Path) -> None:
    script = (
        "import asyncio, sys\n"
        "from tests.logs.servers import start\n"
        "async def main():\n"
        f"    hs = await start(__import__('pathlib').Path({str(tmp_path)!r}))\n"
        "    assert not hs.tracing.enabled\n"
        "    await hs.stop()\n"
        "asyncio.run(main())\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "assert not loaded, loaded\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
