"""The routing table (ranvier/workers/routing.py) and what is made from it agree: docs/workers.md's table, the
nginx example and the generated layouts' nginx files route every request the way ``role_for`` does. The nginx
maps are read back from the files and evaluated here (as nginx does: the first matching regex of the map), on
a concrete request for every route a Ranvier process registers.

That each role's process really serves what the table sends it is checked against running processes in
test_deployment.py (test_every_registered_route_is_served_where_the_table_sends_it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ranvier.workers.layout import (
    DOCS_TABLE_BEGIN,
    DOCS_TABLE_END,
    Layout,
    example_layout,
    layout_for_workers,
    render_examples,
)
from ranvier.workers.routing import (
    ROUTES,
    HttpRole,
    Listener,
    Route,
    instance_role,
    parse_nginx_maps,
    render_markdown_table,
    role_for,
    upstream_name,
)

from .deployment import RegisteredRoute, registered_routes

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> list[RegisteredRoute]:
    import asyncio

    return asyncio.run(registered_routes(tmp_path_factory.mktemp("routes")))


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("GET", "/_matrix/client/v3/sync", "client_reader"),
        ("GET", "/_matrix/client/r0/sync", "client_reader"),
        ("POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", "client_reader"),
        ("GET", "/_matrix/client/v3/rooms/!r:example.org/messages", "client_reader"),
        ("GET", "/_matrix/client/v3/rooms/!r:example.org/event/$e", "client_reader"),
        ("GET", "/_matrix/client/v3/rooms/!r:example.org/context/$e", "client_reader"),
        ("GET", "/_matrix/client/v3/rooms/!r:example.org/members", "client_reader"),
        ("GET", "/_matrix/client/v3/rooms/!r:example.org/state", "client_reader"),
        ("GET", "/_matrix/client/v3/rooms/!r:example.org/state/m.room.name/", "client_reader"),
        ("GET", "/_matrix/client/v1/rooms/!r:example.org/relations/$e/m.thread", "client_reader"),
        ("PUT", "/_matrix/client/v3/rooms/!r:example.org/send/m.room.message/t1", "client_reader"),
        ("PUT", "/_matrix/client/v3/rooms/!r:example.org/state/m.room.name/", "client_reader"),
        ("POST", "/_matrix/client/v3/rooms/!r:example.org/join", "client_reader"),
        ("POST", "/_matrix/client/v3/join/#a:example.org", "client_reader"),
        # Typing and presence have one owner (in-memory state): main.
        ("PUT", "/_matrix/client/v3/rooms/!r:example.org/typing/@u:example.org", "main"),
        ("PUT", "/_matrix/client/v3/presence/@u:example.org/status", "main"),
        # Not a room read: sending a receipt, the room's aliases are read-only here.
        ("POST", "/_matrix/client/v3/rooms/!r:example.org/receipt/m.read/$e", "main"),
        ("POST", "/_matrix/client/v3/register", "main"),
        ("POST", "/_matrix/client/v3/login", "main"),
        ("POST", "/_matrix/client/v3/createRoom", "main"),
        ("POST", "/_matrix/client/v3/keys/upload", "main"),
        ("GET", "/_synapse/admin/v2/users/@u:example.org", "main"),
        ("GET", "/health", "main"),
        ("PUT", "/_matrix/federation/v1/send/123", "federation_inbound"),
        ("GET", "/_matrix/federation/v1/make_join/!r:example.org/@u:other", "federation_inbound"),
        ("GET", "/_matrix/key/v2/server", "federation_inbound"),
        ("POST", "/_matrix/media/v3/upload", "media"),
        ("GET", "/_matrix/client/v1/media/download/example.org/abc", "media"),
        ("GET", "/_matrix/client/v1/media/thumbnail/example.org/abc", "media"),
    ],
)
def test_role_for(method: str, path: str, role: str) -> None:
    assert role_for(method, path) == role


def test_a_role_without_instances_falls_back_to_main() -> None:
    assert instance_role("media", {"main": ["a"], "client_reader": ["b"]}) == "main"
    assert instance_role("client_reader", {"main": ["a"], "client_reader": ["b"]}) == "client_reader"
    assert instance_role("client_reader", {"main": ["a"], "client_reader": []}) == "main"


def test_patterns_are_checked() -> None:
    with pytest.raises(ValueError, match="anchoring"):
        Route("^/x", "main", "why")
    with pytest.raises(ValueError, match="quotes"):
        Route('/x"', "main", "why")


def test_every_registered_route_has_a_role_and_the_table_covers_the_reads(
    routes: list[RegisteredRoute],
) -> None:
    """The issue's reads go to readers, federation to inbound, media to media, whatever the version prefix."""
    assert len(routes) > 300  # the whole client, federation and key API
    by_role: dict[str, set[str]] = {}
    for route in routes:
        role = role_for(route.method, route.sample_path)
        by_role.setdefault(role, set()).add(route.template)
        if route.listener == "federation" and route.template != "/health":
            assert role == "federation_inbound", route
        if route.listener == "client":
            assert role != "federation_inbound", route
    reader = by_role["client_reader"]
    reads = ("messages", "event/{event}", "context/{event}", "members", "state", "joined_members")
    for suffix in ("/sync", *(f"/rooms/{{room}}/{read}" for read in reads)):
        for version in ("r0", "v3"):
            assert f"/_matrix/client/{version}{suffix}" in reader, (version, suffix)
    assert {t for t in by_role["media"] if "/download/" in t} >= {
        "/_matrix/media/v3/download/{server_name}/{media_id}",
        "/_matrix/client/v1/media/download/{server_name}/{media_id}",
    }


def test_docs_table_is_the_rendered_table() -> None:
    docs = (REPO / "docs" / "workers.md").read_text()
    generated = docs[docs.index(DOCS_TABLE_BEGIN) + len(DOCS_TABLE_BEGIN) : docs.index(DOCS_TABLE_END)]
    assert generated.strip() == render_markdown_table().strip(), (
        "regenerate: python3 -m ranvier.workers.layout"
    )
    # Every route appears in the docs, in order.
    rows = [line for line in generated.strip().splitlines()[2:]]
    assert len(rows) == len(ROUTES) + 1
    for row, route in zip(rows, ROUTES, strict=False):
        assert f"`^{route.pattern.replace('|', chr(92) + '|')}`" in row and f"| {route.role} |" in row


def test_contrib_examples_are_generated() -> None:
    for relative, text in render_examples().items():
        path = REPO / relative
        assert path.exists(), relative
        assert path.read_text() == text, (
            f"{relative} differs: regenerate with python3 -m ranvier.workers.layout"
        )


def _nginx_route(maps: dict[str, list[tuple[str, str, str]]], variable: str, method: str, path: str) -> str:
    """What nginx's map would pick: the first regex matching "METHOD PATH", else the default."""
    for methods, pattern, upstream in maps[variable]:
        if methods == "default":
            return upstream
        if re.match(f"^{methods} {pattern}", f"{method} {path}"):
            return upstream
    raise AssertionError(f"map {variable} has no default")


def _check_nginx(text: str, layout: Layout, routes: list[RegisteredRoute]) -> None:
    maps = parse_nginx_maps(text)
    assert set(maps) == {"ranvier_client_upstream", "ranvier_federation_upstream"}
    client_ups, federation_ups = layout.client_upstreams(), layout.federation_upstreams()
    # Every upstream a map names is defined, with the addresses of the layout's listeners.
    pairs: list[tuple[Listener, dict[HttpRole, list[str]]]] = [
        ("client", client_ups),
        ("federation", federation_ups),
    ]
    for listener, ups in pairs:
        for role, addresses in ups.items():
            block = re.search(r"upstream " + upstream_name(role, listener) + r" \{(.*?)\}", text, re.S)
            assert block is not None, (role, listener)
            assert re.findall(r"server (\S+);", block.group(1)) == list(addresses)
    for route in routes:
        if route.template == "/health":
            continue
        variable = f"ranvier_{route.listener}_upstream"
        expected_ups = client_ups if route.listener == "client" else federation_ups
        expected = upstream_name(
            instance_role(role_for(route.method, route.sample_path), expected_ups), route.listener
        )
        assert _nginx_route(maps, variable, route.method, route.sample_path) == expected, route


def test_nginx_example_routes_every_registered_route_as_the_table(routes: list[RegisteredRoute]) -> None:
    text = (REPO / "contrib" / "nginx" / "ranvier-workers.conf").read_text()
    layout = example_layout()
    _check_nginx(text, layout, routes)
    # The example has readers, so the reads reach them (not main through a fallback).
    maps = parse_nginx_maps(text)
    assert _nginx_route(maps, "ranvier_client_upstream", "GET", "/_matrix/client/v3/sync") == (
        "ranvier_client_reader_client"
    )
    assert _nginx_route(maps, "ranvier_federation_upstream", "PUT", "/_matrix/federation/v1/send/1") == (
        "ranvier_federation_inbound_federation"
    )


@pytest.mark.parametrize("workers", [0, 1, 3, 9, 14])
def test_generated_nginx_routes_every_registered_route_as_the_table(
    workers: int, routes: list[RegisteredRoute]
) -> None:
    layout = layout_for_workers(
        workers,
        server_name="example.org",
        public_client_port=8008,
        public_federation_port=8448,
        internal_port_base=20000,
    )
    _check_nginx(layout.nginx("/c.crt", "/c.key"), layout, routes)
